#include "kernel/epoll_backend.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "core/assert.hpp"
#include "kernel/socket_calls.hpp"

namespace ringlinger::detail {
namespace {

// epoll_event.data: bit 63 marks a listener; otherwise slot (low 32 bits) and generation.
constexpr std::uint64_t kListenerBit = std::uint64_t{1} << 63;
// epoll_event.data of the manager's wake pipe.
constexpr std::uint64_t kWakeData = std::uint64_t{1} << 62;
// Requests one attempt may complete for one slot before the others get their turn (a peer that
// floods must not keep the loop on its connection).
constexpr int kRequestsPerAttempt = 8;
// Rounds of attempts per step: requests submitted by completion handlers run in the same step.
constexpr int kAttemptRounds = 4;

std::uint64_t event_data(std::uint32_t slot, std::uint32_t generation) {
  return (std::uint64_t{generation} << 32) | slot;
}

}  // namespace

EpollBackend::EpollBackend(const Config& config, Stats& stats)
    : Backend(stats),
      slots_(config.max_connections),
      events_(std::min<std::uint32_t>(config.max_connections, 4096) + 16),
      receive_buffer_(config.receive_buffer_bytes) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::system_category(), "epoll_create1");
  attempts_.reserve(config.max_connections);
  attempting_.reserve(config.max_connections);
  description_ = "epoll (edge-triggered)";
}

EpollBackend::~EpollBackend() { ::close(epoll_fd_); }

// --- the step ---------------------------------------------------------------------------------

