#include "deadline_fifo.hpp"

#include <algorithm>

namespace ringlinger::tools {

DeadlineFifo::DeadlineFifo(std::chrono::milliseconds timeout, std::uint32_t capacity)
    : timeout_(timeout), entries_(timeout.count() > 0 ? capacity : 0) {}

void DeadlineFifo::add(ConnectionId id, Clock::time_point now) {
  if (timeout_.count() <= 0) return;
  Entry& entry = entries_.at(id.slot);
  if (entry.linked) unlink(id.slot);
  entry.at = now + timeout_;
  entry.generation = id.generation;
  entry.previous = back_;
  entry.next = kNone;
  entry.linked = true;
  (back_ == kNone ? front_ : entries_[back_].next) = id.slot;
  back_ = id.slot;
  ++size_;
}

void DeadlineFifo::unlink(std::uint32_t slot) noexcept {
  Entry& entry = entries_[slot];
  (entry.previous == kNone ? front_ : entries_[entry.previous].next) = entry.next;
  (entry.next == kNone ? back_ : entries_[entry.next].previous) = entry.previous;
  entry = Entry{};
  --size_;
}

std::chrono::milliseconds DeadlineFifo::wait(std::chrono::milliseconds longest) const {
  if (front_ == kNone) return longest;
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(entries_[front_].at - Clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), longest);
}

void DeadlineFifo::expire(Clock::time_point now,
                          const std::function<void(ConnectionId)>& expired) {
  while (front_ != kNone && entries_[front_].at <= now) {
    const ConnectionId id{front_, entries_[front_].generation};
    unlink(front_);
    expired(id);
  }
}

}  // namespace ringlinger::tools
