// What this proves: TimerQueue keeps its deadlines oldest first with O(1) arm / re-arm / disarm:
// arm sets now + duration, re-arming moves a slot to the tail with its new deadline, disarming
// (also of an unarmed slot) is harmless, pop_expired() returns slots in deadline order and a
// deadline equal to `now` has expired, next_deadline() and size() follow every change; arm_at()
// fires at the first lane deadline (now + duration * k / 64) at or after the deadline asked
// for, never before it and less than duration / 64 after; and a seeded random sequence of
// operations (arm_at and set_duration included) on up to 64 slots behaves exactly like a
// reference model built on std::map. After set_duration() (shorter or longer), timers armed
// before keep their deadlines and those armed after get the new duration: all pop in deadline
// order, exactly at their deadlines, and arm_at() stays within new duration / 64. arm_from()
// (start + duration, a start in the past) keeps the order as exactly.
#include "core/timer_queue.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;
using TimePoint = TimerQueue::TimePoint;

// A fixed, non-zero origin so that no test depends on the clock.
const TimePoint kT0 = TimePoint{} + 1000h;

std::vector<std::uint32_t> pop_all(TimerQueue& queue, TimePoint now) {
  std::vector<std::uint32_t> slots;
  while (auto slot = queue.pop_expired(now)) slots.push_back(*slot);
  return slots;
}

TEST(TimerQueue, StartsEmpty) {
  TimerQueue queue(8, 10ms);
  EXPECT_EQ(queue.size(), 0u);
  EXPECT_EQ(queue.next_deadline(), std::nullopt);
  EXPECT_EQ(queue.pop_expired(kT0 + 24h), std::nullopt);
  EXPECT_EQ(queue.duration(), 10ms);
  for (std::uint32_t slot = 0; slot < 8; ++slot) EXPECT_FALSE(queue.armed(slot));
}

TEST(TimerQueue, ArmSetsNowPlusDuration) {
  TimerQueue queue(4, 10ms);
  queue.arm(2, kT0);
  EXPECT_TRUE(queue.armed(2));
  EXPECT_FALSE(queue.armed(1));
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.next_deadline(), kT0 + 10ms);
}

TEST(TimerQueue, DeadlineEqualToNowHasExpiredOneNanosecondEarlierHasNot) {
  TimerQueue queue(4, 10ms);
  queue.arm(1, kT0);
  EXPECT_EQ(queue.pop_expired(kT0 + 10ms - 1ns), std::nullopt);
  EXPECT_TRUE(queue.armed(1));
  EXPECT_EQ(queue.pop_expired(kT0 + 10ms), std::optional<std::uint32_t>(1));
  EXPECT_FALSE(queue.armed(1));
  EXPECT_EQ(queue.size(), 0u);
  EXPECT_EQ(queue.pop_expired(kT0 + 10ms), std::nullopt);
}

TEST(TimerQueue, PopsInDeadlineOrderAndStopsAtTheFirstFutureDeadline) {
  TimerQueue queue(8, 100ms);
  queue.arm(5, kT0);
  queue.arm(3, kT0 + 1ms);
  queue.arm(7, kT0 + 2ms);
  queue.arm(0, kT0 + 3ms);
  EXPECT_EQ(pop_all(queue, kT0 + 102ms), (std::vector<std::uint32_t>{5, 3, 7}));
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.next_deadline(), kT0 + 103ms);
  EXPECT_EQ(pop_all(queue, kT0 + 103ms), (std::vector<std::uint32_t>{0}));
  EXPECT_EQ(queue.next_deadline(), std::nullopt);
}

TEST(TimerQueue, EqualDeadlinesPopInArmingOrder) {
  TimerQueue queue(8, 5ms);
  for (std::uint32_t slot : {6u, 2u, 4u, 0u}) queue.arm(slot, kT0);
  EXPECT_EQ(pop_all(queue, kT0 + 5ms), (std::vector<std::uint32_t>{6, 2, 4, 0}));
}

