// Counters and gauges of one Manager. Read them with Manager::stats(); all are cumulative since
// the Manager was created except the per-state gauges.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "ringlinger/outcome.hpp"
#include "ringlinger/state.hpp"

namespace ringlinger {

// Upper bounds of the close-latency buckets (close() requested -> fd closed), from a response
// that the peer reads at once (a millisecond) to one that waits out drain_timeout_ms (30 s).
inline constexpr std::size_t kCloseLatencyBuckets = 15;  // 14 bounds + one above the last
inline constexpr std::array<std::chrono::nanoseconds, kCloseLatencyBuckets - 1> kCloseLatencyBounds{
    std::chrono::milliseconds(1),    std::chrono::microseconds(2'500),
    std::chrono::milliseconds(5),    std::chrono::milliseconds(10),
    std::chrono::milliseconds(25),   std::chrono::milliseconds(50),
    std::chrono::milliseconds(100),  std::chrono::milliseconds(250),
    std::chrono::milliseconds(500),  std::chrono::seconds(1),
    std::chrono::milliseconds(2'500), std::chrono::seconds(5),
    std::chrono::seconds(10),        std::chrono::seconds(30)};

namespace stats_detail {
// Each bound is at least twice the one before it, so a range of latencies of one bit width,
// [2^(w-1), 2^w) nanoseconds, holds at most one bound.
constexpr bool bounds_at_least_double() noexcept {
  for (std::size_t i = 1; i < kCloseLatencyBounds.size(); ++i) {
    if (kCloseLatencyBounds[i] < 2 * kCloseLatencyBounds[i - 1]) return false;
  }
  return true;
}
static_assert(bounds_at_least_double(), "close_latency_bucket() needs each bound >= 2x the last");

// For each bit width w of a latency in nanoseconds: the bounds below 2^(w-1), the least
// latency of that width (none for w = 0, a latency of 0).
inline constexpr auto kBoundsBelowWidth = [] {
  std::array<std::uint8_t, 65> below{};
  for (std::size_t width = 1; width < below.size(); ++width) {
    const std::uint64_t least = std::uint64_t{1} << (width - 1);
    for (const std::chrono::nanoseconds bound : kCloseLatencyBounds) {
      if (static_cast<std::uint64_t>(bound.count()) < least) ++below[width];
    }
  }
  return below;
}();
}  // namespace stats_detail

// The bucket of Stats::close_latency_counts a latency falls in: the first whose bound is >= it,
// kCloseLatencyBuckets - 1 above the last bound. From the latency's bit width and at most one
// compare (a binary search took four, 39 instructions per close: bench/callgrind.sh).
constexpr std::size_t close_latency_bucket(std::chrono::nanoseconds latency) noexcept {
  const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(latency.count(), 0));
  std::size_t bucket = stats_detail::kBoundsBelowWidth[static_cast<std::size_t>(std::bit_width(ns))];
  if (bucket < kCloseLatencyBounds.size() &&
      static_cast<std::uint64_t>(kCloseLatencyBounds[bucket].count()) < ns) {
    ++bucket;
  }
  return bucket;
}

// A snapshot of what a Manager did so far.
struct Stats {
  // Gauges: connections in each state now (index with static_cast<size_t>(State)); the entry for
  // State::free counts unused slots. Counted when the snapshot is taken (a pass over the
  // max_connections slots).
  std::array<std::uint64_t, kStateCount> connections_in_state{};
  // Counters: connections closed with each outcome (index with static_cast<size_t>(Outcome)).
  std::array<std::uint64_t, kOutcomeCount> outcomes{};

  // Connections taken over with adopt().
  std::uint64_t connections_adopted = 0;
  // Connections given with handoff() (counted when the manager's thread adopts them).
  std::uint64_t connections_handed_off = 0;
  // Connections accepted by the manager's listeners.
  std::uint64_t connections_accepted = 0;
  // Accepted connections closed unserved because the manager was stopping.
  std::uint64_t accepts_rejected = 0;
  // Connections accepted while the table was full (the io_uring backend's accept drains the
  // whole backlog before it can be paused), held until a slot freed up instead of being closed.
  std::uint64_t accepts_queued = 0;
  // Accept failures (EMFILE, ENFILE, ENOMEM, ...); accepting pauses briefly after each.
  std::uint64_t accept_errors = 0;

  // Bytes handed to the kernel by completed sends.
  std::uint64_t bytes_sent = 0;
  // Bytes delivered to the receive callback.
  std::uint64_t bytes_received = 0;
  // Bytes read and thrown away after close() was requested.
  std::uint64_t bytes_discarded = 0;

  // Submission queue entries consumed by the kernel.
  std::uint64_t submissions = 0;
  // Completion queue entries handled.
  std::uint64_t completions = 0;
  // io_uring_enter(2) calls made by the manager (every one of them, counted at the call).
  std::uint64_t enter_calls = 0;
  // Every system call the manager made on the data path, whatever the backend (io_uring_enter,
  // shutdown, setsockopt, getsockopt(TCP_INFO) when a timer expires, sendfile, fcntl before the
  // first send_file() on an adopted socket, close of a refused socket; with epoll also
  // epoll_wait, epoll_ctl, accept4, recv, send, close). Setup calls (socket, bind, listen, ring
  // setup) are not counted.
  std::uint64_t syscalls = 0;
  // Of those, calls made early because the submission queue was full.
  std::uint64_t sq_full_submits = 0;
  // Times the kernel reported completion queue overflow (completions kept, then flushed).
  std::uint64_t cq_overflows = 0;
  // Direct shutdown(2) calls (shutdown mode "syscall").
  std::uint64_t shutdown_syscalls = 0;
  // Drain idle timers that expired but restarted at an acknowledgement the kernel reported (the
  // peer was still taking our data, slowly: not idle).
  std::uint64_t drain_idle_extensions = 0;
  // The same for send timers (the kernel completes a send waiting for buffer space only once a
  // third of the buffer is free, so a slow reader's progress shows in its acknowledgements).
  std::uint64_t send_timeout_extensions = 0;
  // Receives that found no free shared receive buffer (ENOBUFS) and were retried.
  std::uint64_t receive_buffer_waits = 0;
  // Completions whose connection had already been closed and its slot reused (ignored). With the
  // in-flight accounting this stays 0; a non-zero value is a bug worth reporting.
  std::uint64_t stale_completions = 0;
  // Half-closes done with shutdown_write() (shutdown(2) calls, counted in syscalls too).
  std::uint64_t write_shutdowns = 0;
  // Times the manager's thread was woken through its wake pipe: by handoff() or post() (one wake
  // can carry many of both) or stop().
  std::uint64_t handoff_wakes = 0;
  // The most connections that were live at once.
  std::uint64_t peak_live_connections = 0;

  // Connections whose close() was requested, by close latency (CloseReport::close_latency()):
  // entry i counts latencies <= kCloseLatencyBounds[i] (and above the bound before it);
  // the last entry those above the last bound. NOT cumulative. Counted when the connection's
  // close is reported (on_closed, or a handoff's on_done).
  std::array<std::uint64_t, kCloseLatencyBuckets> close_latency_counts{};
  std::uint64_t close_latency_sum_ns = 0;  // their sum

  // Connections currently using a slot (every state but free).
  std::uint64_t live_connections() const noexcept {
    std::uint64_t sum = 0;
    for (std::size_t i = 1; i < kStateCount; ++i) sum += connections_in_state[i];
    return sum;
  }
  // Connections closed so far, whatever the outcome.
  std::uint64_t closed_connections() const noexcept {
    std::uint64_t sum = 0;
    for (auto count : outcomes) sum += count;
    return sum;
  }
  // Convenience accessors.
  std::uint64_t in_state(State state) const noexcept {
    return connections_in_state[static_cast<std::size_t>(state)];
  }
  std::uint64_t with_outcome(Outcome outcome) const noexcept {
    return outcomes[static_cast<std::size_t>(outcome)];
  }

  // Adds another manager's counters and gauges (one manager per thread: the process's totals).
  // peak_live_connections becomes the sum of the peaks, an upper bound of the combined peak.
  Stats& operator+=(const Stats& other) noexcept;
};

inline Stats& Stats::operator+=(const Stats& other) noexcept {
  static_assert(sizeof(Stats) == (kStateCount + kOutcomeCount + kCloseLatencyBuckets + 24) *
                                    sizeof(std::uint64_t),
                "a field was added to Stats: add it here too");
  for (std::size_t i = 0; i < kStateCount; ++i) connections_in_state[i] += other.connections_in_state[i];
  for (std::size_t i = 0; i < kOutcomeCount; ++i) outcomes[i] += other.outcomes[i];
  connections_adopted += other.connections_adopted;
  connections_handed_off += other.connections_handed_off;
  connections_accepted += other.connections_accepted;
  accepts_rejected += other.accepts_rejected;
  accepts_queued += other.accepts_queued;
  accept_errors += other.accept_errors;
  bytes_sent += other.bytes_sent;
  bytes_received += other.bytes_received;
  bytes_discarded += other.bytes_discarded;
  submissions += other.submissions;
  completions += other.completions;
  enter_calls += other.enter_calls;
  syscalls += other.syscalls;
  sq_full_submits += other.sq_full_submits;
  cq_overflows += other.cq_overflows;
  shutdown_syscalls += other.shutdown_syscalls;
  drain_idle_extensions += other.drain_idle_extensions;
  send_timeout_extensions += other.send_timeout_extensions;
  receive_buffer_waits += other.receive_buffer_waits;
  stale_completions += other.stale_completions;
  write_shutdowns += other.write_shutdowns;
  handoff_wakes += other.handoff_wakes;
  peak_live_connections += other.peak_live_connections;
  for (std::size_t i = 0; i < kCloseLatencyBuckets; ++i) {
    close_latency_counts[i] += other.close_latency_counts[i];
  }
  close_latency_sum_ns += other.close_latency_sum_ns;
  return *this;
}

}  // namespace ringlinger
