// The deadlines of one timeout for many connections (serve's request heads, proxy's upstream
// connects). Each starts when its connection does, so their order is the deadlines' order and a
// FIFO keeps them sorted: add, remove and expire are O(1).
//
// The FIFO is a list threaded through one entry per slot, allocated and touched when it is made
// (24 bytes per slot), so its memory does not depend on how fast connections arrive. A queue of
// every connection started in the last timeout (a std::deque) held accept rate x timeout entries
// whether they still mattered or not: about 800 KiB at 5000 connections a second and serve's
// 10 s head timeout, growing whenever a faster burst came (the CI soak saw it as an RSS slope).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "ringlinger/connection_id.hpp"

namespace ringlinger::tools {

class DeadlineFifo {
 public:
  using Clock = std::chrono::steady_clock;

  // For slots 0..capacity-1. A timeout of 0 sets no deadline (and allocates nothing).
  DeadlineFifo(std::chrono::milliseconds timeout, std::uint32_t capacity);

  // The connection's deadline is now + timeout (moved to the back if its slot had one).
  void add(ConnectionId id) {
    if (timeout_.count() > 0) add(id, Clock::now());  // no clock read when there is no timeout
  }
  void add(ConnectionId id, Clock::time_point now);
  // Forgets the connection's deadline, if it has one (a slot's other generation keeps its own).
  void remove(ConnectionId id) noexcept {
    if (id.slot < entries_.size() && entries_[id.slot].linked &&
        entries_[id.slot].generation == id.generation) {
      unlink(id.slot);
    }
  }
  // `longest`, or less: the time until the first deadline (at least 1 ms).
  std::chrono::milliseconds wait(std::chrono::milliseconds longest) const;
  // Takes out every deadline that passed by `now` and calls `expired` with its connection (which
  // may have ended since, unless it was removed: check its state).
  void expire(Clock::time_point now, const std::function<void(ConnectionId)>& expired);
  std::uint32_t size() const noexcept { return size_; }

 private:
  static constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
  struct Entry {
    Clock::time_point at{};
    std::uint32_t generation = 0;
    std::uint32_t previous = kNone;  // towards the front (earlier deadlines)
    std::uint32_t next = kNone;
    bool linked = false;
  };

  void unlink(std::uint32_t slot) noexcept;

  const std::chrono::milliseconds timeout_;
  std::vector<Entry> entries_;  // by slot
  std::uint32_t front_ = kNone;
  std::uint32_t back_ = kNone;
  std::uint32_t size_ = 0;
};

}  // namespace ringlinger::tools
