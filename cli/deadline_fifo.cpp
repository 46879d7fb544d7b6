#include "deadline_fifo.hpp"

#include <algorithm>

namespace ringlinger::tools {

DeadlineFifo::DeadlineFifo(std::chrono::milliseconds timeout, std::uint32_t capacity)
    : timeout_(timeout), entries_(timeout.count() > 0 ? capacity : 0),
      slots_(static_cast<std::uint32_t>(entries_.size())) {}

void DeadlineFifo::add(ConnectionId id, Clock::time_point now) {
  stamp(now);  // those added before it start no later than it
  link(id, now + timeout_);
}

void DeadlineFifo::stamp(Clock::time_point now) noexcept {
  now_ = std::max(now_, now);
  for (std::uint32_t slot = first_unstamped_; slot != kNone; slot = entries_[slot].next) {
    entries_[slot].at = now + timeout_;
  }
  first_unstamped_ = kNone;
}

std::chrono::milliseconds DeadlineFifo::wait(std::chrono::milliseconds longest) const {
  if (front_ == kNone) return longest;
  // Not yet stamped: its deadline is at least a whole timeout away.
  if (entries_[front_].at == kUnstamped) return std::min(longest, timeout_);
  const auto left =
      std::chrono::ceil<std::chrono::milliseconds>(entries_[front_].at - now_);
  return std::clamp(left, std::chrono::milliseconds(1), longest);
}

void DeadlineFifo::expire(Clock::time_point now,
                          const std::function<void(ConnectionId)>& expired) {
  stamp(now);
  while (front_ != kNone && entries_[front_].at <= now) {
    const ConnectionId id{front_, entries_[front_].generation};
    unlink(front_);
    expired(id);
  }
}

}  // namespace ringlinger::tools
