// The Manager: one io_uring ring (or epoll, where io_uring is unavailable), driven by one thread,
// that carries thousands of connections through send -> shutdown(SHUT_WR) -> drain to EOF ->
// close, batching every submission.
//
// Error convention: calls made while setting up (the constructor, listen) throw; calls on the
// data path (adopt, send, close, abort, run_once) never throw and return error codes.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "ringlinger/address.hpp"
#include "ringlinger/config.hpp"
#include "ringlinger/connection_id.hpp"
#include "ringlinger/listen_options.hpp"
#include "ringlinger/outcome.hpp"
#include "ringlinger/state.hpp"
#include "ringlinger/stats.hpp"

namespace ringlinger {

// What the manager tells the application. Every callback runs on the manager's thread, inside
// run_once() or poll(), and may call any Manager method (send, close, abort, adopt, ...) except
// run_once(), run() and poll().
struct Callbacks {
  // A listener accepted a connection. It is open; data will reach on_receive.
  std::function<void(ConnectionId)> on_accept;
  // Application data arrived on an open connection; `data` is valid only during the call. An
  // empty `data` means the peer sent EOF (no more data will come). When this callback is not set
  // the manager does not read before close() is requested. Never called after close().
  std::function<void(ConnectionId, std::span<const std::byte> data)> on_receive;
  // The connection's fd was closed, or handed to the kernel to close before the manager next
  // waits (io_uring, a drain the peer's FIN ended: the close has no completion to wait for);
  // called exactly once per connection, after which the id is stale. Not called for connections
  // still open when the Manager is destroyed.
  std::function<void(ConnectionId, const CloseReport&)> on_closed;
  // Every byte queued on an open connection was handed to the kernel (its send queue became
  // empty). With queued_bytes() and pause_receive() this is a proxy's flow control: stop reading
  // from one side while the other side's queue is long, resume here.
  std::function<void(ConnectionId)> on_send_drained;
};

// Called once per handed-off connection, on the manager's thread, when its fd was closed.
using HandoffDone = std::function<void(const CloseReport&)>;

// Owns one io_uring ring (or the epoll fallback) and every connection given to it. Not copyable,
// not movable; create it on the thread that will drive it (the ring is set up for a single
// issuer).
class Manager {
 public:
  // Throws std::invalid_argument naming the field when `config` is invalid, std::system_error
  // when the backend cannot be set up (with IoBackend::io_uring: io_uring disabled by sysctl or
  // seccomp, too old a kernel, ...; IoBackend::automatic falls back to epoll instead).
  explicit Manager(const Config& config = {}, Callbacks callbacks = {});
  // Connections still open are closed at once (with RST if they have unread input); call
  // stop() and run() first to close them gracefully.
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Binds and listens on `address` (port 0 picks a free port) and accepts connections with a
  // multishot accept; returns the bound address. Throws std::system_error on failure.
  SocketAddress listen(const SocketAddress& address, const ListenOptions& options);
  // The same, with a backlog and SO_REUSEPORT only (ListenOptions says what they do).
  SocketAddress listen(const SocketAddress& address, int backlog = 4096, bool reuse_port = false);

  // Takes ownership of a connected TCP socket. nullopt when the table is full or the manager is
  // stopping; the fd then stays the caller's. The socket may still be connecting (a non-blocking
  // connect() that returned EINPROGRESS): receives and sends wait for the connection, and a
  // failed connect ends the connection with its error (first_error ECONNREFUSED, ETIMEDOUT, ...).
  std::optional<ConnectionId> adopt(int fd);

  // Thread-safe: may be called from any thread, also while the manager's thread is waiting.
  // Gives the manager a connected TCP socket to close gracefully: the manager's thread adopts
  // it, sends `final_bytes`, then closes it (flush, SHUT_WR, drain, close), and calls
  // `on_done` there with the close report. The caller must not touch `fd` again. Never blocks:
  // the fd is queued and the manager's thread woken (a pipe it reads through its ring).
  // A handoff that finds the table full waits for a free slot; one that arrives while the
  // manager is stopping is still closed gracefully within stop()'s grace. If the manager is
  // destroyed first, the fd is reset and closed and `on_done` runs with outcome "aborted".
  // Error: bad_file_descriptor when fd < 0 (nothing is queued).
  std::error_code handoff(int fd, std::string final_bytes = {}, HandoffDone on_done = {});

