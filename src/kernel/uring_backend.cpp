#include "kernel/uring_backend.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <system_error>

#include "core/assert.hpp"
#include "core/op_table.hpp"
#include "kernel/receive_limit.hpp"
#include "kernel/socket_calls.hpp"

namespace ringlinger::detail {
namespace {

constexpr std::uint16_t kReceiveGroup = 0;
// The multishot drain's buffers: entries of the discard area, given back at each part (so in use
// only between a part's posting and its handling, in one loop step). A part that finds none ends
// its receive with ENOBUFS, which the engine starts again. 16 bytes each: 64 KiB in all.
// Their one id comes after every id of the receive buffers (kMaxReceiveBufferCount).
constexpr std::uint16_t kDrainGroup = 1;
constexpr std::uint32_t kDrainBufferCount = 4096;
constexpr std::uint16_t kDrainBufferId = kMaxReceiveBufferCount;

std::atomic<bool> drain_without_multishot{false};
std::atomic<std::uint32_t> drain_buffer_count{kDrainBufferCount};

std::uint32_t completion_queue_entries(const Config& config) {
  // Four per submission queue entry, and at least one per two connections: each step reaps
  // everything, and at any moment only a fraction of the connections complete a request. A
  // burst beyond that is kept by the kernel (IORING_FEAT_NODROP) and flushed by the next wait.
  // 16 bytes per entry: three per connection would cost 48 bytes per connection.
  const std::uint64_t wanted = std::max<std::uint64_t>(std::uint64_t{config.ring_entries} * 4,
                                                       std::uint64_t{config.max_connections} / 2);
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(std::bit_ceil(wanted), 65536));
}

}  // namespace

UringBackend::UringBackend(const Config& config, Stats& stats)
    : Backend(stats),
      ring_({config.ring_entries, completion_queue_entries(config), config.defer_taskrun,
             config.batch_wait_us},
            stats),
      buffers_(ring_, kReceiveGroup, config.receive_buffer_count, config.receive_buffer_bytes) {
  if (!drain_without_multishot.load(std::memory_order_relaxed) &&
      multishot_receive_stops_at_limit()) {
    drain_buffers_.emplace(ring_, kDrainGroup, drain_buffer_count.load(std::memory_order_relaxed),
                           kDiscardChunkBytes, discard_area_, kDrainBufferId);
  }
  description_ =
      "io_uring " + ring_.describe_flags() + (drain_buffers_ ? " +multishot drain" : "");
}

void UringBackend::drain_without_multishot_for_testing(bool without) noexcept {
  drain_without_multishot.store(without, std::memory_order_relaxed);
}

void UringBackend::drain_buffers_for_testing(std::uint32_t count) noexcept {
  drain_buffer_count.store(count != 0 ? count : kDrainBufferCount, std::memory_order_relaxed);
}

UringBackend::~UringBackend() {
  if (notification_fd_ >= 0) ::close(notification_fd_);  // unregistered when the ring exits
}

// --- the step ---------------------------------------------------------------------------------

void UringBackend::step(std::chrono::nanoseconds timeout, TimePoint& now) {
  if (held_sends_) hand_over_held_sends(now);
  // Worth waiting for: completions for half the open connections (a close takes about six).
  // With few connections every completion matters to a peer that waits; with thousands, each
  // wake-up should carry dozens of closes (one io_uring_enter per 25 closes at 1000
  // connections); batch_wait_us bounds the wait either way.
  const auto open = static_cast<unsigned>(std::min<std::size_t>(engine_->live_connections(),
                                                                Ring::kMaxBatchCompletions * 2));
  ring_.submit_and_wait(timeout, open / 2);  // the step's waiting io_uring_enter
  now = Engine::Clock::now();
  handle_ready(now);
}

// A few rounds at most: a round's completions can make more such sends (a new connection's
// request, found at once with a deferred accept, answered and closed); the last ones go with the
// step's wait.
void UringBackend::hand_over_held_sends(TimePoint& now) {
  constexpr int kRounds = 4;
  for (int round = 0; round < kRounds && held_sends_; ++round) {
    held_sends_ = false;
    ring_.submit_and_wait(std::chrono::nanoseconds(0));
    now = Engine::Clock::now();
    handle_ready(now);
  }
}