void EpollBackend::step(std::chrono::nanoseconds timeout, TimePoint& now) {
  // With attempts waiting, only look for new events; otherwise sleep until one or the timeout.
  if (!attempts_.empty()) timeout = std::chrono::nanoseconds(0);
  timespec wait{static_cast<time_t>(timeout.count() / 1'000'000'000),
                static_cast<long>(timeout.count() % 1'000'000'000)};
  ++stats_.syscalls;
  const int count = epoll_pwait2(epoll_fd_, events_.data(), static_cast<int>(events_.size()),
                                 &wait, nullptr);
  now = Engine::Clock::now();
  for (int i = 0; i < count; ++i) handle_event(events_[static_cast<std::size_t>(i)], now);
  run_attempts(now);
}

void EpollBackend::handle_event(const epoll_event& event, TimePoint now) {
  if (event.data.u64 == kWakeData) {
    char bytes[64];
    ++stats_.syscalls;
    while (::read(wake_fd_, bytes, sizeof(bytes)) == sizeof(bytes)) ++stats_.syscalls;  // empty it
    host_->on_wake();
    return;
  }
  if ((event.data.u64 & kListenerBit) != 0) {
    const auto index = static_cast<std::uint32_t>(event.data.u64 & ~kListenerBit);
    listeners_.set_accepting(index, false);  // a new edge: the backlog holds connections
    accept_again(index, now);
    return;
  }
  const auto index = static_cast<std::uint32_t>(event.data.u64);
  Slot& slot = slots_[index];
  if (slot.fd < 0 || slot.generation != static_cast<std::uint32_t>(event.data.u64 >> 32)) {
    return;  // an event for a connection that was closed earlier in this step
  }
  if ((event.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) slot.readable = true;
  if ((event.events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0) slot.writable = true;
  if ((slot.recv && slot.readable) || (slot.send && slot.writable)) queue_attempt(index);
}

void EpollBackend::run_attempts(TimePoint now) {
  for (int round = 0; round < kAttemptRounds && !attempts_.empty(); ++round) {
    attempting_.swap(attempts_);
    for (std::uint32_t index : attempting_) {
      slots_[index].queued = false;
      if (!attempt(index, now)) queue_attempt(index);  // more to do: next round or next step
    }
    attempting_.clear();
  }
}

// Tries the slot's pending requests in order; returns false when it stopped with work left.
bool EpollBackend::attempt(std::uint32_t index, TimePoint now) {
  Slot& slot = slots_[index];
  for (int done = 0; done < kRequestsPerAttempt; ++done) {
    // Completion handlers may submit new requests for this slot: look again after each one.
    if (slot.cancel) {
      cancel_requests(slot, now);
    } else if (slot.close) {
      close_slot(slot, now);
      return true;
    } else if (slot.shutdown) {
      const OpTag tag = *slot.shutdown;
      slot.shutdown.reset();
      complete(tag, shutdown_now(slot.fd), now);
    } else if (slot.send && slot.writable) {
      attempt_send(slot, now);
    } else if (slot.recv && slot.readable) {
      attempt_recv(slot, now);
    } else {
      return true;  // everything left waits for epoll
    }
  }
  return false;
}

void EpollBackend::attempt_send(Slot& slot, TimePoint now) {
  const PendingSend send = *slot.send;
  std::int32_t result = 0;
  if (send.file_fd >= 0) {
    result = send_file_now(slot.fd, send.file_fd, send.file_offset, send.file_length,
                           stats_.syscalls);
  } else {
    ++stats_.syscalls;
    const ssize_t sent = ::send(slot.fd, send.bytes.data(), send.bytes.size(),
                                MSG_NOSIGNAL | MSG_DONTWAIT | (send.more ? MSG_MORE : 0));
    result = sent < 0 ? -errno : static_cast<std::int32_t>(sent);
  }
  if (result == -EAGAIN || result == -EWOULDBLOCK) {
    slot.writable = false;
    wait_for_edge(slot);
    return;
  }
  slot.send.reset();
  complete(send.tag, result, now);
}

void EpollBackend::attempt_recv(Slot& slot, TimePoint now) {
  const PendingRecv recv = *slot.recv;
  ++stats_.syscalls;
  ssize_t received = 0;
  switch (recv.mode) {
    case RecvMode::deliver:
      received = ::recv(slot.fd, receive_buffer_.data(), receive_buffer_.size(), MSG_DONTWAIT);
      break;
    case RecvMode::discard:
      // MSG_TRUNC on TCP: the bytes are consumed and dropped without being copied.
      received = ::recv(slot.fd, discard_area_, std::min(recv.max_bytes, kDiscardChunkBytes),
                        MSG_TRUNC | MSG_DONTWAIT);
      break;
  }
  if (received < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    slot.readable = false;
    wait_for_edge(slot);
    return;
  }
  slot.recv.reset();
  if (received < 0) return complete(recv.tag, -errno, now);
  const auto bytes = static_cast<std::size_t>(received);
  std::span<const std::byte> data;
  if (recv.mode == RecvMode::deliver) data = std::span(receive_buffer_).first(bytes);
  complete(recv.tag, static_cast<std::int32_t>(received), now, data);
}

void EpollBackend::cancel_requests(Slot& slot, TimePoint now) {
  const OpTag cancel = *slot.cancel;
  slot.cancel.reset();
  std::int32_t cancelled = 0;
  if (slot.recv) {
    const OpTag tag = slot.recv->tag;
    slot.recv.reset();
    ++cancelled;
    complete(tag, -ECANCELED, now);
  }
  if (slot.send) {
    const OpTag tag = slot.send->tag;
    slot.send.reset();
    ++cancelled;
    complete(tag, -ECANCELED, now);
  }
  if (slot.shutdown) {
    const OpTag tag = *slot.shutdown;
    slot.shutdown.reset();
    ++cancelled;
    complete(tag, -ECANCELED, now);
  }
  complete(cancel, cancelled > 0 ? cancelled : -ENOENT, now);
}

void EpollBackend::close_slot(Slot& slot, TimePoint now) {
  RL_ASSERT(!slot.recv && !slot.send && !slot.shutdown && !slot.cancel);
  const OpTag tag = *slot.close;
  ++stats_.syscalls;
  const int result = ::close(slot.fd) == 0 ? 0 : -errno;  // also leaves the epoll set
  // Forget the slot before the engine hears of it: its callback may adopt into the same slot.
  slot = Slot{};
  complete(tag, result, now);
}

void EpollBackend::wait_for_edge(Slot& slot) {
  if (slot.registered) return;
  // Registered at the first EAGAIN only; adding reports the current readiness, so an edge that
  // came before the registration is not lost.
  epoll_event event{};
  event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  event.data.u64 = event_data(static_cast<std::uint32_t>(&slot - slots_.data()), slot.generation);
  ++stats_.syscalls;
  const int result = epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, slot.fd, &event);
  RL_ASSERT(result == 0 && "epoll_ctl(ADD) of a connection's socket failed");
  slot.registered = true;
}

void EpollBackend::complete(OpTag tag, std::int32_t result, TimePoint now,
                            std::span<const std::byte> data) {
  ++stats_.completions;
  engine_->on_completion(Completion{tag, result, data}, now);
}

// --- IoPort: requests are recorded, then attempted --------------------------------------------

EpollBackend::Slot& EpollBackend::slot_for(OpTag tag, int fd) {
  Slot& slot = slots_[tag.slot];
  if (slot.fd < 0) {  // the connection's first request
    slot.fd = fd;
    slot.generation = tag.generation;
  }
  RL_ASSERT(slot.fd == fd && slot.generation == tag.generation);
  return slot;
}

void EpollBackend::queue_attempt(std::uint32_t index) {
  Slot& slot = slots_[index];
  if (slot.queued) return;
  slot.queued = true;
  attempts_.push_back(index);
}

void EpollBackend::submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) {
  Slot& slot = slot_for(tag, fd);
  RL_ASSERT(!slot.recv);
  slot.recv = PendingRecv{tag, mode, max_bytes};
  ++stats_.submissions;
  if (slot.readable) queue_attempt(tag.slot);
}

void EpollBackend::submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) {
  Slot& slot = slot_for(tag, fd);
  RL_ASSERT(!slot.send);
  slot.send = PendingSend{tag, bytes, more};
  ++stats_.submissions;
  if (slot.writable) queue_attempt(tag.slot);
}

void EpollBackend::submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                                    std::uint32_t length) {
  Slot& slot = slot_for(tag, fd);
  RL_ASSERT(!slot.send);
  slot.send = PendingSend{tag, {}, false, file_fd, offset, length};
  ++stats_.submissions;
  if (slot.writable) queue_attempt(tag.slot);
}

void EpollBackend::submit_shutdown(OpTag tag, int fd) {
  Slot& slot = slot_for(tag, fd);
  slot.shutdown = tag;
  ++stats_.submissions;
  queue_attempt(tag.slot);
}

void EpollBackend::submit_cancel(OpTag tag, int fd) {
  Slot& slot = slot_for(tag, fd);
  slot.cancel = tag;
  ++stats_.submissions;
  queue_attempt(tag.slot);
}

void EpollBackend::submit_close(OpTag tag, int fd) {
  Slot& slot = slot_for(tag, fd);
  slot.close = tag;
  ++stats_.submissions;
  queue_attempt(tag.slot);
}

// --- waking and the host's event loop ----------------------------------------------------------

void EpollBackend::watch_wake(int fd) {
  RL_ASSERT(wake_fd_ < 0 && fd >= 0);
  wake_fd_ = fd;
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.u64 = kWakeData;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &event) != 0) {
    throw std::system_error(errno, std::system_category(), "epoll_ctl(wake pipe)");
  }
}

// The epoll fd itself: readable (for the host's epoll or poll) while one of ours is ready.
int EpollBackend::notification_fd() { return epoll_fd_; }

void EpollBackend::clear_notification() {}  // the step's epoll_pwait2 consumes the events

bool EpollBackend::has_unsubmitted_work() const { return !attempts_.empty(); }

// --- listeners: epoll readiness, then accept4 until EAGAIN ------------------------------------

int EpollBackend::watch_listener(std::uint32_t index) {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.u64 = kListenerBit | index;
  return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listeners_[index].fd, &event) == 0 ? 0 : errno;
}

// Nothing is ever in flight on a listener with epoll: closing it ends the wait for its edges.
void EpollBackend::stop_accepting(std::uint32_t index) { listeners_.set_accepting(index, false); }

// Accepts until the backlog is drained (EAGAIN), the host is full, or an error pauses it.
void EpollBackend::accept_again(std::uint32_t index, TimePoint now) {
  // Drained: the next connection brings a new edge. Stopped before (table full): the backlog may
  // hold more, and resume_listeners() goes on; failed: it does after the backoff.
  if (accept_backlog(index, now) == Backlog::drained) listeners_.set_accepting(index, true);
}

}  // namespace ringlinger::detail