  // Queues bytes to send, in order after everything queued before; partial sends are resumed.
  // Errors: bad_file_descriptor (stale id), broken_pipe (close() was already requested or the
  // connection is failing).
  std::error_code send(ConnectionId id, std::string bytes);
  // Like send(), without copying: `bytes` must stay valid and unchanged until on_closed runs
  // for this connection.
  std::error_code send_view(ConnectionId id, std::span<const std::byte> bytes);
  // send_view(id, bytes), then close(id), in one call: a server's last response. Where nothing
  // was queued before them, the bytes and the FIN may leave in one segment (with io_uring, as
  // after send_view() and close() made in a row). Errors as send_view()'s: then nothing is
  // queued and the connection is not closed.
  std::error_code send_view_and_close(ConnectionId id, std::span<const std::byte> bytes);
  // send(id, bytes), then close(id), in one call: the same with owned bytes.
  std::error_code send_and_close(ConnectionId id, std::string bytes);
  // Queues `length` bytes of the file `file_fd` from `offset`, sent with sendfile(2): the kernel
  // passes the file's page-cache pages to the socket without copying them, which is what makes
  // large responses cheap (nginx's `sendfile on`). The file must stay open and unchanged until
  // on_closed runs for this connection; a range past its end fails the connection (send_error, ENODATA).
  // SIGPIPE is never raised. Extra error: bad_file_descriptor when file_fd < 0.
  std::error_code send_file(ConnectionId id, int file_fd, std::uint64_t offset,
                            std::uint64_t length);

  // Starts the graceful close: flush what is queued, shutdown(SHUT_WR), read and discard until
  // the peer's EOF (or a drain limit), then close. Input is discarded from now on. Calling it
  // again is harmless. Error: bad_file_descriptor (stale id).
  std::error_code close(ConnectionId id);
  // Half-close: once every queued byte was sent, shutdown(SHUT_WR) (our FIN), while receiving
  // goes on, so the peer sees the end of our data and can still answer. Later sends fail with
  // broken_pipe; close() completes the close (drain, then close). What a proxy does when one side
  // sent FIN. Calling it again is harmless. Errors: bad_file_descriptor (stale id), broken_pipe
  // (close() was already requested).
  std::error_code shutdown_write(ConnectionId id);
  // Flow control: stop delivering received data (no new receive is started; one already in
  // flight may still deliver once), and start again. The peer is slowed by TCP's window once
  // the socket's receive buffer fills. Errors: bad_file_descriptor (stale id).
  std::error_code pause_receive(ConnectionId id);
  std::error_code resume_receive(ConnectionId id);
  // Bytes queued on the connection and not yet handed to the kernel; 0 for a stale id.
  std::uint64_t queued_bytes(ConnectionId id) const noexcept;

  // Resets the connection now (SO_LINGER {1, 0}, then close: the peer sees RST). Outcome
  // "aborted" unless an outcome was already decided. Error: bad_file_descriptor (stale id).
  std::error_code abort(ConnectionId id);
  // Ends the connection with a reset, but only after every byte queued was sent and the peer
  // acknowledged it: the peer reads all of it, then sees the reset instead of an EOF. This is how
  // a proxy passes on a stream that was cut (its other side reset or failed before its EOF), so
  // that a truncation never looks like a clean end. No FIN is sent; input is read and discarded
  // meanwhile; the send timeout bounds the wait (then the reset goes at once). Outcome "aborted".
  // Also allowed after close() while queued bytes are still being sent (the FIN is not out
  // yet); harmless once an outcome is decided. Errors: bad_file_descriptor (stale id),
  // broken_pipe (our FIN may be out: shutdown_write() or close() got that far).
  std::error_code abort_after_send(ConnectionId id);

  // The connection's fd (for setsockopt, getpeername); -1 for a stale id. Do not close it.
  int fd(ConnectionId id) const noexcept;
  // The connection's state; nullopt for a stale id.
  std::optional<State> state(ConnectionId id) const noexcept;

  // One loop step: submit everything prepared (one io_uring_enter), wait up to `max_wait` for a
  // completion or the next timer, handle every completion, expire timers. Returns false once
  // stop() was called and every connection and listener is closed.
  bool run_once(std::chrono::milliseconds max_wait);
  // Calls run_once until it returns false.
  void run();