void UringBackend::handle_ready(TimePoint now) {
  // Callbacks do not throw, so every completion read here is handled before the release.
  const Ring::Ready ready = ring_.ready();
  for (const std::span<const io_uring_cqe> piece : {ready.first, ready.second}) {
    for (const io_uring_cqe& cqe : piece) {
      // Decoded once. A connection's request, whichever its op (the op table says whose it is),
      // is the engine's: five of a close's six completions, handled here without another call.
      const OpTag tag = decode(cqe.user_data);
      if (kConnectionOpByte[static_cast<std::uint8_t>(tag.op)]) [[likely]] {
        complete_connection_request(tag, cqe, now);
      } else {
        dispatch(tag, cqe, now);
      }
    }
  }
  ring_.release(ready);
}

// The rest: listeners, file sends and the wake pipe. The accepts first, one per connection; the
// wake out of line, so that dispatch() saves no registers for the host's queues (an accept's
// dispatch 24 -> 10 instructions, bench/callgrind.sh).
void UringBackend::dispatch(OpTag tag, const io_uring_cqe& cqe, TimePoint now) {
  if (tag.op == Op::accept) return handle_accept(tag, cqe.res, cqe.flags, now);
  if (tag.op == Op::listen_poll) return handle_listen_poll(tag, cqe.res, cqe.flags, now);
  if (tag.op == Op::accept_cancel) return handle_accept_cancel(tag);
  if (tag.op == Op::send_file_poll) return complete_file_send(cqe, now);
  RL_ASSERT(tag.op == Op::wake && "a completion with an unknown op in its user_data");
  handle_wake(cqe.res);
}

void UringBackend::handle_wake(int result) {
  // The read took the counter. Armed again before the host looks at the queue, so a handoff
  // queued after this point wakes the next wait.
  if (result >= 0 || result == -EINTR || result == -EAGAIN) arm_wake();
  host_->on_wake();
}

// A buffer is given back whether or not the connection still exists: a delivering receive's
// after its bytes were handled, a drain's at once (MSG_TRUNC: it holds nothing). Only a drain's
// receive is multishot, and each of its parts took a buffer: so IORING_CQE_F_MORE is looked at
// there, and the other completions pay nothing for it (4 instructions each when the flag was
// moved into every tag: bench/callgrind.sh).
inline void UringBackend::complete_connection_request(OpTag tag, const io_uring_cqe& cqe,
                                                      TimePoint now) {
  if ((cqe.flags & IORING_CQE_F_BUFFER) == 0) {
    return engine_->on_completion(tag, now, cqe.res, nullptr);
  }
  const auto buffer_id = static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  if (buffer_id == kDrainBufferId) {
    // A drain's part (its tag gets kPartBit), or its last one, which reached the total limit.
    RL_ASSERT(drain_buffers_.has_value());
    drain_buffers_->recycle_shared();
    if ((cqe.flags & IORING_CQE_F_MORE) != 0) tag = as_part(tag);
    return engine_->on_completion(tag, now, cqe.res, nullptr);
  }
  const std::byte* data = cqe.res > 0 ? buffers_.buffer(buffer_id).data() : nullptr;
  engine_->on_completion(tag, now, cqe.res, data);
  buffers_.recycle(buffer_id);
}

// A file send's poll: the socket is writable (or failed, or the poll was cancelled). The sendfile
// runs now; its result is the send's completion.
void UringBackend::complete_file_send(const io_uring_cqe& cqe, TimePoint now) {
  OpTag tag = decode(cqe.user_data);
  const auto it = file_sends_.find(tag.slot);
  RL_ASSERT(it != file_sends_.end() && it->second.generation == tag.generation);
  const FileSend send = it->second;
  file_sends_.erase(it);
  tag.op = Op::send;
  const int result = cqe.res < 0 ? cqe.res
                                 : send_file_now(send.socket_fd, send.file_fd, send.offset,
                                                 send.length, stats_.syscalls);
  engine_->on_completion(tag, now, result, nullptr);
}

// --- IoPort: requests become SQEs -------------------------------------------------------------
//
// A connection's request takes its SQE with try_get_sqe(). When the submission queue is full, it
// returns after_making_room<itself>(its arguments): a tail call, so that the common path saves no
// registers for a call it does not make (a push and a pop of five registers per request with
// get_sqe(), whose slow path returned into it: bench/callgrind.sh).

template <auto submit, class... Args>
[[gnu::noinline, gnu::cold]] void UringBackend::after_making_room(Args... args) {
  ring_.make_room();
  (this->*submit)(args...);
}

