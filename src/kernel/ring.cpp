#include "kernel/ring.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <string>
#include <system_error>

#include "core/assert.hpp"
#include "ringlinger/config.hpp"

namespace ringlinger::detail {
namespace {

std::string explain_setup_error(int error) {
  switch (error) {
    case EPERM:
      return "io_uring is not permitted here (sysctl kernel.io_uring_disabled, or a seccomp "
             "filter such as a container runtime's)";
    case ENOSYS:
      return "io_uring_setup is not available (kernel built without io_uring, or blocked by a "
             "seccomp filter)";
    case ENOMEM:
      return "not enough memory for the rings (RLIMIT_MEMLOCK or memory cgroup limit)";
    case EINVAL:
      return "the kernel rejected every set of setup flags tried (kernel too old?)";
    default:
      return "io_uring_setup failed";
  }
}

std::size_t round_up_to_page(std::size_t bytes) {
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return (bytes + page - 1) / page * page;
}

void* map_anonymous(std::size_t bytes, const char* what) {
  void* memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) throw std::system_error(errno, std::system_category(), what);
  return memory;
}

}  // namespace

Ring::Ring(const Options& options, Stats& stats) : stats_(stats) {
  // Flag sets to try, best first. DEFER_TASKRUN runs completion work only when we enter the
  // ring, which batches it; SUBMIT_ALL keeps submitting after one SQE fails.
  constexpr unsigned kCommon = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
  const unsigned attempts[] = {
      options.defer_taskrun ? kCommon | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
                            : 0u,
      kCommon | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
      IORING_SETUP_CQSIZE,
  };
  int result = -EINVAL;
  for (unsigned flags : attempts) {
    if (flags == 0) continue;
    io_uring_params params{};
    params.flags = flags;
    params.cq_entries = options.cq_entries;
    result = io_uring_queue_init_params(options.sq_entries, &ring_, &params);
    if (result == 0) {
      setup_flags_ = flags;
      if ((params.features & IORING_FEAT_NODROP) == 0 ||
          (params.features & IORING_FEAT_EXT_ARG) == 0) {
        io_uring_queue_exit(&ring_);
        throw std::system_error(ENOSYS, std::system_category(),
                                "io_uring lacks IORING_FEAT_NODROP or IORING_FEAT_EXT_ARG "
                                "(kernel older than 5.11)");
      }
      // IORING_FEAT_MIN_TIMEOUT (kernel 6.12), not yet named by liburing 2.3's header.
      constexpr unsigned kFeatureMinTimeout = 1u << 15;
      if ((params.features & kFeatureMinTimeout) != 0) batch_wait_us_ = options.batch_wait_us;
      skips_successes_ = (params.features & IORING_FEAT_CQE_SKIP) != 0;
      break;
    }
    if (result != -EINVAL) break;  // only an unknown flag is worth another attempt
  }
  if (result != 0) {
    throw std::system_error(-result, std::system_category(), explain_setup_error(-result));
  }
  // Fill the SQ index array 1:1 once, so publishing new SQEs is a single store of the tail (what
  // liburing's static __io_uring_flush_sq does, which we cannot call; newer liburing does this
  // at setup too).
  for (unsigned index = 0; index < ring_.sq.ring_entries; ++index) ring_.sq.array[index] = index;
  enter_fd_ = ring_.ring_fd;
  if (io_uring_register_ring_fd(&ring_) == 1) {
    enter_fd_ = ring_.enter_ring_fd;  // saves an fd lookup on every io_uring_enter
    enter_flags_ = IORING_ENTER_REGISTERED_RING;
  }
}

Ring::~Ring() {
  close_unsubmitted();
  io_uring_queue_exit(&ring_);
}

// io_uring_queue_exit() drops the SQEs never submitted; a close among them may have been reported
// already (IoPort::submit_close_unreported), so it is made here. Not through io_uring_enter: with
// SINGLE_ISSUER only the thread that drove the ring may submit, and another may destroy it.
void Ring::close_unsubmitted() noexcept {
  const io_uring_sq& sq = ring_.sq;
  for (unsigned index = *sq.khead; index != sq.sqe_tail; ++index) {
    const io_uring_sqe& sqe = sq.sqes[index & sq.ring_mask];  // the index array is 1:1
    if (sqe.opcode == IORING_OP_CLOSE) ::close(sqe.fd);
  }
}

