// How `ringlinger wrap` talks to libringlinger-preload.so: environment variables, set by wrap
// before it execs the command, read once by the preload library at start-up. The names live here
// only; both sides include this file. Every value is a decimal whole number unless said otherwise;
// a variable not set means the default (Config{}'s, or the one given here).
#pragma once

#include <cstdint>

namespace ringlinger::wrap_env {

// The graceful close, as Config's fields of the same names (milliseconds, bytes).
inline constexpr const char* kDrainIdleTimeoutMs = "RINGLINGER_WRAP_DRAIN_IDLE_TIMEOUT_MS";
inline constexpr const char* kDrainTimeoutMs = "RINGLINGER_WRAP_DRAIN_TIMEOUT_MS";
inline constexpr const char* kDrainMaxBytes = "RINGLINGER_WRAP_DRAIN_MAX_BYTES";
inline constexpr const char* kSendTimeoutMs = "RINGLINGER_WRAP_SEND_TIMEOUT_MS";
// The most sockets lingering at once; a close beyond it is a plain close.
inline constexpr const char* kMaxLingering = "RINGLINGER_WRAP_MAX_LINGERING";
inline constexpr std::uint32_t kDefaultMaxLingering = 1024;
// How long process exit waits for lingering sockets (then they are reset).
inline constexpr const char* kExitGraceMs = "RINGLINGER_WRAP_EXIT_GRACE_MS";
inline constexpr std::uint32_t kDefaultExitGraceMs = 5'000;
// A file (path) the counters are written to as JSON at exit, by the process wrap started; any
// other process that handed off a socket writes PATH.PID.
inline constexpr const char* kJsonPath = "RINGLINGER_WRAP_JSON";
// "1": no summary line on stderr at exit.
inline constexpr const char* kQuiet = "RINGLINGER_WRAP_QUIET";
// The pid of the process wrap started (exec keeps it): its summary is printed even when it
// handed nothing off; other processes (children) print one only when they did.
inline constexpr const char* kMainPid = "RINGLINGER_WRAP_PID";

}  // namespace ringlinger::wrap_env