void UringBackend::submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) {
  io_uring_sqe* sqe = ring_.try_get_sqe();
  if (sqe == nullptr) [[unlikely]] {
    return after_making_room<&UringBackend::submit_recv>(tag, fd, mode, max_bytes);
  }
  switch (mode) {
    case RecvMode::deliver:
      // The kernel picks a buffer from the group when data arrives.
      io_uring_prep_recv(sqe, fd, nullptr, buffers_.buffer_bytes(), 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = buffers_.group();
      break;
    case RecvMode::discard:
      // MSG_TRUNC on TCP: the bytes are consumed and dropped without being copied.
      if (drain_buffers_ && max_bytes > kDiscardChunkBytes) [[likely]] {
        // The drain in one receive: parts of up to a buffer (the discard area, kDiscardChunkBytes)
        // until the peer's FIN, an error, or the total limit (receive_limit.hpp). The kernel
        // stops after the part that reaches the limit, so a limit one part short of max_bytes
        // keeps the total within it: the byte cap stays exact. Its last bytes, fewer than a part,
        // are left to a plain receive.
        io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, MSG_TRUNC);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = kDrainGroup;
        // The total limit, sqe->optlen in 6.x's headers: liburing 2.3 (6.1's) names these bytes
        // file_index, and has no helper for it.
        sqe->file_index = max_bytes - kDiscardChunkBytes + 1;
      } else {
        io_uring_prep_recv(sqe, fd, discard_area_, std::min(max_bytes, kDiscardChunkBytes),
                           MSG_TRUNC);
      }
      break;
  }
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) {
  io_uring_sqe* sqe = ring_.try_get_sqe();
  if (sqe == nullptr) [[unlikely]] {
    return after_making_room<&UringBackend::submit_send>(tag, fd, bytes, more);
  }
  // No MSG_WAITALL: a partial send completes with its count, which is progress for the send
  // timeout (a slow reader is not a dead one); the engine sends the rest.
  io_uring_prep_send(sqe, fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | (more ? MSG_MORE : 0));
  io_uring_sqe_set_data64(sqe, encode(tag));
  last_send_ = sqe;
}

bool UringBackend::fin_follows(OpTag tag) {
  // Only while the send is still ours to change: its slot may hold another request by now.
  if (last_send_ == nullptr || !ring_.unsubmitted(last_send_) ||
      last_send_->user_data != encode(tag)) {
    return false;
  }
  last_send_->msg_flags |= MSG_MORE;
  held_sends_ = true;
  return true;
}

bool UringBackend::submit_final_send(OpTag tag, int fd, std::span<const std::byte> bytes) {
  submit_send(tag, fd, bytes, /*more=*/true);  // MSG_MORE: held for the FIN, as fin_follows()
  held_sends_ = true;
  return true;
}

void UringBackend::push_held(int fd) { push_pending(fd, stats_.syscalls); }

void UringBackend::submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                                    std::uint32_t length) {
  // io_uring has no sendfile; IORING_OP_SPLICE would need a pipe per connection and always runs
  // on an io-wq thread. So: wait for writability in the ring, then sendfile(2) inline (zero-copy,
  // non-blocking), whose result is this request's completion.
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_poll_add(sqe, fd, POLLOUT);
  io_uring_sqe_set_data64(sqe, encode({Op::send_file_poll, tag.generation, tag.slot}));
  file_sends_[tag.slot] = FileSend{tag.generation, fd, file_fd, offset, length};
}

