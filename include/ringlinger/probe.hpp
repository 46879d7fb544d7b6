// What this machine's kernel offers ringlinger: whether io_uring can be used (and if not, why),
// the setup flags, features and opcodes the manager relies on.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ringlinger {

// The result of probe_io_uring().
struct IoUringSupport {
  // io_uring_setup() worked.
  bool available = false;
  // When not: the errno of io_uring_setup() and an explanation (sysctl kernel.io_uring_disabled,
  // seccomp filter, kernel without io_uring, memory limit).
  int setup_error = 0;
  std::string reason;
  // Setup flags accepted by the kernel, by name ("SUBMIT_ALL", "DEFER_TASKRUN", ...), each with
  // whether it was accepted.
  std::vector<std::pair<std::string, bool>> setup_flags;
  // Features reported by the kernel ("NODROP", "EXT_ARG", "MIN_TIMEOUT", ...).
  std::vector<std::pair<std::string, bool>> features;
  // Opcodes ringlinger submits ("ACCEPT", "RECV", "SEND", "SHUTDOWN", "CLOSE", "ASYNC_CANCEL",
  // ...), each with whether the kernel supports it.
  std::vector<std::pair<std::string, bool>> opcodes;
  // Whether a ring of provided buffers can be registered (IORING_REGISTER_PBUF_RING, 5.19+).
  bool provided_buffer_ring = false;
  // Whether a multishot receive stops at a total byte limit (6.x; 6.1 refuses one): the drain is
  // then one receive per connection, its byte cap exact. Without it, one receive per part.
  bool multishot_drain = false;
  // Everything the io_uring backend needs is there.
  bool sufficient = false;
};

// Sets up a small ring, asks the kernel what it supports, and tears it down.
IoUringSupport probe_io_uring();

// Whether the io_uring backend cannot run without the feature or opcode of this name (one of
// IoUringSupport::features or ::opcodes, e.g. "NODROP", "RECV"): without every one of them, and
// a provided buffer ring, probe_io_uring() reports the support not sufficient. False for any
// other name.
bool io_uring_requires(std::string_view name) noexcept;

}  // namespace ringlinger
