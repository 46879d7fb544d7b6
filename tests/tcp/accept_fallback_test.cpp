// The io_uring backend on a kernel without IORING_ACCEPT_DONTWAIT (before 6.10, Debian 12's 6.1
// among them): its first non-waiting accept fails with EINVAL, and from then on it drains the
// backlog with accept4(2). That path never runs on the kernels the suite runs on, so the backend
// is told to add a flag no kernel knows to those accepts: the real kernel then refuses them with
// the same EINVAL, and the real switch follows. Against a burst far beyond the table, as in
// manager_api_test's ManagerRing test of the ring's path: every connection is served, byte for
// byte with a clean EOF, and none is refused.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "kernel/uring_backend.hpp"
#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace testing_support;

// Sets the test switch for one test and clears it whatever happens.
class RefuseAcceptDontwait {
 public:
  RefuseAcceptDontwait() { detail::UringBackend::refuse_accept_dontwait_for_testing(true); }
  ~RefuseAcceptDontwait() { detail::UringBackend::refuse_accept_dontwait_for_testing(false); }
  RefuseAcceptDontwait(const RefuseAcceptDontwait&) = delete;
  RefuseAcceptDontwait& operator=(const RefuseAcceptDontwait&) = delete;
};

TEST(AcceptFallback, WithoutAcceptDontwaitABurstBeyondTheTableIsServedWithAccept4) {
  const RefuseAcceptDontwait refuse;
  Config config;
  config.backend = IoBackend::io_uring;  // the fallback is the ring's; epoll always uses accept4
  config.ring_entries = 8;
  config.max_connections = 8;
  Responder responder(config, tools::make_response(1000));
  constexpr int kClients = 200;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(responder.address));
    ASSERT_GE(clients.back(), 0);
    set_receive_timeout(clients.back(), 20s);
    send_all(clients.back(), tools::make_request(0));
    ::shutdown(clients.back(), SHUT_WR);
  }
  // All 200 wait in the backlog for 8 slots: accept4 takes what fits, the listener pauses, and
  // resumes as slots free up.
  expect_every_client_served(responder, clients, 30s);
  const Stats stats = responder.manager().stats();
  EXPECT_EQ(stats.connections_accepted, static_cast<std::uint64_t>(kClients));
  EXPECT_EQ(stats.accepts_rejected, 0u);
  EXPECT_EQ(stats.accept_errors, 0u) << "the EINVAL is the switch, not an accept error";
  // What shows that accept4(2) did the accepting: it stops at a full table, where the ring's
  // accept takes what is queued and holds it for a slot (accepts_queued > 0 in ManagerRing's
  // test), and each of its calls is a system call beside each connection's shutdown(2).
  EXPECT_EQ(stats.accepts_queued, 0u) << "the ring's accept ran, not accept4";
  EXPECT_GE(stats.syscalls, 2u * kClients);
  responder.stop_and_finish(2s);
  EXPECT_EQ(responder.manager().stats().live_connections(), 0u);
}

}  // namespace
}  // namespace ringlinger
