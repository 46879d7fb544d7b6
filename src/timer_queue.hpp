// Deadlines of one fixed duration for up to `capacity` slots, kept oldest first.
//
// Every deadline in a queue is (now + the queue's duration) and now never goes back, so appending
// at the tail keeps the list sorted: arm, re-arm, disarm and expiry are O(1) each, with no heap
// and no per-timer allocation, and the queue's next deadline is its head. The manager keeps one
// queue per kind of timeout (send, drain idle, drain total) and waits once, until the earliest
// head. This replaces a linked timeout per request (measured +8% per close).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "assert.hpp"

namespace ringlinger::detail {

class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  // A queue for slots 0..capacity-1 whose timers all last `duration`.
  TimerQueue(std::uint32_t capacity, std::chrono::nanoseconds duration)
      : nodes_(capacity), duration_(duration) {}

  // Sets the slot's deadline to now + duration (moving it to the tail if it was armed).
  void arm(std::uint32_t slot, TimePoint now) noexcept {
    disarm(slot);
    Node& node = nodes_[slot];
    node.deadline = now + duration_;
    RL_ASSERT(tail_ == kNone || nodes_[tail_].deadline <= node.deadline);
    node.prev = tail_;
    node.next = kNone;
    if (tail_ == kNone) {
      head_ = slot;
    } else {
      nodes_[tail_].next = slot;
    }
    tail_ = slot;
    ++size_;
  }

  // Removes the slot's deadline; harmless when it has none.
  void disarm(std::uint32_t slot) noexcept {
    Node& node = nodes_[slot];
    if (node.deadline == kUnarmed) return;
    (node.prev == kNone ? head_ : nodes_[node.prev].next) = node.next;
    (node.next == kNone ? tail_ : nodes_[node.next].prev) = node.prev;
    node = Node{};
    --size_;
  }

  // Whether the slot has a deadline in this queue.
  bool armed(std::uint32_t slot) const noexcept { return nodes_[slot].deadline != kUnarmed; }

  // The earliest deadline, if any slot is armed.
  std::optional<TimePoint> next_deadline() const noexcept {
    if (head_ == kNone) return std::nullopt;
    return nodes_[head_].deadline;
  }

  // Disarms and returns the slot with the earliest deadline if that deadline is <= now.
  std::optional<std::uint32_t> pop_expired(TimePoint now) noexcept {
    if (head_ == kNone || nodes_[head_].deadline > now) return std::nullopt;
    std::uint32_t slot = head_;
    disarm(slot);
    return slot;
  }

  // Number of armed slots.
  std::size_t size() const noexcept { return size_; }
  // The duration every timer of this queue lasts.
  std::chrono::nanoseconds duration() const noexcept { return duration_; }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;
  static constexpr TimePoint kUnarmed = TimePoint::min();

  struct Node {
    std::uint32_t prev = kNone;
    std::uint32_t next = kNone;
    TimePoint deadline = kUnarmed;
  };

  std::vector<Node> nodes_;
  std::uint32_t head_ = kNone;
  std::uint32_t tail_ = kNone;
  std::size_t size_ = 0;
  std::chrono::nanoseconds duration_;
};

}  // namespace ringlinger::detail
