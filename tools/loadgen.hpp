// The load generator: many concurrent HTTP/1.1 clients on one epoll loop, each of which sends a
// request head plus an optional body the server is not expected to read, starts reading after a
// delay, and verifies the response: status 200, the expected Content-Length, every payload byte,
// and then a clean EOF (recv == 0). Anything else is a failure with its reason. Run it in its own
// process: it holds up to `concurrency` fds.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

// Why a connection did not deliver the whole response followed by a clean EOF.
enum class Failure : std::uint8_t {
  reset,          // ECONNRESET (or another error) while reading: the server's close was a reset
  short_read,     // EOF before the whole response arrived
  bad_response,   // not "200", wrong Content-Length, malformed head, or a payload byte differs
  extra_bytes,    // more bytes than the response before EOF
  connect_error,  // connect() failed (refused, no ports, timeout in SYN)
  timeout,        // no EOF within timeout_ms of connecting
};
inline constexpr std::size_t kFailureCount = 6;
std::string_view to_string(Failure failure) noexcept;

struct LoadOptions {
  SocketAddress target;
  // Local addresses to bind before connecting, used round robin (each has its own 28k ephemeral
  // ports); empty: the kernel picks.
  std::vector<SocketAddress> sources;
  std::uint64_t connections = 1000;    // total connections to make
  std::uint32_t concurrency = 100;     // at most this many open at once
  std::uint64_t response_bytes = 16384;  // expected Content-Length (payload bytes)
  std::uint64_t body_bytes = 0;        // request body sent after the head
  std::uint32_t read_delay_ms = 0;     // start reading this long after connect completed
  std::uint32_t timeout_ms = 30'000;   // per connection, from the start of connect
  // Stop starting new connections after this long (0: no limit); those in flight finish.
  std::uint32_t duration_ms = 0;
  // Called about once a second with the result so far (e.g. for a progress line).
  std::function<void(const struct LoadResult&)> progress;
};

struct LoadResult {
  std::uint64_t started = 0;   // connections attempted
  std::uint64_t complete = 0;  // exact bytes AND clean EOF
  std::array<std::uint64_t, kFailureCount> failures{};
  std::uint64_t payload_bytes_expected = 0;  // response_bytes x finished connections
  std::uint64_t payload_bytes_received = 0;  // correct payload bytes received, over all
  std::chrono::nanoseconds elapsed{0};
  // Connect start -> EOF, for complete connections, in microseconds (unsorted).
  std::vector<std::uint32_t> latencies_us;

  std::uint64_t failed() const noexcept {
    std::uint64_t sum = 0;
    for (auto count : failures) sum += count;
    return sum;
  }
  std::uint64_t finished() const noexcept { return complete + failed(); }
  std::uint64_t bytes_lost() const noexcept {
    return payload_bytes_expected - payload_bytes_received;
  }
  std::uint64_t with(Failure failure) const noexcept {
    return failures[static_cast<std::size_t>(failure)];
  }
};

// Runs the whole load in the calling thread and returns when every connection has finished.
LoadResult run_load(const LoadOptions& options);

}  // namespace ringlinger::tools