TEST(TimerQueue, RearmMovesTheSlotToTheTailWithItsNewDeadline) {
  TimerQueue queue(8, 10ms);
  queue.arm(1, kT0);
  queue.arm(2, kT0 + 1ms);
  queue.arm(3, kT0 + 2ms);
  queue.arm(1, kT0 + 3ms);  // re-arm: was the head
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_EQ(queue.next_deadline(), kT0 + 11ms);
  EXPECT_EQ(pop_all(queue, kT0 + 12ms), (std::vector<std::uint32_t>{2, 3}));
  EXPECT_EQ(queue.next_deadline(), kT0 + 13ms);
  queue.arm(2, kT0 + 4ms);
  queue.arm(1, kT0 + 4ms);  // re-arm of the tail itself
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(pop_all(queue, kT0 + 14ms), (std::vector<std::uint32_t>{2, 1}));
}

TEST(TimerQueue, RearmOfAMiddleSlotKeepsItsNeighboursLinked) {
  TimerQueue queue(8, 10ms);
  for (std::uint32_t slot = 0; slot < 5; ++slot)
    queue.arm(slot, kT0 + std::chrono::milliseconds(slot));
  queue.arm(2, kT0 + 5ms);
  EXPECT_EQ(queue.size(), 5u);
  EXPECT_EQ(pop_all(queue, kT0 + 1h), (std::vector<std::uint32_t>{0, 1, 3, 4, 2}));
}

TEST(TimerQueue, DisarmRemovesHeadMiddleAndTail) {
  TimerQueue queue(8, 10ms);
  for (std::uint32_t slot = 0; slot < 6; ++slot)
    queue.arm(slot, kT0 + std::chrono::milliseconds(slot));
  queue.disarm(0);  // head
  EXPECT_EQ(queue.next_deadline(), kT0 + 11ms);
  queue.disarm(3);  // middle
  queue.disarm(5);  // tail
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_FALSE(queue.armed(0));
  EXPECT_FALSE(queue.armed(3));
  EXPECT_FALSE(queue.armed(5));
  queue.arm(0, kT0 + 6ms);  // after the tail was removed, appending must still link correctly
  EXPECT_EQ(pop_all(queue, kT0 + 1h), (std::vector<std::uint32_t>{1, 2, 4, 0}));
}

TEST(TimerQueue, DisarmOfAnUnarmedSlotIsHarmless) {
  TimerQueue queue(4, 10ms);
  queue.disarm(0);  // never armed
  queue.disarm(0);  // twice
  EXPECT_EQ(queue.size(), 0u);
  queue.arm(1, kT0);
  queue.disarm(2);
  queue.disarm(1);
  queue.disarm(1);  // already disarmed
  EXPECT_EQ(queue.size(), 0u);
  EXPECT_EQ(queue.next_deadline(), std::nullopt);
  queue.arm(3, kT0 + 1ms);
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.next_deadline(), kT0 + 11ms);
}

