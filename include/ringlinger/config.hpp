// Everything a Manager can be tuned with. Defaults follow nginx's lingering close where nginx has
// an equivalent (lingering_timeout 5s, lingering_time 30s, send_timeout 60s).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringlinger {

// What to do with a connection whose send or drain timed out.
enum class OnTimeout : std::uint8_t {
  // close(): the kernel sends FIN if nothing unread is queued, RST otherwise.
  close,
  // Set SO_LINGER {1, 0} first, so close() always sends RST and frees the socket at once
  // (nginx's reset_timedout_connection).
  reset,
};

// How SHUT_WR is issued once every queued byte was sent.
enum class ShutdownMode : std::uint8_t {
  // A direct shutdown(2) call: one syscall, runs inline. The default: IORING_OP_SHUTDOWN is
  // always punted to an io-wq worker thread on current kernels, which costs more
  // (docs/PERFORMANCE.md, "Shutdown through the ring or as a syscall").
  syscall,
  // IORING_OP_SHUTDOWN through the ring: no syscall of its own, but one io-wq punt per close.
  ring,
};

// Which kernel interface carries the connections.
enum class IoBackend : std::uint8_t {
  // io_uring when it can be set up with what the manager needs, epoll otherwise (io_uring
  // disabled by sysctl or a seccomp filter, kernel too old); Manager::describe_backend() says
  // which, and why.
  automatic,
  // io_uring or nothing: the Manager constructor throws when it is unavailable.
  io_uring,
  // Edge-triggered epoll and non-blocking system calls: the same state machine and semantics,
  // more system calls per close.
  epoll,
};

// Lower-case names, as the command line spells them.
std::string_view to_string(OnTimeout value) noexcept;
std::string_view to_string(ShutdownMode value) noexcept;
std::string_view to_string(IoBackend value) noexcept;

// The largest ring_entries and receive_buffer_count that Config::validate() accepts: the
// kernel's own limits (IORING_MAX_ENTRIES, and a provided-buffer ring's entries).
inline constexpr std::uint32_t kMaxRingEntries = 32'768;
inline constexpr std::uint32_t kMaxReceiveBufferCount = 32'768;

// Manager configuration. Check it with validate(); the Manager constructor rejects invalid values.
struct Config {
  // The kernel interface.
  IoBackend backend = IoBackend::automatic;
  // The progress timeouts below end a connection only after a whole period without progress:
  // idle = no byte of ours acknowledged by the peer and none of its bytes received for that
  // long (for the send timeout, also no send completed). Acknowledgements are read from the
  // kernel (TCP_INFO, one getsockopt) only when a timer expires; the period then restarts at
  // the last one. So a slow reader that keeps taking our data is never cut off, and a peer that
  // stops is ended one period after its last progress (up to 1/64 of the period later; while
  // its receive window is closed, up to one retransmission timeout, >= 200 ms, later).
  //
  // Drain idle timeout: the longest the peer may make no progress while draining (nginx
  // lingering_timeout, which counts only reads).
  std::uint32_t drain_idle_timeout_ms = 5'000;
  // Longest time from SHUT_WR to close (nginx lingering_time): a hard bound, whatever the
  // progress.
  std::uint32_t drain_timeout_ms = 30'000;
  // Most bytes read and discarded after close() before giving up on the peer; 0 = unlimited.
  // 16 MiB by default: more than a cooperative peer can have in flight when it learns of our
  // close (its send buffer, at most tcp_wmem[2] = 4 MiB, plus our receive window, at most
  // tcp_rmem[2] = 6 MiB with the kernel's defaults), while a peer that keeps uploading is cut off
  // after a bounded amount of work. Where tcp_rmem[2] is raised (32 MiB on our test machines),
  // raise this with it if uploads that large are expected.
  std::uint64_t drain_max_bytes = 16u << 20;
  // Send timeout: the longest the peer may make no progress while bytes of ours wait to be sent
  // (nginx send_timeout, which counts only completed writes): a peer that stops reading cannot
  // pin a connection forever. A reader's progress shows only when its receive window opens,
  // which the kernel does once it has freed a good part of its buffer: keep this well above
  // (receive buffer / read rate) of the slowest reader to be served.
  std::uint32_t send_timeout_ms = 60'000;
  // What a send or drain timeout does to the socket.
  OnTimeout on_timeout = OnTimeout::close;
  // After a send or drain timeout closes a connection with FIN (on_timeout = close), the kernel
  // keeps the socket as an orphan while it tries to deliver what is still queued: for minutes
  // against a peer that does not read (zero-window probes), with the memory of its buffers.
  // This bounds it: TCP_USER_TIMEOUT is set to this before such a close (one setsockopt, only on
  // timeouts). 0 keeps the kernel's default.
  std::uint32_t orphan_timeout_ms = 10'000;
  // How SHUT_WR is issued.
  ShutdownMode shutdown_mode = ShutdownMode::syscall;
  // Submission queue entries (power of two, 8..32768). The completion queue gets four times as
  // many, or one per two max_connections if that is more (a power of two, at most 65536);
  // overflow beyond that is kept by the kernel and flushed, never dropped.
  std::uint32_t ring_entries = 4'096;
  // Most connections at once (slots are allocated up front; also bounded by RLIMIT_NOFILE).
  std::uint32_t max_connections = 16'384;
  // Size of each shared receive buffer used to deliver application data (before close()). 2 KiB
  // holds a typical request head (nginx reads heads into 1 KiB, then 8 KiB buffers); bytes past it
  // come in the next receive, and whatever is unread at close() is discarded without a copy. The
  // pool is 512 KiB in all (27 bytes per connection at 19000); raise it for bulk reads.
  std::uint32_t receive_buffer_bytes = 2'048;
  // Number of shared receive buffers (power of two, 1..32768); they are lent to whichever
  // connection has data, so this bounds memory, not connections.
  std::uint32_t receive_buffer_count = 256;
  // Completion batching: when waiting, let the kernel gather completions for up to this many
  // microseconds before waking the loop, or until completions for half the open connections
  // (at most 256) are ready, whichever comes first; with fewer than 4 connections open, every
  // completion wakes it. Fewer io_uring_enter calls and wakeups per close at the cost of at
  // most this much added latency per event; 0 wakes on every completion. The default, 2 ms,
  // brings io_uring_enter below 0.05 per close at 1000 connections (docs/PERFORMANCE.md).
  // Needs kernel 6.12 (IORING_FEAT_MIN_TIMEOUT); ignored on older kernels.
  std::uint32_t batch_wait_us = 2'000;
  // Use IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER when the kernel has them (it
  // does since 6.1): completions are processed only when the manager's thread asks for them.
  bool defer_taskrun = true;

  // Empty when the configuration is usable; otherwise a message naming the first bad field and
  // its value, e.g. "drain_idle_timeout_ms must be between 1 and 86400000 (got 0)".
  std::string validate() const;
};

}  // namespace ringlinger
