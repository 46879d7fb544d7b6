#include "kernel/listeners.hpp"

#include <unistd.h>

#include <algorithm>

#include "core/assert.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;

// How long a listener waits before accepting again after an error such as EMFILE.
constexpr auto kAcceptBackoff = 100ms;

}  // namespace

ListenerTable::~ListenerTable() {
  for (const Listener& listener : listeners_) {
    if (listener.fd >= 0) ::close(listener.fd);
  }
}

std::uint32_t ListenerTable::add(int fd) {
  RL_ASSERT(fd >= 0);
  listeners_.emplace_back().fd = fd;
  ++paused_;  // not accepting until its backend starts it
  return size() - 1;
}

void ListenerTable::remove_last() {
  RL_ASSERT(!listeners_.empty());
  if (!listeners_.back().accepting_) --paused_;
  ::close(listeners_.back().fd);
  listeners_.pop_back();
}

void ListenerTable::accept_failed(std::uint32_t index, TimePoint now) {
  ++stats_.accept_errors;
  listeners_[index].resume_at = now + kAcceptBackoff;
}

bool ListenerTable::may_resume(std::uint32_t index, TimePoint now) const {
  const Listener& listener = listeners_[index];
  return !closing_ && listener.fd >= 0 && !listener.accepting_ && !listener.cancelling &&
         !listener.draining && now >= listener.resume_at;
}

std::optional<ListenerTable::TimePoint> ListenerTable::next_paused_deadline(TimePoint now) const {
  std::optional<TimePoint> earliest;
  for (const Listener& listener : listeners_) {
    if (listener.fd < 0 || listener.accepting_ || listener.resume_at <= now) continue;
    if (!earliest || listener.resume_at < *earliest) earliest = listener.resume_at;
  }
  return earliest;
}

void ListenerTable::close_if_idle(std::uint32_t index) {
  Listener& listener = listeners_[index];
  if (!closing_ || listener.fd < 0 || listener.accepting_ || listener.cancelling ||
      listener.draining) {
    return;
  }
  --paused_;  // closed: no longer an open listener that is not accepting
  ++stats_.syscalls;
  ::close(listener.fd);  // nothing of ours is in flight on it any more
  listener.fd = -1;
}

bool ListenerTable::has_open() const {
  return std::any_of(listeners_.begin(), listeners_.end(),
                     [](const Listener& listener) { return listener.fd >= 0; });
}

}  // namespace ringlinger::detail