void UringBackend::submit_shutdown(OpTag tag, int fd) {
  io_uring_sqe* sqe = ring_.try_get_sqe();
  if (sqe == nullptr) [[unlikely]] return after_making_room<&UringBackend::submit_shutdown>(tag, fd);
  io_uring_prep_shutdown(sqe, fd, SHUT_WR);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_cancel(OpTag tag, int fd) {
  io_uring_sqe* sqe = ring_.try_get_sqe();
  if (sqe == nullptr) [[unlikely]] return after_making_room<&UringBackend::submit_cancel>(tag, fd);
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_close(OpTag tag, int fd) { prepare_close(tag, fd, 0); }

// One completion fewer per close. The SQE goes out with the step's next io_uring_enter (or
// Ring::submit_prepared() when the loop ends first), after every SQE prepared before it.
bool UringBackend::submit_close_unreported(OpTag tag, int fd) {
  if (!ring_.skips_successes()) [[unlikely]] return false;
  prepare_close(tag, fd, IOSQE_CQE_SKIP_SUCCESS);
  return true;
}

inline void UringBackend::prepare_close(OpTag tag, int fd, std::uint8_t sqe_flags) {
  io_uring_sqe* sqe = ring_.try_get_sqe();
  if (sqe == nullptr) [[unlikely]] {
    return after_making_room<&UringBackend::prepare_close>(tag, fd, sqe_flags);
  }
  io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data64(sqe, encode(tag));
  sqe->flags |= sqe_flags;
}

// --- waking and the host's event loop ----------------------------------------------------------

void UringBackend::watch_wake(int fd) {
  RL_ASSERT(wake_fd_ < 0 && fd >= 0);
  wake_fd_ = fd;
  arm_wake();
}

// A read of the wake pipe, in the ring: it completes when another thread writes to the pipe,
// which ends the manager's wait like any other completion (up to 64 pending wake bytes at once).
void UringBackend::arm_wake() {
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_read(sqe, wake_fd_, wake_bytes_.data(), wake_bytes_.size(), 0);
  io_uring_sqe_set_data64(sqe, encode({Op::wake, 0, 0}));
}

int UringBackend::notification_fd() {
  if (notification_fd_ >= 0) return notification_fd_;
  // Created readable: work may have been queued before it was registered, which the kernel
  // does not signal; the host's first wait then returns at once and its poll() takes that work.
  const int fd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "eventfd");
  // The kernel signals it whenever completions are posted and, with DEFER_TASKRUN, whenever
  // work is queued that the next io_uring_enter would turn into completions.
  if (const int result = io_uring_register_eventfd(&ring_.raw(), fd); result < 0) {
    ::close(fd);
    throw std::system_error(-result, std::system_category(), "IORING_REGISTER_EVENTFD");
  }
  notification_fd_ = fd;
  return fd;
}

void UringBackend::clear_notification() {
  if (notification_fd_ < 0) return;
  std::uint64_t count = 0;
  ++stats_.syscalls;
  (void)!::read(notification_fd_, &count, sizeof(count));  // EAGAIN: nothing was signalled
}

bool UringBackend::has_unsubmitted_work() const {
  io_uring& raw = const_cast<Ring&>(ring_).raw();
  // Prepared requests, or completions the kernel holds back because the queue overflowed.
  return io_uring_sq_ready(&raw) > 0 ||
         (IO_URING_READ_ONCE(*raw.sq.kflags) & IORING_SQ_CQ_OVERFLOW) != 0;
}

// --- listeners: a multishot poll each, and accepts that do not wait ---------------------------
//
// A listener waits for connections with a multishot poll (POLLIN). When it reports some, one
// multishot accept with IORING_ACCEPT_DONTWAIT drains the backlog: it accepts while connections
// are queued, one completion each, and ends with -EAGAIN instead of waiting. A multishot accept
// that waits would be simpler, but its poll is exclusive (opdef.c: poll_exclusive), and the kernel
// wakes the waiting thread at once for every event of an exclusive poll (REQ_F_POLL_NO_LAZY):
// each new connection cut the batched wait short. Measured on 6.18 (serve, 100000 connections,
// 1000 at a time): 0.19-0.55 context switches per close with the waiting accept, 0.02 this way,
// and 14-22 % less CPU per close (docs/PERFORMANCE.md, "Waiting for connections"). A kernel without
// IORING_ACCEPT_DONTWAIT (before 6.10) fails that accept with EINVAL; from then on the backlog is
// drained with accept4(2), as the epoll backend does.

// IORING_ACCEPT_DONTWAIT (kernel 6.10), in the accept's ioprio; liburing 2.3 does not name it.
constexpr std::uint16_t kAcceptDontWait = 1u << 1;
// An accept flag no kernel defines (6.18 knows bits 0-2): refused with EINVAL, as a kernel before
// 6.10 refuses kAcceptDontWait.
constexpr std::uint16_t kUnknownAcceptFlag = 1u << 15;
namespace {
std::atomic<bool> refuse_accept_dontwait{false};
}  // namespace

void UringBackend::refuse_accept_dontwait_for_testing(bool refuse) noexcept {
  refuse_accept_dontwait.store(refuse, std::memory_order_relaxed);
}

int UringBackend::watch_listener(std::uint32_t index) {
  arm_accept(index);
  return 0;
}

void UringBackend::accept_again(std::uint32_t index, TimePoint /*now*/) { arm_accept(index); }

void UringBackend::stop_accepting(std::uint32_t index) { pause_accept(index); }

void UringBackend::arm_accept(std::uint32_t index) {
  ListenerTable::Listener& listener = listeners_[index];
  RL_ASSERT(listener.fd >= 0 && !listener.accepting() && !listener.cancelling);
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_poll_multishot(sqe, listener.fd, POLLIN);
  io_uring_sqe_set_data64(sqe, encode({Op::listen_poll, 0, index}));
  listeners_.set_accepting(index, true);
}

void UringBackend::pause_accept(std::uint32_t index) {
  ListenerTable::Listener& listener = listeners_[index];
  if (!listener.accepting() || listener.cancelling) return;
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_cancel64(sqe, encode({Op::listen_poll, 0, index}), 0);
  io_uring_sqe_set_data64(sqe, encode({Op::accept_cancel, 0, index}));
  listener.cancelling = true;
}

// The poll reports connections in the backlog (or it ended: cancelled, or an error).
void UringBackend::handle_listen_poll(OpTag tag, int result, unsigned flags, TimePoint now) {
  ListenerTable::Listener& listener = listeners_[tag.slot];
  RL_ASSERT(listener.accepting());
  if ((flags & IORING_CQE_F_MORE) == 0) listeners_.set_accepting(tag.slot, false);
  if (result < 0) {
    if (result != -ECANCELED) listeners_.accept_failed(tag.slot, now);
  } else if (!host_->can_accept()) {
    pause_accept(tag.slot);  // full: leave them in the backlog
  } else if (!listener.draining && !listener.cancelling) {
    drain_backlog(tag.slot, now);  // one drain at a time: a running one takes these too
  }
  listeners_.close_if_idle(tag.slot);
}

void UringBackend::drain_backlog(std::uint32_t index, TimePoint now) {
  if (!accept_dontwait_) {
    // A failure is counted and backed off; the poll would report the same backlog at once.
    if (accept_backlog(index, now) != Backlog::drained) pause_accept(index);
    return;
  }
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_multishot_accept(sqe, listeners_[index].fd, nullptr, nullptr,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
  sqe->ioprio |= kAcceptDontWait;
  if (refuse_accept_dontwait.load(std::memory_order_relaxed)) sqe->ioprio |= kUnknownAcceptFlag;
  io_uring_sqe_set_data64(sqe, encode({Op::accept, 0, index}));
  listeners_[index].draining = true;
}

// One connection of a drain (IORING_CQE_F_MORE), or its end: -EAGAIN when the backlog is empty.
// A connection with more to come, nearly every accept, is handed over here, with no more live
// across the host's call than the listener's index: the drain's end and the errors are
// handle_accept_end()'s (their registers cost 14 instructions per accept before).
void UringBackend::handle_accept(OpTag tag, int result, unsigned flags, TimePoint now) {
  RL_ASSERT(listeners_[tag.slot].draining);
  if (result >= 0 && (flags & IORING_CQE_F_MORE) != 0) [[likely]] {
    // No close_if_idle(): with IORING_CQE_F_MORE the drain goes on, so the listener is not idle;
    // the drain's last completion (handle_accept_end) looks.
    if (!host_->on_accepted(result, now)) pause_accept(tag.slot);
    return;
  }
  handle_accept_end(tag, result, flags, now);
}

void UringBackend::handle_accept_end(OpTag tag, int result, unsigned flags, TimePoint now) {
  ListenerTable::Listener& listener = listeners_[tag.slot];
  const bool ended = (flags & IORING_CQE_F_MORE) == 0;
  if (ended) listener.draining = false;
  if (result >= 0) {
    // The drain goes on while connections are queued, even past a full table: the manager keeps
    // those until a slot frees up (Stats::accepts_queued). The poll is paused meanwhile.
    if (!host_->on_accepted(result, now)) pause_accept(tag.slot);
  } else if (result == -EINVAL) {
    accept_dontwait_ = false;  // before 6.10: accept4(2) from now on
  } else if (result != -EAGAIN && result != -ECONNABORTED && result != -EINTR) {
    listeners_.accept_failed(tag.slot, now);  // EMFILE, ENFILE...: after a pause, the poll again
    pause_accept(tag.slot);
    return listeners_.close_if_idle(tag.slot);
  }
  // Ended before the backlog was empty (a full completion queue ends a multishot accept early,
  // and the poll reports only connections that arrive later): drain again.
  if (ended && result != -EAGAIN && listener.accepting() && !listener.cancelling &&
      host_->can_accept()) {
    drain_backlog(tag.slot, now);
  }
  listeners_.close_if_idle(tag.slot);
}

void UringBackend::handle_accept_cancel(OpTag tag) {
  listeners_[tag.slot].cancelling = false;
  listeners_.close_if_idle(tag.slot);
}

}  // namespace ringlinger::detail