  // Driving the manager from the host's own event loop instead of run():
  //   add event_fd() to the host's epoll (EPOLLIN, level- or edge-triggered) or poll set;
  //   wait at most poll_timeout() in the host's epoll_wait;
  //   call poll() after every wait (and after calls made outside the manager's callbacks).
  // A file descriptor that becomes readable when the manager has work: completions ready in its
  // ring (an eventfd registered with the ring; with the epoll backend, its epoll fd), or
  // handoffs from other threads. Created on the first call, readable at first (the host's
  // first wait returns at once); owned by the manager.
  // Throws std::system_error if it cannot be created.
  int event_fd();
  // A non-blocking loop step: clears event_fd()'s readiness, submits what is prepared, handles
  // every completion ready, expires timers. Returns false once stop() was called and every
  // connection and listener is closed. Must not be called from a callback.
  bool poll();
  // How long the host may wait for event_fd() before calling poll() again: until the manager's
  // next timer, 0 when requests are prepared but not yet submitted (a call made outside a
  // callback), `max` when nothing is due sooner.
  std::chrono::milliseconds poll_timeout(std::chrono::milliseconds max) const;
  // Stops accepting, closes every open connection gracefully and lets closing ones finish;
  // connections still there after `grace` are reset (outcome stop_deadline). Safe to call from
  // a signal handler or another thread; takes effect at the next loop step.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(30)) noexcept;

  // Thread-safe. Runs `task` on the manager's thread at its next loop step (inside run_once()
  // or poll(), like a callback: it may call any Manager method except run_once(), run(), poll()).
  // Tasks run in the order posted. Never blocks; wakes the manager like handoff(). Returns
  // std::errc::operation_canceled (nothing queued) once the manager finished (run_once()/poll()
  // returned false); a task still queued when the Manager is destroyed is destroyed unrun.
  // Like a callback, a task must not throw.
  std::error_code post(std::function<void()> task);

  // A snapshot of the counters. Call it on the manager's thread. It counts the per-state gauges
  // then: a pass over the max_connections slots (about 140 us for 20000), so it is meant for a
  // metrics scrape or a report, not for every loop step.
  Stats stats() const;
  // Thread-safe: the counters, read on the manager's thread. From the manager's own thread
  // (a callback, or between loop steps on the thread that drives it) it returns stats() at once;
  // from another thread it posts a read and waits up to `wait` for it: nullopt if the manager's
  // thread did not run a loop step in that time (not being driven, or finished). The thread that
  // drives it is the last one that called run_once() or poll(); before the first loop step no
  // thread does (use stats() on the creating thread then).
  std::optional<Stats> snapshot(std::chrono::milliseconds wait = std::chrono::seconds(1)) const;

  // Changes the timeouts and caps: drain_idle_timeout_ms, drain_timeout_ms, drain_max_bytes,
  // send_timeout_ms, orphan_timeout_ms, on_timeout and shutdown_mode. The timeouts apply to
  // every timer armed from now on (connections adopted or accepted from now on, and a timer an
  // existing connection re-arms after its next progress); timers already armed keep their
  // deadlines. on_timeout, orphan_timeout_ms and shutdown_mode apply to every connection whose
  // timeout or shutdown comes from now on.
  // drain_max_bytes applies at once to every connection, also those already draining: one that
  // discarded more than a lowered cap ends (drain_byte_cap) at its next receive; the slot keeps no
  // cap of its own. Call it on the manager's thread (from another thread: through post()).
  // Throws std::invalid_argument naming the field when `config` is invalid (Config::validate)
  // or changes a field that is fixed for the manager's life (backend, ring_entries,
  // max_connections, receive_buffer_bytes, receive_buffer_count, batch_wait_us, defer_taskrun:
  // the ring is set up with them), e.g.
  // "max_connections cannot change while the manager runs (restart to change it)"; nothing
  // changes then.
  void reconfigure(const Config& config);

  // The configuration in use (reconfigure() changes it).
  const Config& config() const noexcept;
  // The backend in use: io_uring, or epoll (asked for, or fallen back to).
  IoBackend backend() const noexcept;
  // What the backend is, e.g. "io_uring SUBMIT_ALL|CQSIZE|SINGLE_ISSUER|DEFER_TASKRUN +registered
  // ring fd +batched waits (2000 us)", or "epoll (edge-triggered) (io_uring unavailable: ...)".
  std::string describe_backend() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringlinger
