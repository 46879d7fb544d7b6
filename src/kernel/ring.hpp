// The io_uring wrapper: setup with the best flags this kernel takes, SQE acquisition (with the
// "submission queue full" case handled here and nowhere else), the one submit-and-wait call of
// each loop step (counted exactly: we make the io_uring_enter call ourselves), and reading a
// batch of completions in place, released with a single advance of the completion queue.
#pragma once

#include <liburing.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/assert.hpp"
#include "ringlinger/stats.hpp"

namespace ringlinger::detail {

class Ring {
 public:
  struct Options {
    std::uint32_t sq_entries = 4096;
    std::uint32_t cq_entries = 16384;
    bool defer_taskrun = true;  // DEFER_TASKRUN | SINGLE_ISSUER when the kernel has them
    std::uint32_t batch_wait_us = 0;  // see Config::batch_wait_us
  };

  // The most completions a batched wait asks for before it returns early.
  static constexpr unsigned kMaxBatchCompletions = 256;

  // Throws std::system_error with an explanation when io_uring cannot be set up.
  Ring(const Options& options, Stats& stats);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // A free SQE, or null when the submission queue is full: then make_room() and ask again.
  // Inline, as liburing's own is in later versions: several SQEs per close, each a call into
  // liburing 2.3.
  io_uring_sqe* try_get_sqe() noexcept {
    io_uring_sq& sq = ring_.sq;
    // Without SQPOLL the kernel moves khead only inside io_uring_enter, on this thread.
    if (sq.sqe_tail - *sq.khead < sq.ring_entries) [[likely]] {
      return &sq.sqes[sq.sqe_tail++ & sq.ring_mask];
    }
    return nullptr;
  }
  // Whether `sqe` was prepared since the last submission, so still ours to change (its slot may
  // hold another request by now: the caller checks what it holds).
  bool unsubmitted(const io_uring_sqe* sqe) const noexcept {
    const io_uring_sq& sq = ring_.sq;
    const auto index = static_cast<unsigned>(sqe - sq.sqes);
    return ((index - sq.sqe_head) & sq.ring_mask) < sq.sqe_tail - sq.sqe_head;
  }
  // Submits what is prepared, without waiting, so that the submission queue has room again (one
  // early io_uring_enter, counted in Stats::sq_full_submits); asserts that it has.
  void make_room();
  // An SQE, never null (make_room() first when the queue is full), for the paths that are not hot.
  io_uring_sqe* get_sqe() {
    if (io_uring_sqe* sqe = try_get_sqe()) return sqe;
    make_room();
    return try_get_sqe();
  }

  // Submits everything prepared and waits until at least one completion is ready or `timeout`
  // passed: one io_uring_enter, skipped only when there is nothing to submit and completions
  // are already waiting. With batched waits, the kernel gathers up to `batch` completions
  // (at most kMaxBatchCompletions) for up to batch_wait_us before waking the loop.
  void submit_and_wait(std::chrono::nanoseconds timeout, unsigned batch = kMaxBatchCompletions);

  // The completions ready now, read in place: the kernel posts new ones after them, never over
  // them, until release() hands their entries back (once per batch). Copying them out first
  // cost 31 instructions per close, reading them in place 15 (bench/callgrind.sh).
  struct Ready {
    // In two pieces when the ready part of the queue wraps around its end.
    std::span<const io_uring_cqe> first;
    std::span<const io_uring_cqe> second;
    unsigned tail;  // the queue's tail when they were read
  };
  Ready ready() noexcept {
    io_uring_cq& cq = ring_.cq;
    const unsigned head = *cq.khead;  // moved only by us
    const unsigned tail = io_uring_smp_load_acquire(cq.ktail);
    const unsigned start = head & cq.ring_mask;
    const unsigned before_wrap = std::min(tail - head, cq.ring_entries - start);
    return {{cq.cqes + start, before_wrap}, {cq.cqes, tail - head - before_wrap}, tail};
  }
  void release(const Ready& ready) noexcept {
    stats_.completions += ready.tail - *ring_.cq.khead;
    io_uring_smp_store_release(ring_.cq.khead, ready.tail);
  }

  // The setup flags the kernel accepted, e.g. "SUBMIT_ALL|CQSIZE|SINGLE_ISSUER|DEFER_TASKRUN".
  std::string describe_flags() const;
  unsigned setup_flags() const noexcept { return setup_flags_; }
  // Whether waits are batched (batch_wait_us > 0 and the kernel has IORING_FEAT_MIN_TIMEOUT).
  bool batches_waits() const noexcept { return batch_wait_us_ > 0; }
  // Whether a request can skip its completion on success (IORING_FEAT_CQE_SKIP, kernel 5.17).
  bool skips_successes() const noexcept { return skips_successes_; }
  // Submits what is prepared, without waiting: when the loop ends with requests prepared (a
  // close without a completion must still run). On the thread that drives the ring.
  void submit_prepared();
  io_uring& raw() noexcept { return ring_; }

 private:
  unsigned flush_submission_queue() noexcept;
  void close_unsubmitted() noexcept;
  int enter(unsigned to_submit, unsigned wait_nr, std::chrono::nanoseconds timeout,
            std::uint32_t min_wait_us = 0);

  io_uring ring_{};
  Stats& stats_;
  unsigned setup_flags_ = 0;
  unsigned enter_flags_ = 0;  // IORING_ENTER_REGISTERED_RING when the ring fd is registered
  int enter_fd_ = -1;
  std::uint32_t batch_wait_us_ = 0;  // 0 when off or unsupported
  bool skips_successes_ = false;
};

// A ring of provided buffers (IORING_REGISTER_PBUF_RING) from which delivering receives take a
// buffer only when data arrives, so idle connections hold no receive memory. Debian's liburing
// 2.3 has no io_uring_setup_buf_ring(), so the ring memory is mapped and registered here.
//
// With a `shared` area, every entry is the same: that area (`buffer_bytes` long, nothing mapped
// here) under one id, `shared_id`. For receives with MSG_TRUNC, which copy nothing (the drain's
// multishot receive). A completion names its buffer's id, not its group: the shared id must be
// none of the other ring's, whose ids are 0 to count - 1.
class BufferRing {
 public:
  // `count` must be a power of two (<= kMaxReceiveBufferCount). Throws std::system_error on failure.
  BufferRing(Ring& ring, std::uint16_t group, std::uint32_t count, std::uint32_t buffer_bytes,
             std::byte* shared = nullptr, std::uint16_t shared_id = 0);
  ~BufferRing();
  BufferRing(const BufferRing&) = delete;
  BufferRing& operator=(const BufferRing&) = delete;

  std::uint16_t group() const noexcept { return group_; }
  std::uint32_t buffer_bytes() const noexcept { return buffer_bytes_; }
  // The buffer with this id (a ring of its own buffers).
  std::span<std::byte> buffer(std::uint16_t id) const noexcept {
    RL_ASSERT(id < count_);
    return {buffers_ + std::size_t{id} * buffer_bytes_, buffer_bytes_};
  }
  // Gives a buffer back to the kernel once its bytes were handled. Inline: one per delivering
  // receive, in the completion loop.
  void recycle(std::uint16_t id) noexcept {
    RL_ASSERT(id < count_);
    io_uring_buf_ring_add(ring_memory_, buffers_ + std::size_t{id} * buffer_bytes_,
                          buffer_bytes_, id, io_uring_buf_ring_mask(count_), 0);
    io_uring_buf_ring_advance(ring_memory_, 1);
  }
  // The same for a shared area's entry: only the tail moves. The entry it hands back already
  // names the area, as every entry does, and the kernel never writes an entry (it reads them and
  // moves the head; only an incrementally consumed ring, IOU_PBUF_RING_INC, is written to).
  void recycle_shared() noexcept {
    RL_ASSERT(is_shared());
    io_uring_buf_ring_advance(ring_memory_, 1);
  }

 private:
  bool is_shared() const noexcept { return buffers_bytes_ == 0; }

  Ring& ring_;
  io_uring_buf_ring* ring_memory_ = nullptr;
  std::size_t ring_memory_bytes_ = 0;
  std::byte* buffers_ = nullptr;
  std::size_t buffers_bytes_ = 0;  // 0 when the buffers are a shared area, not mapped here
  std::uint16_t group_;
  std::uint32_t count_;
  std::uint32_t buffer_bytes_;
};

}  // namespace ringlinger::detail