void Ring::submit_prepared() {
  if (const unsigned to_submit = flush_submission_queue(); to_submit != 0) {
    enter(to_submit, 0, std::chrono::nanoseconds(0));
  }
}

void Ring::make_room() {
  ++stats_.sq_full_submits;
  submit_prepared();
  // A request that finds no room calls make_room() and asks again: it must find room then.
  RL_ASSERT(ring_.sq.sqe_tail - *ring_.sq.khead < ring_.sq.ring_entries &&
            "the kernel took no SQE from a full submission queue");
}

void Ring::submit_and_wait(std::chrono::nanoseconds timeout, unsigned batch) {
  const unsigned to_submit = flush_submission_queue();
  const bool completions_waiting = io_uring_cq_ready(&ring_) > 0;
  const unsigned sq_flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
  if ((sq_flags & IORING_SQ_CQ_OVERFLOW) != 0) ++stats_.cq_overflows;
  const bool kernel_holds_completions =
      (sq_flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0;
  if (to_submit == 0 && completions_waiting && !kernel_holds_completions) return;
  if (completions_waiting || timeout.count() <= 0) {
    // No wait, but every piece of deferred task work queued so far is run: with min_complete 0
    // the kernel runs at most 20 (IO_LOCAL_TW_DEFAULT_MAX) and keeps the rest without signalling
    // the registered eventfd again, so a host loop (Manager::poll) would sleep with completions
    // pending. Asking for a whole completion queue with a zero timeout runs them all (until none
    // is left or the queue is full) and returns at once (measured: 100 receives made ready, 20
    // reaped with min_complete 0, 100 with the queue size).
    enter(to_submit, ring_.cq.ring_entries, std::chrono::nanoseconds(0));
  } else if (batch_wait_us_ == 0 || batch <= 1) {
    enter(to_submit, 1, timeout);
  } else {
    // Batched wait: `batch` completions or batch_wait_us, whichever comes first, then return
    // as soon as there is one; never later than `timeout` (a timer).
    const auto timeout_us = std::chrono::duration_cast<std::chrono::microseconds>(timeout).count();
    const auto min_wait_us = static_cast<std::uint32_t>(
        std::min<std::int64_t>(batch_wait_us_, std::max<std::int64_t>(timeout_us, 1)));
    enter(to_submit, std::min(batch, kMaxBatchCompletions), timeout, min_wait_us);
  }
}

unsigned Ring::flush_submission_queue() noexcept {
  // Publish the SQEs prepared since the last flush (liburing's __io_uring_flush_sq, which 2.3
  // does not export). Without SQPOLL the kernel moves khead only inside io_uring_enter.
  io_uring_sq& sq = ring_.sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    io_uring_smp_store_release(sq.ktail, tail);
  }
  return tail - IO_URING_READ_ONCE(*sq.khead);
}