TEST(TimerQueue, SingleSlotCapacityAndTheLastSlotOfALargeQueue) {
  TimerQueue one(1, 1ns);
  one.arm(0, kT0);
  one.arm(0, kT0);
  EXPECT_EQ(one.size(), 1u);
  EXPECT_EQ(one.pop_expired(kT0 + 1ns), std::optional<std::uint32_t>(0));

  TimerQueue large(20'000, 1s);
  large.arm(19'999, kT0);
  large.arm(0, kT0);
  EXPECT_EQ(pop_all(large, kT0 + 1s), (std::vector<std::uint32_t>{19'999, 0}));
}

TEST(TimerQueue, ZeroDurationExpiresAtTheArmingInstant) {
  TimerQueue queue(2, 0ns);
  queue.arm(1, kT0);
  EXPECT_EQ(queue.next_deadline(), kT0);
  EXPECT_EQ(queue.pop_expired(kT0), std::optional<std::uint32_t>(1));
}

TEST(TimerQueue, ArmAtFiresAtTheFirstLaneDeadlineAtOrAfterTheDeadlineAskedFor) {
  TimerQueue queue(4, 64ms);  // lanes of 1 ms
  EXPECT_EQ(queue.arm_at(0, kT0, kT0 + 10ms), kT0 + 10ms);  // on a lane: exact
  EXPECT_EQ(queue.arm_at(1, kT0, kT0 + 10ms + 1ns), kT0 + 11ms);
  EXPECT_EQ(queue.arm_at(2, kT0, kT0 + 1ns), kT0 + 1ms);
  EXPECT_EQ(queue.arm_at(3, kT0, kT0 + 1h), kT0 + 64ms);  // beyond the duration: the duration
  EXPECT_EQ(queue.size(), 4u);
  EXPECT_EQ(queue.deadline(1), kT0 + 11ms);
  EXPECT_EQ(pop_all(queue, kT0 + 11ms), (std::vector<std::uint32_t>{2, 0, 1}));
  EXPECT_EQ(queue.next_deadline(), kT0 + 64ms);
  // Re-armed from another lane into the full one, and back.
  queue.arm_at(3, kT0 + 20ms, kT0 + 30ms);
  EXPECT_EQ(queue.next_deadline(), kT0 + 30ms);
  queue.arm(3, kT0 + 20ms);
  EXPECT_EQ(queue.next_deadline(), kT0 + 84ms);
  queue.disarm(3);
  EXPECT_EQ(queue.next_deadline(), std::nullopt);
}

TEST(TimerQueue, ArmAtNeverFiresEarlyAndAtMostOneLaneLate) {
  const std::chrono::nanoseconds duration = 1000ms;
  TimerQueue queue(1, duration);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10'000; ++i) {
    const auto left = std::chrono::nanoseconds(1 + rng() % 1'000'000'000);
    const TimePoint fires = queue.arm_at(0, kT0, kT0 + left);
    ASSERT_GE(fires, kT0 + left);
    ASSERT_LT(fires - (kT0 + left), duration / TimerQueue::kLanes);
    ASSERT_EQ(queue.next_deadline(), fires);
  }
}

TEST(TimerQueue, EqualDeadlinesInSeveralLanesPopShorterLaneFirstThenArmingOrder) {
  TimerQueue queue(8, 64ms);
  queue.arm(0, kT0);                         // full lane, kT0 + 64 ms
  queue.arm_at(1, kT0 + 32ms, kT0 + 64ms);   // the 32 ms lane
  queue.arm_at(2, kT0 + 63ms, kT0 + 64ms);   // the 1 ms lane
  queue.arm_at(3, kT0 + 63ms, kT0 + 63500us);  // the 1 ms lane, armed after slot 2
  EXPECT_EQ(pop_all(queue, kT0 + 64ms), (std::vector<std::uint32_t>{2, 3, 1, 0}));
}

// arm_from(): start + duration exactly, in deadline order among timers armed from now (ties: in
// arming order), whether the start is the latest yet or earlier than the tail's.
TEST(TimerQueue, ArmFromFiresAtStartPlusDurationInOrderWithTheOthers) {
  TimerQueue queue(8, 10ms);
  queue.arm(0, kT0);                 // kT0 + 10ms
  queue.arm(1, kT0 + 4ms);           // kT0 + 14ms
  queue.arm_from(2, kT0 + 2ms);      // kT0 + 12ms: walks back past slot 1
  queue.arm_from(3, kT0 - 1ms);      // kT0 + 9ms: the new front
  queue.arm_from(4, kT0 + 4ms);      // kT0 + 14ms: after slot 1, armed before it
  queue.arm(5, kT0 + 5ms);           // kT0 + 15ms: still appended at the tail
  EXPECT_EQ(queue.next_deadline(), kT0 + 9ms);
  EXPECT_EQ(pop_all(queue, kT0 + 12ms - 1ns), (std::vector<std::uint32_t>{3, 0}));
  EXPECT_EQ(pop_all(queue, kT0 + 12ms), (std::vector<std::uint32_t>{2}));
  queue.arm_from(2, kT0 + 6ms);      // re-armed: moves
  EXPECT_EQ(pop_all(queue, kT0 + 16ms), (std::vector<std::uint32_t>{1, 4, 5, 2}));
  EXPECT_EQ(queue.size(), 0u);
  queue.arm_from(6, kT0);            // an empty queue
  EXPECT_EQ(queue.next_deadline(), kT0 + 10ms);
}

// The reference: deadline per slot, plus an order key (deadline, lane, arming sequence) for
// popping; arm() uses the last lane, arm_at() the one the documented rounding picks. The lane
// key is 1 + the lane; set_duration() gives every armed timer key (deadline, 0, renumbered in
// pop order): timers armed before a change pop before later ones with the same deadline.
class ReferenceTimers {
 public:
  explicit ReferenceTimers(std::chrono::nanoseconds duration) : duration_(duration) {}

  void set_duration(std::chrono::nanoseconds duration) {
    if (duration == duration_) return;
    duration_ = duration;
    std::map<Key, std::uint32_t> old;
    old.swap(by_order_);
    for (const auto& [key, slot] : old) {
      const Key renumbered{std::get<0>(key), 0u, ++sequence_};
      by_slot_[slot] = renumbered;
      by_order_[renumbered] = slot;
    }
  }

  void arm(std::uint32_t slot, TimePoint now) { insert(slot, now + duration_, kFull); }
  void arm_from(std::uint32_t slot, TimePoint start) { insert(slot, start + duration_, kFull); }
  void arm_at(std::uint32_t slot, TimePoint now, TimePoint deadline) {
    const auto tick = duration_ / TimerQueue::kLanes;
    if (tick == 0ns) return arm(slot, now);
    const auto ticks = (deadline - now + tick - 1ns) / tick;
    if (ticks >= TimerQueue::kLanes) return arm(slot, now);
    insert(slot, now + tick * ticks, static_cast<unsigned>(ticks - 1));
  }
  void insert(std::uint32_t slot, TimePoint deadline, unsigned lane) {
    disarm(slot);
    const Key key{deadline, lane + 1, ++sequence_};
    by_slot_[slot] = key;
    by_order_[key] = slot;
  }
  void disarm(std::uint32_t slot) {
    auto it = by_slot_.find(slot);
    if (it == by_slot_.end()) return;
    by_order_.erase(it->second);
    by_slot_.erase(it);
  }
  bool armed(std::uint32_t slot) const { return by_slot_.count(slot) != 0; }
  std::optional<TimePoint> next_deadline() const {
    if (by_order_.empty()) return std::nullopt;
    return std::get<0>(by_order_.begin()->first);
  }
  std::optional<std::uint32_t> pop_expired(TimePoint now) {
    if (by_order_.empty() || std::get<0>(by_order_.begin()->first) > now) return std::nullopt;
    const std::uint32_t slot = by_order_.begin()->second;
    disarm(slot);
    return slot;
  }
  std::size_t size() const { return by_slot_.size(); }

 private:
  static constexpr unsigned kFull = TimerQueue::kLanes - 1;
  using Key = std::tuple<TimePoint, unsigned, std::uint64_t>;
  std::map<std::uint32_t, Key> by_slot_;
  std::map<Key, std::uint32_t> by_order_;
  std::chrono::nanoseconds duration_;
  std::uint64_t sequence_ = 0;
};

class TimerQueueModel : public testing::TestWithParam<std::uint64_t> {};

TEST_P(TimerQueueModel, RandomOperationsMatchAStdMapReference) {
  std::mt19937_64 rng(GetParam());
  const std::uint32_t capacity = 1 + static_cast<std::uint32_t>(rng() % 64);
  const auto duration = std::chrono::microseconds(rng() % 2000);  // 0 included
  TimerQueue queue(capacity, duration);
  ReferenceTimers reference(duration);
  TimePoint now = kT0;
  for (int step = 0; step < 5000; ++step) {
    const std::uint32_t slot = static_cast<std::uint32_t>(rng() % capacity);
    switch (rng() % 10) {
      case 9:
        if (rng() % 8 == 0) {  // Manager::reconfigure(): rare, shorter or longer
          const auto changed = std::chrono::microseconds(rng() % 2000);
          queue.set_duration(changed);
          reference.set_duration(changed);
          ASSERT_EQ(queue.duration(), changed);
        }
        break;
      case 0:
      case 1:
      case 2:
        queue.arm(slot, now);
        reference.arm(slot, now);
        break;
      case 8:
        if (rng() % 2 == 0) {
          const TimePoint deadline = now + 1ns + std::chrono::nanoseconds(rng() % 2'100'000);
          queue.arm_at(slot, now, deadline);
          reference.arm_at(slot, now, deadline);
        } else {  // a start in the past, up to two durations back: due already, or not
          const TimePoint start = now - std::chrono::nanoseconds(rng() % 4'000'000);
          queue.arm_from(slot, start);
          reference.arm_from(slot, start);
        }
        break;
      case 3:
      case 4:
        queue.disarm(slot);
        reference.disarm(slot);
        break;
      case 5:
        now += std::chrono::microseconds(rng() % 600);  // often 0: time may stand still
        break;
      case 6: {
        const auto popped = queue.pop_expired(now);
        ASSERT_EQ(popped, reference.pop_expired(now)) << "step " << step;
        break;
      }
      case 7: {
        // Pop everything due: the same slots in the same order.
        std::vector<std::uint32_t> got;
        std::vector<std::uint32_t> want;
        while (auto s = queue.pop_expired(now)) got.push_back(*s);
        while (auto s = reference.pop_expired(now)) want.push_back(*s);
        ASSERT_EQ(got, want) << "step " << step;
        break;
      }
    }
    ASSERT_EQ(queue.size(), reference.size()) << "step " << step;
    ASSERT_EQ(queue.next_deadline(), reference.next_deadline()) << "step " << step;
    ASSERT_EQ(queue.armed(slot), reference.armed(slot)) << "step " << step << " slot " << slot;
  }
  for (std::uint32_t slot = 0; slot < capacity; ++slot) {
    ASSERT_EQ(queue.armed(slot), reference.armed(slot)) << "slot " << slot;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, TimerQueueModel, testing::Range<std::uint64_t>(1, 65));

// A shorter duration: the timers armed after it fire before older ones still armed, each
// exactly at its deadline; the old ones keep theirs. Then a longer one, the same.
TEST(TimerQueue, SetDurationKeepsArmedDeadlinesAndOrdersNewOnesOnTime) {
  TimerQueue queue(8, 100ms);
  queue.arm(0, kT0);          // kT0 + 100 ms
  queue.arm(1, kT0 + 10ms);   // kT0 + 110 ms
  queue.set_duration(20ms);
  EXPECT_EQ(queue.duration(), 20ms);
  EXPECT_EQ(queue.deadline(0), kT0 + 100ms);
  EXPECT_EQ(queue.deadline(1), kT0 + 110ms);
  queue.arm(2, kT0 + 20ms);   // kT0 + 40 ms: before both
  queue.arm(3, kT0 + 85ms);   // kT0 + 105 ms: between them
  queue.set_duration(500ms);
  queue.arm(4, kT0 + 30ms);   // kT0 + 530 ms
  queue.arm(5, kT0 + 35ms);   // kT0 + 535 ms
  queue.set_duration(500ms);  // unchanged: nothing moves
  queue.arm(6, kT0 + 36ms);   // kT0 + 536 ms
  EXPECT_EQ(queue.size(), 7u);
  const std::vector<std::pair<TimePoint, std::uint32_t>> expected{
      {kT0 + 40ms, 2},  {kT0 + 100ms, 0}, {kT0 + 105ms, 3}, {kT0 + 110ms, 1},
      {kT0 + 530ms, 4}, {kT0 + 535ms, 5}, {kT0 + 536ms, 6}};
  for (const auto& [deadline, slot] : expected) {
    EXPECT_EQ(queue.next_deadline(), deadline);
    EXPECT_EQ(queue.pop_expired(deadline - 1ns), std::nullopt) << "slot " << slot << " early";
    EXPECT_EQ(queue.pop_expired(deadline), std::optional<std::uint32_t>(slot));
  }
  EXPECT_EQ(queue.size(), 0u);
}

// Re-arming or disarming a timer armed before the change takes it out of the old ones; arm_at
// after a change rounds to the new duration's lanes (at most new duration / 64 late).
TEST(TimerQueue, SetDurationThenRearmDisarmAndArmAt) {
  TimerQueue queue(8, 640ms);
  queue.arm(0, kT0);
  queue.arm(1, kT0);
  queue.arm(2, kT0);
  queue.set_duration(64ms);
  queue.disarm(1);
  queue.arm(2, kT0 + 1ms);  // kT0 + 65 ms now
  const TimePoint asked = kT0 + 1ms + 10500us;
  const TimePoint fires = queue.arm_at(3, kT0 + 1ms, asked);
  EXPECT_GE(fires, asked);
  EXPECT_LT(fires - asked, 1ms) << "at most 64 ms / 64 late";
  EXPECT_EQ(pop_all(queue, kT0 + 1s), (std::vector<std::uint32_t>{3, 2, 0}));
}

}  // namespace
}  // namespace ringlinger::detail
