// Deadlines of up to one fixed duration for up to `capacity` slots, kept in a few sorted lanes.
//
// Most deadlines are (now + the queue's duration) and now never goes back, so appending at the
// tail of one list keeps it sorted: arm, re-arm, disarm and expiry are O(1) each, with no heap
// and no per-timer allocation. A deadline closer than that (arm_at(): a progress timer re-armed
// from the last input or the peer's last acknowledgement, which lie in the past) goes to one of
// kLanes lists whose durations are duration * k / kLanes (k = 1..kLanes): the lane that fires
// first at or after the deadline asked for, so such a deadline fires at most duration / kLanes
// late. Every list is sorted for the same reason as the first, so the queue's next deadline is
// the earliest of the lanes' heads: still O(1), bounded by kLanes, and only lanes in use are
// looked at. The manager keeps one queue per kind of timeout (send, drain idle, drain total) and
// waits once, until the earliest deadline. This replaces a linked timeout per request (measured
// +8% per close).
//
// The duration can change (Manager::reconfigure(), rare). Timers already armed keep their
// deadlines, but a lane would no longer be sorted by appending once it mixes two durations, so
// set_duration() moves every armed timer to one more list, the retired lane, sorted once there
// (O(n log n) per change, n = armed timers), and empties the lanes for the new duration. Nothing
// is appended to the retired lane afterwards (timers leave it as they expire or are re-armed),
// so every list stays sorted, deadlines still fire in order and exactly on time, and arm,
// disarm and expiry stay O(1). Appending with a walk back from the tail instead would cost, after
// a shorter duration, a walk over every older timer for each new one (tens of thousands).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "core/assert.hpp"

namespace ringlinger::detail {

class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  // Lanes of a queue: the last one lasts the whole duration, lane k lasts duration * (k+1) / kLanes.
  static constexpr unsigned kLanes = 64;
  // The list after the lanes: timers armed before the last set_duration(), sorted.
  static constexpr unsigned kRetired = kLanes;

  // A queue for slots 0..capacity-1 whose timers last at most `duration`.
  TimerQueue(std::uint32_t capacity, std::chrono::nanoseconds duration)
      : nodes_(capacity), duration_(duration) {
    RL_ASSERT(capacity <= kEnd);
  }

  // Sets the slot's deadline to now + duration (moving it if it was armed).
  void arm(std::uint32_t slot, TimePoint now) noexcept { insert(slot, kLanes - 1, now + duration_); }

  // Sets the slot's deadline to start + duration, exactly, for a timer that conceptually began
  // at `start` (not after the last now) but is armed only now: the engine's drain total
  // timeout, armed at the drain's first idle expiry, when most drains have long ended (see
  // Engine::expire_timers()). It goes into the whole-duration lane at its place: those armed in
  // the order of their starts append at the tail, and one that starts earlier than the tail's
  // walks back past the later ones (a few, while arms from `now` and from a start mix).
  void arm_from(std::uint32_t slot, TimePoint start) noexcept {
    disarm(slot);
    const TimePoint deadline = start + duration_;
    constexpr unsigned lane = kLanes - 1;
    std::uint32_t after = tails_[lane];  // the node the slot goes behind, or the lane's end
    while (!is_end(after) && nodes_[after].deadline > deadline) after = nodes_[after].prev;
    Node& node = nodes_[slot];
    node.deadline = deadline;
    node.prev = after;
    node.next = is_end(after) ? heads_[lane] : nodes_[after].next;
    (is_end(after) ? heads_[lane] : nodes_[after].next) = slot;
    (is_end(node.next) ? tails_[lane] : nodes_[node.next].prev) = slot;
    used_lanes_ |= std::uint64_t{1} << lane;
  }

