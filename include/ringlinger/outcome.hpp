// How a connection ended, and what it cost: reported once per connection when its fd is closed.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringlinger {

// Why the fd was closed. Exactly one per connection.
enum class Outcome : std::uint8_t {
  // Our FIN went out after all our data and the peer's EOF was seen: nothing lost.
  clean,
  // The peer reset the connection (ECONNRESET, EPIPE): it may not have received everything.
  peer_reset,
  // While draining, the peer made no progress for drain_idle_timeout_ms: it acknowledged none of
  // our bytes and sent none.
  drain_idle_timeout,
  // The drain (shutdown to close) took longer than drain_timeout_ms.
  drain_timeout,
  // The peer sent more than drain_max_bytes after close() was requested.
  drain_byte_cap,
  // While bytes of ours waited to be sent, no send completed and the peer acknowledged none of
  // our bytes and sent none, for send_timeout_ms (it stopped reading).
  send_timeout,
  // A send or shutdown failed with an error other than a reset (e.g. ETIMEDOUT, EHOSTUNREACH).
  send_error,
  // A receive failed with an error other than a reset.
  receive_error,
  // abort() was called: the connection was reset (RST) without a graceful close; or
  // abort_after_send(): reset once the peer had acknowledged everything queued.
  aborted,
  // stop() gave up waiting for this connection at its deadline and reset it.
  stop_deadline,
};

// Number of values of Outcome (for tables indexed by outcome).
inline constexpr std::size_t kOutcomeCount = 10;

// Lower-case name of an outcome, e.g. "drain_idle_timeout".
std::string_view to_string(Outcome outcome) noexcept;

// Whether a send, receive or shutdown that failed with `error` (a positive errno) failed because
// the peer reset the connection, or it was reset on the peer's behalf: ECONNRESET, EPIPE,
// ECONNABORTED, ENOTCONN. The manager ends such a connection as peer_reset, and one with any
// other error as send_error or receive_error; code that calls send(2) or recv(2) itself can
// classify its own failures the same way.
bool is_peer_reset_error(int error) noexcept;

// Everything known about one connection when its fd was closed.
struct CloseReport {
  // Why it was closed.
  Outcome outcome = Outcome::clean;
  // The first error seen on the connection (positive errno), 0 if none.
  int first_error = 0;
  // Whether the socket was closed with SO_LINGER {1, 0}, i.e. with an RST.
  bool reset_sent = false;
  // Whether close() was requested (false: ended by abort, an error or stop from the open state).
  bool close_requested = false;
  // Bytes handed to the kernel by completed sends.
  std::uint64_t bytes_sent = 0;
  // Bytes delivered to the receive callback.
  std::uint64_t bytes_received = 0;
  // Bytes read and thrown away after close() was requested.
  std::uint64_t bytes_discarded = 0;
  // Bytes queued on the connection (send, send_view, send_file, handoff's final bytes) that were
  // never handed to the kernel: what the peer cannot have received (0 after a clean close).
  std::uint64_t bytes_unsent = 0;
  // adopt/accept -> close() requested; when close() was never requested (abort, an error, a
  // timeout or stop from the open state): adopt/accept -> outcome decided. Together the four
  // phases add up to the whole lifetime, adopt/accept -> fd closed.
  std::chrono::nanoseconds open_time{0};
  // close() requested -> SHUT_WR done (sending the queued bytes).
  std::chrono::nanoseconds flush_time{0};
  // SHUT_WR done -> outcome decided (reading until the peer's EOF).
  std::chrono::nanoseconds drain_time{0};
  // Outcome decided -> fd closed (cancelling requests in flight, then the close itself); 0 for
  // a drain the peer's FIN ended on io_uring, reported as its close is submitted (on_closed).
  std::chrono::nanoseconds teardown_time{0};

  // close() requested -> fd closed (or its close submitted: see teardown_time): the close latency
  // (0 when close() was never requested).
  std::chrono::nanoseconds close_latency() const noexcept {
    return close_requested ? flush_time + drain_time + teardown_time : std::chrono::nanoseconds(0);
  }
};

}  // namespace ringlinger
