// What the manager needs of a kernel interface: the engine's IoPort, listening sockets, and one
// "submit, wait, dispatch" step. Two implementations: io_uring (uring_backend) and epoll
// (epoll_backend), the fallback where io_uring is unavailable (sysctl, seccomp, old kernel).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "core/engine.hpp"
#include "core/io_port.hpp"
#include "ringlinger/address.hpp"

namespace ringlinger::detail {

class Backend {
 public:
  using TimePoint = Engine::TimePoint;

  // What a backend tells the manager about its listeners.
  class Host {
   public:
    virtual ~Host() = default;
    // A listener accepted `fd`: the manager adopts it, or closes it when it cannot take it.
    virtual void on_accepted(int fd, TimePoint now) = 0;
    // Whether accepted connections would be taken now (not stopping, table not full).
    virtual bool can_accept() const = 0;
    // The wake pipe given to watch_wake() was written to (handoff() from another thread).
    virtual void on_wake() = 0;
  };

  virtual ~Backend() = default;

  // The engine's way to the kernel.
  virtual IoPort& io() = 0;
  // Completions go to `engine`, accepted sockets to `host`; called once, before the first step.
  virtual void attach(Engine& engine, Host& host) = 0;
  // Binds, listens and starts accepting; returns the bound address. Throws std::system_error.
  // With `reuse_port`, SO_REUSEPORT is set before bind.
  virtual SocketAddress listen(const SocketAddress& address, int backlog, bool reuse_port) = 0;
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
  // Submits what is prepared, waits up to `timeout` for something to happen, and hands every
  // completion to the engine and every accepted socket to the host. Sets `now` after the wait.
  virtual void step(std::chrono::nanoseconds timeout, TimePoint& now) = 0;
  // Accepts again on listeners that paused (table full, EMFILE backoff) when that is possible.
  virtual void resume_listeners(TimePoint now) = 0;
  // The earliest future moment (after `now`) at which a paused listener's backoff ends, if any.
  virtual std::optional<TimePoint> next_listener_deadline(TimePoint now) const = 0;
  // Stops accepting; each listening socket is closed once nothing of ours is in flight on it.
  virtual void close_listeners() = 0;
  virtual bool has_open_listeners() const = 0;
  // E.g. "io_uring (SUBMIT_ALL|...)" or "epoll".
  virtual std::string describe() const = 0;
};

}  // namespace ringlinger::detail