  // Sets the slot's deadline to the first lane deadline (now + duration * k / kLanes) at or after
  // `deadline`, which must be after `now` (one more than a duration away is taken as now +
  // duration, as is any in a queue shorter than kLanes nanoseconds). Returns it.
  TimePoint arm_at(std::uint32_t slot, TimePoint now, TimePoint deadline) noexcept {
    RL_ASSERT(deadline > now);
    const std::int64_t left = (deadline - now).count();
    const std::int64_t tick = duration_.count() / kLanes;
    const std::int64_t ticks = tick == 0 ? kLanes : left / tick + (left % tick != 0 ? 1 : 0);
    if (ticks >= static_cast<std::int64_t>(kLanes)) {
      arm(slot, now);
      return now + duration_;
    }
    const auto lane = static_cast<unsigned>(ticks - 1);
    const TimePoint fires = now + lane_duration(lane);
    insert(slot, lane, fires);
    return fires;
  }

  // Removes the slot's deadline; harmless when it has none. A lane it leaves empty keeps its bit
  // in used_lanes_ until earliest() passes it (a check per disarm fewer: most leave their lane
  // in use); an unarmed node's links are never read, so only its deadline is reset. The first
  // and last nodes of a lane name it by their end marks, so no table of each slot's lane is
  // read (or written by every arm).
  void disarm(std::uint32_t slot) noexcept {
    Node& node = nodes_[slot];
    if (node.deadline == kUnarmed) return;
    (is_end(node.prev) ? heads_[node.prev - kEnd] : nodes_[node.prev].next) = node.next;
    (is_end(node.next) ? tails_[node.next - kEnd] : nodes_[node.next].prev) = node.prev;
    node.deadline = kUnarmed;
  }

  // Whether the slot has a deadline in this queue.
  bool armed(std::uint32_t slot) const noexcept { return nodes_[slot].deadline != kUnarmed; }
  // The slot's deadline, if it has one.
  std::optional<TimePoint> deadline(std::uint32_t slot) const noexcept {
    if (!armed(slot)) return std::nullopt;
    return nodes_[slot].deadline;
  }

  // The earliest deadline, if any slot is armed.
  std::optional<TimePoint> next_deadline() const noexcept {
    const TimePoint deadline = next_deadline_or_max();
    if (deadline == TimePoint::max()) return std::nullopt;
    return deadline;
  }
  // The same, with TimePoint::max() for none: cheaper to compare across queues, once a loop step.
  TimePoint next_deadline_or_max() const noexcept {
    const std::uint32_t slot = earliest();
    return slot == kNone ? TimePoint::max() : nodes_[slot].deadline;
  }

  // Disarms and returns the slot with the earliest deadline if that deadline is <= now.
  std::optional<std::uint32_t> pop_expired(TimePoint now) noexcept {
    const std::uint32_t slot = earliest();
    if (slot == kNone || nodes_[slot].deadline > now) return std::nullopt;
    disarm(slot);
    return slot;
  }

  // Number of armed slots, counted (for tests: every arm and disarm kept a count before).
  std::size_t size() const noexcept {
    std::size_t armed = 0;
    for (std::uint32_t lane = 0; lane <= kLanes; ++lane) {
      for (std::uint32_t slot = heads_[lane]; !is_end(slot); slot = nodes_[slot].next) ++armed;
    }
    return armed;
  }
  // The longest duration a timer of this queue lasts (arm()'s).
  std::chrono::nanoseconds duration() const noexcept { return duration_; }

