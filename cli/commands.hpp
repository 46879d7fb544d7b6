// The subcommands of the `ringlinger` program and what they share: flag conversion with clear
// errors (exit code 2) and the drain flags that map onto ringlinger::Config.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "flags.hpp"
#include "ringlinger/config.hpp"

namespace ringlinger::tools {

// A bad flag value found after parsing; main() prints it and exits with 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Converts a flag's text, or throws UsageError naming the flag.
std::uint64_t duration_flag_ms(std::string_view flag, const std::string& text);
std::uint64_t duration_flag_us(std::string_view flag, const std::string& text);
std::uint64_t bytes_flag(std::string_view flag, const std::string& text);
// The same, at most `max` bytes; `why` says what bounds it ("in memory").
std::uint64_t bytes_flag(std::string_view flag, const std::string& text, std::uint64_t max,
                         std::string_view why);

// Bodies the program builds whole in memory, once: serve's response (naive and blocking always,
// uring and epoll without --sendfile) and the request body of client, bench and demo. A larger
// value is a usage error, not a std::bad_alloc once the command has started.
inline constexpr std::uint64_t kMaxBodyInMemory = std::uint64_t{256} << 20;
// serve --sendfile writes the body once to a file in $TMPDIR (or a memfd).
inline constexpr std::uint64_t kMaxBodyInFile = std::uint64_t{16} << 30;
// serve's --response-bytes (also checked by bench and demo, which start serve).
std::uint64_t response_bytes_flag(const std::string& text, bool sendfile);
// --body-bytes of client, bench and demo.
std::uint64_t request_body_flag(const std::string& text);

// The most connections client, bench and demo may be asked for: beyond any run's patience.
inline constexpr std::uint64_t kMaxConnections = 1'000'000'000'000;

// Checks a whole-number flag as typed: digits only, no leading zero, from `min` to `max`. Every
// whole-number flag has one: without it CLI11 takes "-1" for an unsigned 64-bit flag as 2^64-1,
// and "010" as octal (8). The message names the value and the range; CLI11 puts the flag before
// it, and `why`, when given, says where the range comes from.
FlagCheck whole_number(std::uint64_t min, std::uint64_t max, std::string_view why = {});

// A value as a flag would spell it, for default values: 5000 -> "5s", 2 -> "2ms", 2000 us ->
// "2ms", 16 MiB -> "16MiB". Each round-trips through the flag's parser.
std::string duration_flag_text_ms(std::uint64_t milliseconds);
std::string duration_flag_text_us(std::uint64_t microseconds);
std::string bytes_flag_text(std::uint64_t bytes);

// The drain and timeout flags of `serve`, `proxy` and `bench`, as typed. Their defaults are
// Config{}'s, spelled as flags: the library's defaults are written in one place only.
struct DrainFlags {
  std::string drain_idle_timeout = duration_flag_text_ms(Config{}.drain_idle_timeout_ms);
  std::string drain_timeout = duration_flag_text_ms(Config{}.drain_timeout_ms);
  std::string drain_max_bytes = bytes_flag_text(Config{}.drain_max_bytes);
  std::string send_timeout = duration_flag_text_ms(Config{}.send_timeout_ms);
  std::string orphan_timeout = duration_flag_text_ms(Config{}.orphan_timeout_ms);
  std::string on_timeout{to_string(Config{}.on_timeout)};
  std::string shutdown{to_string(Config{}.shutdown_mode)};
  std::uint32_t max_connections = Config{}.max_connections;
  std::string batch_wait = duration_flag_text_us(Config{}.batch_wait_us);
};
void add_drain_flags(CommandFlags command, DrainFlags& flags);
// The Config these flags describe; throws UsageError naming the flag for a bad value.
Config to_config(const DrainFlags& flags);

// A subcommand: its CLI11 node and what to run when it was chosen (returns the exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};
Command add_serve_command(CLI::App& program);
Command add_client_command(CLI::App& program);
Command add_demo_command(CLI::App& program);
Command add_probe_command(CLI::App& program);
Command add_bench_command(CLI::App& program);
Command add_proxy_command(CLI::App& program);
// `wrap -- COMMAND`: execs COMMAND with libringlinger-preload.so; returns only when it cannot.
Command add_wrap_command(CLI::App& program);

}  // namespace ringlinger::tools
