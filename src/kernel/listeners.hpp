// The listening sockets of a backend, whichever way it waits for connections (a multishot poll
// in the ring, or epoll readiness): the table, the pause after an accept error, and closing them
// once nothing of ours is in flight on them. The backend (see Backend) drives it.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/assert.hpp"
#include "core/engine.hpp"

namespace ringlinger::detail {

class ListenerTable {
 public:
  using TimePoint = Engine::TimePoint;

  struct Listener {
   private:
    friend class ListenerTable;
    // What accepting() says. First, with the flags: a listener stays 16 bytes, and indexing the
    // table a shift (at 24 bytes, each accept's completion took an instruction more).
    bool accepting_ = false;

   public:
    // A cancel of that wait is in flight (io_uring only: pausing or stopping its poll).
    bool cancelling = false;
    // An accept that drains the backlog is in flight (io_uring only; it never waits, so it ends
    // within the io_uring_enter that submits it).
    bool draining = false;
    int fd = -1;
    TimePoint resume_at{};  // after an accept error, not before this

    // A wait for connections is in place, so accepting goes on without our asking: io_uring's
    // multishot poll is armed; epoll's backlog is drained and the next connection brings an
    // edge. Otherwise the listener is paused (table full, accept error, not started yet).
    // Changed only through ListenerTable::set_accepting(), which counts the paused ones.
    bool accepting() const noexcept { return accepting_; }
  };
  static_assert(sizeof(Listener) == 16);

  explicit ListenerTable(Stats& stats) : stats_(stats) {}
  ~ListenerTable();  // closes the listening sockets still open
  ListenerTable(const ListenerTable&) = delete;
  ListenerTable& operator=(const ListenerTable&) = delete;

  // Takes `fd` (a listening socket) as a paused listener; returns its index.
  std::uint32_t add(int fd);
  // Closes and forgets the listener add() just took (its backend could not watch it).
  void remove_last();
  std::uint32_t size() const { return static_cast<std::uint32_t>(listeners_.size()); }
  Listener& operator[](std::uint32_t index) { return listeners_[index]; }

  // Sets whether a wait for connections is in place on listener `index` (its accepting()).
  void set_accepting(std::uint32_t index, bool accepting) noexcept {
    Listener& listener = listeners_[index];
    if (listener.accepting_ == accepting) return;
    RL_ASSERT(listener.fd >= 0);  // a closed listener is never accepting
    listener.accepting_ = accepting;
    paused_ = accepting ? paused_ - 1 : paused_ + 1;
  }
  // Whether an open listener is paused. Most loop steps have none, and both looks at the paused
  // listeners (Backend::resume_listeners() and next_deadline()) are skipped: bench/callgrind.sh,
  // 60 instructions per loop step.
  bool any_paused() const noexcept { return paused_ != 0; }

  // An accept failed (EMFILE, ENFILE, ENOMEM...): counted, and the listener tries again a little
  // later (when its backend is asked to resume after resume_at).
  void accept_failed(std::uint32_t index, TimePoint now);
  // Whether the listener is paused and may accept again at `now` (the host's room aside).
  bool may_resume(std::uint32_t index, TimePoint now) const;
  // The earliest future moment (after `now`) at which a paused listener's backoff ends, if any.
  std::optional<TimePoint> next_deadline(TimePoint now) const {
    if (!any_paused()) return std::nullopt;
    return next_paused_deadline(now);
  }

  // From now on each listener is closed by close_if_idle() once nothing of ours is in flight.
  void start_closing() { closing_ = true; }
  void close_if_idle(std::uint32_t index);
  bool has_open() const;

 private:
  std::optional<TimePoint> next_paused_deadline(TimePoint now) const;

  Stats& stats_;
  std::vector<Listener> listeners_;
  // Open listeners (fd >= 0) that are not accepting: paused, or not started yet.
  std::uint32_t paused_ = 0;
  bool closing_ = false;
};

}  // namespace ringlinger::detail
