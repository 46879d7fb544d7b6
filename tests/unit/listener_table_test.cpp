// The listener table's count of paused listeners. A loop step skips both of its looks at the
// paused listeners (Backend::resume_listeners(), next_listener_deadline()) when the count is 0,
// so the count must follow every change: set_accepting(), add(), remove_last() and the close of
// a listener. A count one too low would leave a paused listener paused for good.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>

#include "kernel/listeners.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;

// A descriptor for the table to own and close (the read end of a pipe: no socket is needed).
int descriptor() {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  ::close(fds[1]);
  return fds[0];
}

TEST(ListenerTable, CountsThePausedListenersThroughEveryChange) {
  Stats stats;
  ListenerTable table(stats);
  const auto now = ListenerTable::TimePoint{} + 1h;
  EXPECT_FALSE(table.any_paused());
  EXPECT_EQ(table.next_deadline(now), std::nullopt);

  const std::uint32_t a = table.add(descriptor());
  const std::uint32_t b = table.add(descriptor());
  EXPECT_TRUE(table.any_paused()) << "added listeners wait for their backend to start them";
  table.set_accepting(a, true);
  EXPECT_TRUE(table.any_paused());
  table.set_accepting(b, true);
  EXPECT_FALSE(table.any_paused());
  table.set_accepting(b, true);  // no change: counted once
  EXPECT_FALSE(table.any_paused());

  // Paused after an accept error: resumed after the backoff, and the wait knows when.
  table.set_accepting(b, false);
  table.accept_failed(b, now);
  EXPECT_TRUE(table.any_paused());
  ASSERT_TRUE(table.next_deadline(now).has_value());
  EXPECT_GT(*table.next_deadline(now), now);
  EXPECT_FALSE(table.may_resume(b, now));
  EXPECT_TRUE(table.may_resume(b, *table.next_deadline(now)));
  table.set_accepting(b, true);
  EXPECT_FALSE(table.any_paused());
  EXPECT_EQ(table.next_deadline(now), std::nullopt);

  // One that its backend could not watch is taken back.
  table.add(descriptor());
  EXPECT_TRUE(table.any_paused());
  table.remove_last();
  EXPECT_FALSE(table.any_paused());

  // Closing: a listener stopped and closed is no longer counted, and stopping it again (epoll's
  // stop_accepting() after the close) changes nothing.
  table.start_closing();
  table.set_accepting(a, false);
  EXPECT_TRUE(table.any_paused());
  table.close_if_idle(a);
  EXPECT_EQ(table[a].fd, -1);
  EXPECT_FALSE(table.any_paused());
  table.set_accepting(a, false);
  EXPECT_FALSE(table.any_paused());
  table.set_accepting(b, false);
  table.close_if_idle(b);
  EXPECT_FALSE(table.any_paused());
  EXPECT_FALSE(table.has_open());
}

}  // namespace
}  // namespace ringlinger::detail
