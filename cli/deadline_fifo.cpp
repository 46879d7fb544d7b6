#include "deadline_fifo.hpp"

#include <algorithm>

namespace ringlinger::tools {

DeadlineFifo::DeadlineFifo(std::chrono::milliseconds timeout, std::uint32_t capacity)
    : timeout_(timeout), entries_(timeout.count() > 0 ? std::size_t{capacity} + 1 : 0),
      slots_(timeout.count() > 0 ? capacity : 0) {
  if (!entries_.empty()) end().previous = end().next = slots_;  // empty: the end alone
}

void DeadlineFifo::add(ConnectionId id, Clock::time_point now) {
  stamp(now);  // those added before it start no later than it
  link(id, now + timeout_);
}

// The unstamped entries are the back of the list: walked from there towards the front. The
// deadline is computed once: in the loop, the compiler reloaded timeout_ after every store.
void DeadlineFifo::stamp(Clock::time_point now) noexcept {
  now_ = std::max(now_, now);
  if (entries_.empty()) return;
  const Clock::time_point at = now + timeout_;
  for (std::uint32_t slot = end().previous; slot != slots_ && entries_[slot].at == kUnstamped;
       slot = entries_[slot].previous) {
    entries_[slot].at = at;
  }
}

std::uint32_t DeadlineFifo::size() const noexcept {
  std::uint32_t count = 0;
  if (entries_.empty()) return count;
  for (std::uint32_t slot = end().next; slot != slots_; slot = entries_[slot].next) ++count;
  return count;
}

std::chrono::milliseconds DeadlineFifo::wait(std::chrono::milliseconds longest) const {
  if (entries_.empty() || end().next == slots_) return longest;
  const Entry& front = entries_[end().next];
  // Not yet stamped: its deadline is at least a whole timeout away.
  if (front.at == kUnstamped) return std::min(longest, timeout_);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(front.at - now_);
  return std::clamp(left, std::chrono::milliseconds(1), longest);
}

void DeadlineFifo::expire(Clock::time_point now,
                          const std::function<void(ConnectionId)>& expired) {
  stamp(now);
  if (entries_.empty()) return;
  for (std::uint32_t front = end().next; front != slots_ && entries_[front].at <= now;
       front = end().next) {
    const ConnectionId id{front, entries_[front].generation};
    unlink(front);
    expired(id);
  }
}

}  // namespace ringlinger::tools