int Ring::enter(unsigned to_submit, unsigned wait_nr, std::chrono::nanoseconds timeout,
                std::uint32_t min_wait_us) {
  __kernel_timespec ts{};
  if (timeout.count() > 0) {  // else 0: no division for the waits that do not wait
    ts.tv_sec = static_cast<long long>(timeout.count() / 1'000'000'000);
    ts.tv_nsec = static_cast<long long>(timeout.count() % 1'000'000'000);
  }
  io_uring_getevents_arg arg{};
  arg.sigmask = 0;
  arg.sigmask_sz = _NSIG / 8;
  arg.pad = min_wait_us;  // min_wait_usec in kernels >= 6.12; liburing 2.3 still calls it pad
  arg.ts = reinterpret_cast<std::uint64_t>(&ts);
  const unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG | enter_flags_;
  ++stats_.enter_calls;
  ++stats_.syscalls;
  const int result = io_uring_enter2(static_cast<unsigned>(enter_fd_), to_submit, wait_nr, flags,
                                     reinterpret_cast<sigset_t*>(&arg), sizeof(arg));
  if (result >= 0) {
    stats_.submissions += static_cast<unsigned>(result);
    return result;
  }
  switch (-result) {
    case ETIME:   // the wait timed out: a timer is due
    case EINTR:   // a signal (SIGINT, SIGTERM): the loop looks at stop requests next
    case EAGAIN:  // out of resources for new requests; they stay queued for the next step
    case EBUSY:   // completion overflow backlog; reaping makes room
    case EBADR:   // completions were dropped by the kernel (never with FEAT_NODROP)
      return result;
    default:
      break;
  }
  RL_ASSERT(false && "io_uring_enter failed with an unexpected error");
  return result;
}

std::string Ring::describe_flags() const {
  struct Name {
    unsigned flag;
    const char* name;
  };
  static constexpr Name kNames[] = {
      {IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"},       {IORING_SETUP_CQSIZE, "CQSIZE"},
      {IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"},   {IORING_SETUP_TASKRUN_FLAG, "TASKRUN_FLAG"},
      {IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"}, {IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"},
  };
  std::string text;
  for (const Name& name : kNames) {
    if ((setup_flags_ & name.flag) == 0) continue;
    if (!text.empty()) text += '|';
    text += name.name;
  }
  if (enter_flags_ != 0) text += " +registered ring fd";
  if (batch_wait_us_ != 0) text += " +batched waits (" + std::to_string(batch_wait_us_) + " us)";
  return text;
}

// ---------------------------------------------------------------------------------------------

BufferRing::BufferRing(Ring& ring, std::uint16_t group, std::uint32_t count,
                       std::uint32_t buffer_bytes, std::byte* shared, std::uint16_t shared_id)
    : ring_(ring), group_(group), count_(count), buffer_bytes_(buffer_bytes) {
  RL_ASSERT(count > 0 && count <= kMaxReceiveBufferCount && (count & (count - 1)) == 0);
  ring_memory_bytes_ = round_up_to_page(count * sizeof(io_uring_buf));
  ring_memory_ = static_cast<io_uring_buf_ring*>(map_anonymous(ring_memory_bytes_, "buffer ring"));
  if (shared != nullptr) {
    buffers_ = shared;
  } else {
    buffers_bytes_ = std::size_t{count} * buffer_bytes;
    try {
      buffers_ = static_cast<std::byte*>(map_anonymous(buffers_bytes_, "receive buffers"));
    } catch (...) {
      munmap(ring_memory_, ring_memory_bytes_);
      throw;
    }
  }
  io_uring_buf_reg registration{};
  registration.ring_addr = reinterpret_cast<std::uint64_t>(ring_memory_);
  registration.ring_entries = count;
  registration.bgid = group;
  const int result = io_uring_register_buf_ring(&ring_.raw(), &registration, 0);
  if (result < 0) {
    if (!is_shared()) munmap(buffers_, buffers_bytes_);
    munmap(ring_memory_, ring_memory_bytes_);
    throw std::system_error(-result, std::system_category(),
                            "registering the provided-buffer ring (kernel 5.19+)");
  }
  io_uring_buf_ring_init(ring_memory_);
  const int mask = io_uring_buf_ring_mask(count);
  for (std::uint32_t index = 0; index < count; ++index) {
    const std::size_t offset = is_shared() ? 0 : std::size_t{index} * buffer_bytes;
    const auto id = static_cast<unsigned short>(is_shared() ? shared_id : index);
    io_uring_buf_ring_add(ring_memory_, buffers_ + offset, buffer_bytes, id, mask,
                          static_cast<int>(index));
  }
  io_uring_buf_ring_advance(ring_memory_, static_cast<int>(count));
}

BufferRing::~BufferRing() {
  io_uring_unregister_buf_ring(&ring_.raw(), group_);
  if (!is_shared()) munmap(buffers_, buffers_bytes_);
  munmap(ring_memory_, ring_memory_bytes_);
}

}  // namespace ringlinger::detail
