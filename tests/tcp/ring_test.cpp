// The io_uring wrapper against the real kernel: a full submission queue is submitted early
// instead of failing, a completion queue overflow loses nothing (the kernel keeps the extra
// completions and the next enter flushes them), every io_uring_enter is counted, and a wait
// with nothing in flight returns at its timeout; a ring of one shared buffer gives it back by
// its tail alone.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "kernel/ring.hpp"
#include "core/user_data.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;

// Submits `count` NOPs with user_data 0..count-1 and reaps until all came back.
std::set<std::uint64_t> round_trip_nops(Ring& ring, unsigned count) {
  for (unsigned i = 0; i < count; ++i) {
    io_uring_sqe* sqe = ring.get_sqe();
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, i);
  }
  std::set<std::uint64_t> seen;
  for (int step = 0; step < 1000 && seen.size() < count; ++step) {
    ring.submit_and_wait(10ms);
    const Ring::Ready ready = ring.ready();
    for (const auto piece : {ready.first, ready.second}) {
      for (const io_uring_cqe& cqe : piece) {
        EXPECT_EQ(cqe.res, 0);
        EXPECT_TRUE(seen.insert(cqe.user_data).second) << "completion seen twice: " << cqe.user_data;
      }
    }
    ring.release(ready);
  }
  return seen;
}

class RingVariants : public ::testing::TestWithParam<bool> {};

TEST_P(RingVariants, FullSubmissionQueueAndCompletionOverflowLoseNothing) {
  Stats stats;
  // 8 submission entries, 16 completion entries, 200 requests.
  Ring ring({8, 16, GetParam(), 0}, stats);
  const auto seen = round_trip_nops(ring, 200);
  EXPECT_EQ(seen.size(), 200u);
  EXPECT_GT(stats.sq_full_submits, 0u) << "the full submission queue path was not taken";
  EXPECT_GT(stats.cq_overflows, 0u) << "the completion queue never overflowed";
  EXPECT_EQ(stats.completions, 200u);
  EXPECT_EQ(stats.submissions, 200u);
}

TEST_P(RingVariants, OneEnterPerStepSubmitsAndReapsABatch) {
  Stats stats;
  Ring ring({64, 256, GetParam(), 0}, stats);
  const auto seen = round_trip_nops(ring, 50);
  EXPECT_EQ(seen.size(), 50u);
  EXPECT_EQ(stats.enter_calls, 1u) << "50 NOPs fit one submission queue: one enter";
  EXPECT_EQ(stats.sq_full_submits, 0u);
}

TEST_P(RingVariants, AWaitWithNothingInFlightEndsAtItsTimeout) {
  Stats stats;
  Ring ring({8, 16, GetParam(), 200}, stats);
  const auto start = std::chrono::steady_clock::now();
  ring.submit_and_wait(30ms);
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 25ms);
  EXPECT_LT(waited, 2s);
  EXPECT_EQ(stats.enter_calls, 1u);
}

// The drain's ring of buffers, every entry one shared area under one id: a buffer is given back
// by moving the tail alone (recycle_shared()), which is right only if the kernel never writes the
// entries it hands out. 4 entries and 200 parts of a multishot receive: the ring wraps 50 times,
// and each part still lands in the area, under the id, with the receive going on.
TEST_P(RingVariants, ASharedAreaRingGivesItsBufferBackByTheTailAlone) {
  Stats stats;
  Ring ring({8, 64, GetParam(), 0}, stats);
  std::vector<std::byte> area(4096);
  constexpr std::uint16_t kGroup = 1;
  constexpr std::uint16_t kId = 40000;
  BufferRing shared(ring, kGroup, 4, static_cast<std::uint32_t>(area.size()), area.data(), kId);
  int sockets[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  io_uring_sqe* sqe = ring.get_sqe();
  io_uring_prep_recv_multishot(sqe, sockets[0], nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kGroup;
  io_uring_sqe_set_data64(sqe, 7);
  for (int part = 0; part < 200; ++part) {
    const std::vector<char> bytes(1000, static_cast<char>('a' + part % 26));
    ASSERT_EQ(::send(sockets[1], bytes.data(), bytes.size(), 0), 1000);
    ring.submit_and_wait(1s);
    const Ring::Ready ready = ring.ready();
    ASSERT_EQ(ready.first.size() + ready.second.size(), 1u) << "part " << part;
    const io_uring_cqe& cqe = ready.first.empty() ? ready.second[0] : ready.first[0];
    ASSERT_EQ(cqe.res, 1000) << "part " << part;
    ASSERT_NE(cqe.flags & IORING_CQE_F_MORE, 0u) << "part " << part;
    ASSERT_NE(cqe.flags & IORING_CQE_F_BUFFER, 0u);
    ASSERT_EQ(cqe.flags >> IORING_CQE_BUFFER_SHIFT, kId);
    ASSERT_EQ(std::memcmp(area.data(), bytes.data(), bytes.size()), 0) << "part " << part;
    ring.release(ready);
    shared.recycle_shared();
  }
  ::close(sockets[0]);
  ::close(sockets[1]);
}

// A close prepared and never submitted still runs when the ring is torn down (an unreported
// close was already reported to the application), from any thread: with SINGLE_ISSUER only the
// thread that drove the ring may enter it, so the teardown closes the fd itself. A NOP and a
// receive prepared beside it are dropped, as io_uring_queue_exit() drops them.
TEST_P(RingVariants, AClosePreparedAndNeverSubmittedRunsAtTeardown) {
  int sockets[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sockets), 0);
  Stats stats;
  std::optional<Ring> ring;
  std::thread driver([&] {
    ring.emplace(Ring::Options{8, 16, GetParam(), 0}, stats);
    const auto seen = round_trip_nops(*ring, 3);  // this thread is the ring's issuer now
    EXPECT_EQ(seen.size(), 3u);
    io_uring_prep_nop(ring->get_sqe());
    io_uring_prep_close(ring->get_sqe(), sockets[0]);
    char byte = 0;
    io_uring_prep_recv(ring->get_sqe(), sockets[1], &byte, 1, 0);
  });
  driver.join();
  ASSERT_NE(fcntl(sockets[0], F_GETFD), -1);
  const auto enters = stats.enter_calls;
  ring.reset();  // on this thread, which never entered the ring
  const int result = fcntl(sockets[0], F_GETFD);
  const int error = errno;
  EXPECT_EQ(result, -1) << "the prepared close did not run";
  EXPECT_EQ(error, EBADF);
  EXPECT_NE(fcntl(sockets[1], F_GETFD), -1) << "only the close's fd is closed";
  EXPECT_EQ(stats.enter_calls, enters);
  ::close(sockets[1]);
}

INSTANTIATE_TEST_SUITE_P(DeferTaskrun, RingVariants, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& variant) {
                           return variant.param ? "DeferTaskrun" : "Plain";
                         });

}  // namespace
}  // namespace ringlinger::detail
