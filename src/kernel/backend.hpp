// What the manager needs of a kernel interface: the engine's IoPort, listening sockets, and one
// "submit, wait, dispatch" step. Two implementations: io_uring (uring_backend) and epoll
// (epoll_backend), the fallback where io_uring is unavailable (sysctl, seccomp, old kernel).
// What they have in common is here, written once: the listener table and its policy (a backend
// only says how it waits for an accept), the discard area, and the synchronous socket calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/engine.hpp"
#include "core/io_port.hpp"
#include "kernel/listeners.hpp"
#include "ringlinger/address.hpp"
#include "ringlinger/listen_options.hpp"

namespace ringlinger::detail {

class Backend : protected IoPort {
 public:
  using TimePoint = Engine::TimePoint;

  // What a backend tells the manager about its listeners.
  class Host {
   public:
    virtual ~Host() = default;
    // A listener accepted `fd`: the manager adopts it, or closes it when it cannot take it.
    // Returns can_accept() after it: one call per accepted connection instead of two.
    virtual bool on_accepted(int fd, TimePoint now) = 0;
    // Whether accepted connections would be taken now (not stopping, table not full).
    virtual bool can_accept() const = 0;
    // The wake pipe given to watch_wake() was written to (handoff() from another thread).
    virtual void on_wake() = 0;
  };

  ~Backend() override;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // The engine's way to the kernel.
  IoPort& io() { return *this; }
  // Completions go to `engine`, accepted sockets to `host`; called once, before the first step.
  void attach(Engine& engine, Host& host);
  // Binds, listens and starts accepting; returns the bound address. Throws std::system_error.
  SocketAddress listen(const SocketAddress& address, const ListenOptions& options);
  // Watches `fd` (the read end of a pipe the manager owns): every write to it ends the current or next wait
  // and calls Host::on_wake() from a step. Called once, after attach().
  virtual void watch_wake(int fd) = 0;
  // A file descriptor that is readable while the backend has completions or events for step()
  // (Manager::event_fd()); created on the first call, owned by the backend. Throws
  // std::system_error. `clear_notification()` resets its readiness before a non-blocking step.
  virtual int notification_fd() = 0;
  virtual void clear_notification() = 0;
  // Whether requests were prepared that only the next step submits (a host loop must not sleep).
  virtual bool has_unsubmitted_work() const = 0;
  // Submits what is prepared, without waiting: called when the loop ends, so that what the last
  // step prepared (an unreported close: IoPort::submit_close_unreported) runs now, not when the
  // backend is torn down. The default has nothing to submit.
  virtual void submit_prepared() {}
  // Submits what is prepared, waits up to `timeout` for something to happen, and hands every
  // completion to the engine and every accepted socket to the host. Sets `now` after the wait.
  virtual void step(std::chrono::nanoseconds timeout, TimePoint& now) = 0;
  // Accepts again on listeners that paused (table full, EMFILE backoff) when that is possible.
  // Inline: on most loop steps none is paused, and this is one test.
  void resume_listeners(TimePoint now) {
    if (listeners_.any_paused()) resume_paused_listeners(now);
  }
  // The earliest future moment (after `now`) at which a paused listener's backoff ends, if any.
  std::optional<TimePoint> next_listener_deadline(TimePoint now) const {
    return listeners_.next_deadline(now);
  }
  // Stops accepting; each listening socket is closed once nothing of ours is in flight on it.
  void close_listeners();
  bool has_open_listeners() const { return listeners_.has_open(); }
  // E.g. "io_uring (SUBMIT_ALL|...)" or "epoll".
  const std::string& describe() const { return description_; }

 protected:
  // Throws std::system_error when the discard area cannot be mapped.
  explicit Backend(Stats& stats);

  // IoPort: the synchronous calls, the same system calls for both backends.
  int shutdown_now(int fd) final;
  void set_reset_on_close(int fd) final;
  void limit_orphan_time(int fd, std::uint32_t milliseconds) final;
  PeerAcks peer_acks(int fd, TimePoint now) final;

  // How accept_backlog() stopped.
  enum class Backlog : std::uint8_t { drained, host_full, failed };
  // Accepts on listener `index` with accept4(2) until its backlog is empty (EAGAIN), the host
  // has no room, or an accept fails (counted, and the listener backs off: accept_failed()).
  Backlog accept_backlog(std::uint32_t index, TimePoint now);

  Stats& stats_;
  Engine* engine_ = nullptr;
  Host* host_ = nullptr;
  ListenerTable listeners_;
  // Where discarding receives point, kDiscardChunkBytes long. With MSG_TRUNC TCP copies nothing
  // into it, so its pages are never touched; it is still as large as any discarding receive, so
  // a socket type that ignores MSG_TRUNC cannot write past it. Unmapped after the derived
  // backend is gone (with its ring, and any receive still pointing here).
  std::byte* const discard_area_;
  std::string description_;  // set by the derived backend's constructor

 private:
  void resume_paused_listeners(TimePoint now);

  // How the backend waits for connections on listener `index`. watch_listener: the listener was
  // just added (paused); 0, or the errno that makes listen() fail. accept_again: it may accept
  // again now (it is paused, and the host has room). stop_accepting: listeners are closing.
  virtual int watch_listener(std::uint32_t index) = 0;
  virtual void accept_again(std::uint32_t index, TimePoint now) = 0;
  virtual void stop_accepting(std::uint32_t index) = 0;
};

}  // namespace ringlinger::detail
