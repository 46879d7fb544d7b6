// What this proves: SendQueue hands out its bytes in push order whether pieces are owned
// (moved-in strings) or borrowed (spans), resumes a piece after a partial consume and moves on to
// the next piece only when one is done; the pointer front() returned for a piece stays valid and
// unchanged while more pieces are pushed behind it, including short owned strings that live in
// std::string's small-buffer (SSO) storage; queued_bytes() tracks every push and consume; clear()
// empties it; consuming more than the front piece is a programmer error (RL_ASSERT); and a
// moved-from queue is a valid, empty, independent queue. A borrowed piece pushed into an empty
// queue, held without a node, keeps its address when pieces are pushed behind it.
#include "core/send_queue.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace ringlinger::detail {
namespace {

std::string text(std::span<const std::byte> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::as_bytes(std::span<const char>(s.data(), s.size()));
}

// Drains the queue in chunks of at most `chunk` bytes, as a short-sending socket would.
std::string drain(SendQueue& queue, std::size_t chunk) {
  std::string out;
  while (!queue.empty()) {
    const auto front = queue.front();
    const std::size_t count = std::min(chunk, front.size());
    out += text(front.first(count));
    queue.consume(count);
  }
  return out;
}

TEST(SendQueue, StartsEmpty) {
  SendQueue queue;
  EXPECT_TRUE(queue.empty());
  EXPECT_TRUE(queue.front().empty());
  EXPECT_EQ(queue.queued_bytes(), 0u);
}

TEST(SendQueue, EmptyPushesAreIgnored) {
  SendQueue queue;
  queue.push(std::string());
  queue.push_view({});
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.queued_bytes(), 0u);
}