  // Timers armed from now on last `duration`; those armed keep their deadlines (see the top).
  void set_duration(std::chrono::nanoseconds duration) {
    if (duration == duration_) return;
    std::vector<std::uint32_t> armed;
    // The retired lane first: among equal deadlines it pops first (earliest()), and keeps that.
    for (unsigned i = 0; i <= kLanes; ++i) {
      const unsigned lane = i == 0 ? kRetired : i - 1;
      for (std::uint32_t slot = heads_[lane]; !is_end(slot); slot = nodes_[slot].next) {
        armed.push_back(slot);
      }
    }
    std::stable_sort(armed.begin(), armed.end(), [this](std::uint32_t a, std::uint32_t b) {
      return nodes_[a].deadline < nodes_[b].deadline;
    });
    heads_ = kEnds;
    tails_ = kEnds;
    used_lanes_ = 0;
    for (const std::uint32_t slot : armed) {
      Node& node = nodes_[slot];
      node.prev = tails_[kRetired];
      node.next = kEnd + kRetired;
      (is_end(tails_[kRetired]) ? heads_[kRetired] : nodes_[tails_[kRetired]].next) = slot;
      tails_[kRetired] = slot;
    }
    duration_ = duration;
  }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;  // no slot (earliest() of an empty queue)
  static constexpr TimePoint kUnarmed = TimePoint::min();
  // A lane's end: kEnd + the lane, in the prev of its first node and the next of its last, and
  // in heads_ and tails_ while it is empty. Slots are below kEnd (the constructor checks).
  static constexpr std::uint32_t kEnd = UINT32_MAX - 127;
  static constexpr bool is_end(std::uint32_t link) noexcept { return link >= kEnd; }
  static constexpr std::array<std::uint32_t, kLanes + 1> kEnds = [] {
    std::array<std::uint32_t, kLanes + 1> ends{};
    for (std::uint32_t lane = 0; lane <= kLanes; ++lane) ends[lane] = kEnd + lane;
    return ends;
  }();

  struct Node {
    std::uint32_t prev = kNone;
    std::uint32_t next = kNone;
    TimePoint deadline = kUnarmed;
  };

  std::chrono::nanoseconds lane_duration(unsigned lane) const noexcept {
    return lane == kLanes - 1 ? duration_ : duration_ / kLanes * (lane + 1);
  }

  // Appends the slot to `lane`, whose deadlines are all now + lane_duration(lane): the tail is
  // the latest, since now never goes back.
  void insert(std::uint32_t slot, unsigned lane, TimePoint deadline) noexcept {
    disarm(slot);
    Node& node = nodes_[slot];
    node.deadline = deadline;
    const std::uint32_t tail = tails_[lane];  // the lane's end when it is empty
    RL_ASSERT(is_end(tail) || nodes_[tail].deadline <= deadline);
    node.prev = tail;
    node.next = kEnd + lane;
    if (is_end(tail)) {
      heads_[lane] = slot;
      used_lanes_ |= std::uint64_t{1} << lane;
    } else {
      nodes_[tail].next = slot;
    }
    tails_[lane] = slot;
  }

  // The head with the earliest deadline among the lanes in use (ties: the retired lane's, then
  // the shorter lane's), or kNone. Clears the bits of lanes that disarm() left empty.
  std::uint32_t earliest() const noexcept {
    std::uint32_t best = is_end(heads_[kRetired]) ? kNone : heads_[kRetired];
    for (std::uint64_t lanes = used_lanes_; lanes != 0; lanes &= lanes - 1) {
      const auto lane = static_cast<unsigned>(std::countr_zero(lanes));
      const std::uint32_t head = heads_[lane];
      if (is_end(head)) {
        used_lanes_ &= ~(std::uint64_t{1} << lane);
        continue;
      }
      if (best == kNone || nodes_[head].deadline < nodes_[best].deadline) best = head;
    }
    return best;
  }

  static_assert(kLanes <= 64, "used_lanes_ has one bit per lane");

  std::vector<Node> nodes_;
  std::array<std::uint32_t, kLanes + 1> heads_ = kEnds;  // the lanes, then kRetired
  std::array<std::uint32_t, kLanes + 1> tails_ = kEnds;
  // Bit k: lane k may hold a slot (not kRetired's). Set when a slot joins the lane; cleared by
  // earliest() once the lane is found empty (a cache of what heads_ says, hence mutable).
  mutable std::uint64_t used_lanes_ = 0;
  std::chrono::nanoseconds duration_;
};

}  // namespace ringlinger::detail
