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
#include <stdexcept>
#include <vector>

#include "ringlinger/connection_id.hpp"

namespace ringlinger::tools {

class DeadlineFifo {
 public:
  using Clock = std::chrono::steady_clock;

  // For slots 0..capacity-1. A timeout of 0 sets no deadline (and allocates nothing).
  DeadlineFifo(std::chrono::milliseconds timeout, std::uint32_t capacity);

  // The connection's deadline is now + timeout (moved to the back if its slot had one).
  void add(ConnectionId id, Clock::time_point now);
  // The same, with `now` the time of the next expire() (or add() with a time): a deadline added
  // inside a loop step starts when the loop next reads the clock, a step later at most (later,
  // never earlier), and no clock is read per connection (bench/callgrind.sh: 28 instructions).
  [[gnu::always_inline]] void add(ConnectionId id) { link(id, kUnstamped); }
  // Forgets the connection's deadline, if it has one (a slot's other generation keeps its own).
  void remove(ConnectionId id) noexcept {
    if (id.slot < slots_ && entries_[id.slot].linked &&
        entries_[id.slot].generation == id.generation) {
      unlink(id.slot);
    }
  }
  // `longest`, or less: the time until the first deadline (at least 1 ms), counted from the
  // latest time given to add() or expire(), not from a clock read: the runner's loop waits right
  // after its expire(), and a clock read per loop step fewer is about 30 instructions
  // (bench/callgrind.sh). A wait from an earlier time ends later, never earlier.
  std::chrono::milliseconds wait(std::chrono::milliseconds longest) const;
  // Takes out every deadline that passed by `now` and calls `expired` with its connection (which
  // may have ended since, unless it was removed: check its state).
  void expire(Clock::time_point now, const std::function<void(ConnectionId)>& expired);
  // How many deadlines are set: a walk of the list (tests only).
  std::uint32_t size() const noexcept;

 private:
  struct Entry {
    Clock::time_point at{};
    std::uint32_t previous = 0;  // towards the front (earlier deadlines)
    std::uint32_t next = 0;
    std::uint32_t generation = 0;
    bool linked = false;
  };

  // An entry added by add(id), whose time is set by the next stamp(). Such entries are always
  // the list's back: add(id, now) stamps them before it links.
  static constexpr Clock::time_point kUnstamped = Clock::time_point::max();

  // The list is circular through the end entry, entries_[slots_], whose `next` is the front and
  // `previous` the back (itself when the list is empty): a link or an unlink writes its
  // neighbours with no test for an end, and keeps no count and no first-unstamped mark
  // (bench/callgrind.sh: serve's accept callback 73 -> 62 instructions per close, the stamp's
  // walk in the runner's loop +3: -8 in all).
  Entry& end() noexcept { return entries_[slots_]; }
  const Entry& end() const noexcept { return entries_[slots_]; }

  // Inline (always_inline), like unlink(): serve's accept callback links with no call.
  [[gnu::always_inline]] void link(ConnectionId id, Clock::time_point at) {
    if (id.slot >= slots_) {  // no entries without a timeout; with one, as entries_.at() would
      if (timeout_.count() <= 0) return;
      throw std::out_of_range("DeadlineFifo: slot out of range");
    }
    Entry& entry = entries_[id.slot];
    if (entry.linked) unlink(id.slot);
    const std::uint32_t back = end().previous;
    entry.at = at;
    entry.generation = id.generation;
    entry.previous = back;
    entry.next = slots_;
    entry.linked = true;
    entries_[back].next = id.slot;
    end().previous = id.slot;
  }
  // Inline, so that link() calls nothing and remove() is no call at its callers (serve's add()
  // unlinks the slot's old entry; the proxy removes one when its connection closes). Only
  // `linked` is reset: link() sets the rest.
  [[gnu::always_inline]] void unlink(std::uint32_t slot) noexcept {
    Entry& entry = entries_[slot];
    entries_[entry.previous].next = entry.next;
    entries_[entry.next].previous = entry.previous;
    entry.linked = false;
  }
  // Sets the deadline of every entry added without a time to now + timeout, and notes `now` as
  // the latest time seen.
  void stamp(Clock::time_point now) noexcept;

  const std::chrono::milliseconds timeout_;
  // By slot, and the end entry after them (none without a timeout).
  std::vector<Entry> entries_;
  // The slots, kept apart: a bounds check is one compare (the vector's size is a division by 24),
  // and 0 with no timeout, so remove() needs no test of its own for that. The end entry's index.
  const std::uint32_t slots_;
  // The latest time given to add() or expire(), the clock's when none was yet.
  Clock::time_point now_ = Clock::now();
};

}  // namespace ringlinger::tools