TEST(SendQueue, OwnedPieceIsMovedNotCopied) {
  SendQueue queue;
  std::string big(10'000, 'x');
  const char* storage = big.data();
  queue.push(std::move(big));
  EXPECT_EQ(reinterpret_cast<const char*>(queue.front().data()), storage);
  EXPECT_EQ(queue.front().size(), 10'000u);
}

TEST(SendQueue, BorrowedPiecePointsAtTheCallersBytes) {
  const std::string owner = "borrowed bytes";
  SendQueue queue;
  queue.push_view(bytes_of(owner));
  EXPECT_EQ(queue.front().data(), bytes_of(owner).data());
  EXPECT_EQ(queue.front().size(), owner.size());
}

TEST(SendQueue, MixedPiecesComeOutInPushOrder) {
  const std::string borrowed1 = "-borrowed-";
  const std::string borrowed2 = "tail";
  SendQueue queue;
  queue.push("owned1");
  queue.push_view(bytes_of(borrowed1));
  queue.push(std::string(40, 'L'));
  queue.push_view(bytes_of(borrowed2));
  EXPECT_EQ(queue.queued_bytes(), 6u + 10u + 40u + 4u);
  EXPECT_EQ(drain(queue, 1'000), "owned1-borrowed-" + std::string(40, 'L') + "tail");
  EXPECT_EQ(queue.queued_bytes(), 0u);
  EXPECT_TRUE(queue.empty());
}

TEST(SendQueue, PartialConsumeResumesInsideThePieceThenMovesToTheNext) {
  SendQueue queue;
  queue.push("abcdef");
  queue.push("XYZ");
  queue.consume(2);
  EXPECT_EQ(text(queue.front()), "cdef");
  EXPECT_EQ(queue.queued_bytes(), 7u);
  queue.consume(3);
  EXPECT_EQ(text(queue.front()), "f");  // not "fXYZ": one piece at a time
  queue.consume(1);
  EXPECT_EQ(text(queue.front()), "XYZ");
  EXPECT_EQ(queue.queued_bytes(), 3u);
  queue.consume(0);  // a zero-byte consume is no progress and no harm
  EXPECT_EQ(text(queue.front()), "XYZ");
  queue.consume(3);
  EXPECT_TRUE(queue.empty());
}

TEST(SendQueue, ChunkedDrainsReassembleTheStreamWhateverTheChunk) {
  std::mt19937_64 rng(7);
  for (std::size_t chunk : {1u, 2u, 3u, 7u, 64u, 100'000u}) {
    SendQueue queue;
    std::string expected;
    std::vector<std::string> borrowed;  // must outlive the queue's use of it
    borrowed.reserve(50);
    for (int i = 0; i < 50; ++i) {
      std::string piece(rng() % 40 + 1, static_cast<char>('a' + i % 26));
      expected += piece;
      if (rng() % 2 == 0) {
        queue.push(std::move(piece));
      } else {
        borrowed.push_back(std::move(piece));
        queue.push_view(bytes_of(borrowed.back()));
      }
    }
    EXPECT_EQ(queue.queued_bytes(), expected.size());
    EXPECT_EQ(drain(queue, chunk), expected) << "chunk " << chunk;
  }
}

TEST(SendQueue, FrontPointerStaysValidWhileMorePiecesArePushed) {
  // The pointer an in-flight send holds must survive anything queued behind it. Short strings
  // live inside the std::string object (SSO): if pieces were stored in a growing container the
  // front bytes would move with it.
  SendQueue queue;
  queue.push("hi");  // SSO
  queue.consume(1);  // an in-flight send now points into the middle of the piece
  const std::byte* in_flight = queue.front().data();
  const std::string snapshot = text(queue.front());
  for (int i = 0; i < 1000; ++i) {
    queue.push(std::string(1 + i % 15, static_cast<char>('A' + i % 26)));  // SSO-sized pieces
    if (i % 100 == 0) queue.push(std::string(1000, 'z'));                  // and big ones
  }
  EXPECT_EQ(queue.front().data(), in_flight);
  EXPECT_EQ(std::memcmp(in_flight, snapshot.data(), snapshot.size()), 0);
  EXPECT_EQ(text(queue.front()), "i");
  queue.consume(1);
  // Each SSO piece, while it is the front, keeps its address across further pushes too.
  for (int i = 0; i < 20; ++i) {
    const std::byte* front = queue.front().data();
    const std::string expected = text(queue.front());
    queue.push(std::string(3, '#'));
    EXPECT_EQ(queue.front().data(), front);
    EXPECT_EQ(text(queue.front()), expected);
    queue.consume(queue.front().size());
  }
}

// A borrowed piece pushed into an empty queue is held without a node; a piece pushed behind it
// moves it into one. The send in flight from it must not notice: same address, same bytes left.
TEST(SendQueue, ABorrowedFirstPieceKeepsItsAddressWhenPiecesFollowIt) {
  const std::string body(100, 'b');
  SendQueue queue;
  queue.push_view(bytes_of(body));
  EXPECT_FALSE(queue.more_after_front());
  EXPECT_FALSE(queue.front_is_file());
  queue.consume(30);
  const std::byte* in_flight = queue.front().data();
  EXPECT_EQ(in_flight, bytes_of(body).data() + 30);
  EXPECT_EQ(queue.queued_bytes(), 70u);
  queue.push("tail");
  EXPECT_EQ(queue.front().data(), in_flight);
  EXPECT_EQ(queue.front().size(), 70u);
  EXPECT_TRUE(queue.more_after_front());
  EXPECT_EQ(queue.queued_bytes(), 74u);
  // In node form now: consume_if_inline() (the send completion's first try) does nothing.
  EXPECT_FALSE(queue.consume_if_inline(10));
  EXPECT_EQ(queue.queued_bytes(), 74u);
  queue.push_file(7, 100, 10);
  queue.consume(70);
  EXPECT_EQ(text(queue.front()), "tail");
  queue.consume(4);
  ASSERT_TRUE(queue.front_is_file());
  EXPECT_EQ(queue.front_file().fd, 7);
  EXPECT_EQ(queue.front_file().offset, 100u);
  queue.consume(10);
  EXPECT_TRUE(queue.empty());
  // Sent whole, then used again: inline again, and a file behind it.
  queue.push_view(bytes_of(body));
  queue.push_file(7, 0, 5);
  EXPECT_EQ(queue.front().data(), bytes_of(body).data());
  EXPECT_EQ(queue.queued_bytes(), 105u);
  queue.consume(100);
  EXPECT_TRUE(queue.front_is_file());
  queue.clear();
  EXPECT_TRUE(queue.empty());
  // Moved while inline: the target has the piece, the source is empty.
  queue.push_view(bytes_of(body));
  EXPECT_TRUE(queue.consume_if_inline(98));
  queue.consume(1);
  SendQueue target(std::move(queue));
  EXPECT_TRUE(queue.empty());  // NOLINT(bugprone-use-after-move): moved-from is empty, by contract
  EXPECT_EQ(text(target.front()), "b");
  target.consume(1);
  EXPECT_TRUE(target.empty());
  // Cleared, and destroyed, while inline and unsent (an aborted connection's response).
  target.push_view(bytes_of(body));
  target.clear();
  EXPECT_TRUE(target.empty());
  EXPECT_EQ(target.queued_bytes(), 0u);
  target.push_view(bytes_of(body));
  EXPECT_EQ(target.queued_bytes(), 100u);
}  // target goes with its inline piece: nothing to free, nothing freed

TEST(SendQueue, QueuedBytesFollowsPushesAndConsumes) {
  SendQueue queue;
  std::uint64_t expected = 0;
  std::mt19937_64 rng(11);
  std::vector<std::string> borrowed;
  borrowed.reserve(2000);
  for (int step = 0; step < 2000; ++step) {
    if (queue.empty() || rng() % 3 != 0) {
      std::string piece(rng() % 50, 'q');  // 0 included: ignored
      expected += piece.size();
      if (rng() % 2 == 0) {
        queue.push(std::move(piece));
      } else {
        borrowed.push_back(std::move(piece));
        queue.push_view(bytes_of(borrowed.back()));
      }
    } else {
      const std::size_t count = rng() % (queue.front().size() + 1);
      queue.consume(count);
      expected -= count;
    }
    ASSERT_EQ(queue.queued_bytes(), expected) << "step " << step;
    ASSERT_EQ(queue.empty(), expected == 0) << "step " << step;
  }
}

TEST(SendQueue, ClearDropsEverythingAndTheQueueIsReusable) {
  SendQueue queue;
  for (int i = 0; i < 100'000; ++i) queue.push("x");  // long: clear() must not recurse
  queue.consume(1);
  queue.clear();
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.queued_bytes(), 0u);
  EXPECT_TRUE(queue.front().empty());
  queue.push("again");
  EXPECT_EQ(text(queue.front()), "again");
  EXPECT_EQ(queue.queued_bytes(), 5u);
  queue.clear();
  queue.clear();  // twice is harmless
  EXPECT_TRUE(queue.empty());
}

TEST(SendQueueDeathTest, ConsumingMoreThanTheFrontPieceAborts) {
  EXPECT_DEATH(
      {
        SendQueue queue;
        queue.push("abc");
        queue.push("def");
        queue.consume(4);  // the front piece has 3
      },
      "assertion failed");
  EXPECT_DEATH(
      {
        SendQueue queue;
        queue.consume(1);
      },
      "assertion failed");
}

TEST(SendQueue, MoveConstructionTransfersEverything) {
  SendQueue source;
  source.push("abc");
  source.push("def");
  SendQueue target(std::move(source));
  EXPECT_EQ(target.queued_bytes(), 6u);
  EXPECT_EQ(drain(target, 2), "abcdef");
}

// A moved-from object must stay valid: usable, and independent of the queue it was moved into.
// Regression tests: the defaulted move operations once moved head_ but copied tail_ and queued_,
// so the source kept pointing at the tail node the other queue now owned; a push() on it linked
// the new piece into the OTHER queue (and after that queue consumed the node, wrote freed memory).
TEST(SendQueue, MovedFromQueueIsEmptyAndIndependent) {
  SendQueue source;
  source.push("abc");
  SendQueue target(std::move(source));
  // Moved-from: empty, with no bytes queued.
  EXPECT_TRUE(source.empty());  // NOLINT(bugprone-use-after-move): the point of the test
  EXPECT_EQ(source.queued_bytes(), 0u) << "moved-from queue still counts the moved bytes";
  source.push("XYZ");
  EXPECT_EQ(text(source.front()), "XYZ") << "push on a moved-from queue did not land in it";
  EXPECT_EQ(target.queued_bytes(), 3u);
  EXPECT_EQ(drain(target, 100), "abc") << "push on the moved-from queue changed the other queue";
}

TEST(SendQueue, MoveAssignedFromQueueIsEmptyAndIndependent) {
  SendQueue source;
  source.push("abc");
  SendQueue target;
  target.push("old");
  target = std::move(source);
  EXPECT_EQ(source.queued_bytes(), 0u) << "moved-from queue still counts the moved bytes";
  source.push("XYZ");
  EXPECT_EQ(text(source.front()), "XYZ") << "push on a moved-from queue did not land in it";
  EXPECT_EQ(drain(target, 100), "abc") << "push on the moved-from queue changed the other queue";
}

}  // namespace
}  // namespace ringlinger::detail
