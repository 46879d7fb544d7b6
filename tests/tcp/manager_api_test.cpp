// The Manager's API contracts on real sockets: adopt() of a connected socket, stale handles,
// send after close, a full table, abort(), configuration errors that name the field, and stop()
// both letting graceful closes finish and resetting what is left at its deadline.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace testing_support;

// An unnamed temporary file holding `bytes`.
int file_with(const std::string& bytes) {
  int fd = ::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fd = ::memfd_create("ringlinger-test", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  return fd;
}

std::string pattern(std::size_t size) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
  return bytes;
}

// The API, stop and lifetime tests run on both backends.
class BackendTest : public ::testing::TestWithParam<IoBackend> {
 protected:
  Config base_config() const {
    Config config;
    config.backend = GetParam();
    return config;
  }
};
class ManagerApi : public BackendTest {};
class ManagerStop : public BackendTest {};
class ManagerLifetime : public BackendTest {};

std::string backend_name(const ::testing::TestParamInfo<IoBackend>& backend) {
  return backend.param == IoBackend::epoll ? "Epoll" : "IoUring";
}


// A connected pair over loopback: the client end and the accepted server end.
struct TcpPair {
  int client = -1;
  int server = -1;
};

TcpPair make_pair() {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const SocketAddress any = loopback_any_port();
  EXPECT_EQ(::bind(listener, any.data(), any.size()), 0);
  EXPECT_EQ(::listen(listener, 1), 0);
  TcpPair pair;
  pair.client = connect_client(*SocketAddress::local_of(listener));
  pair.server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  return pair;
}

struct Recorder {
  Callbacks callbacks() {
    Callbacks callbacks;
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      reports.emplace_back(id, report);
    };
    return callbacks;
  }
  std::vector<std::pair<ConnectionId, CloseReport>> reports;
};

void run_until(Manager& manager, const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) manager.run_once(10ms);
}

TEST_P(ManagerApi, AdoptedSocketIsFlushedShutDownDrainedAndClosed) {
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  TcpPair pair = make_pair();
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(manager.state(*id), State::open);
  EXPECT_FALSE(manager.send(*id, "hello, ").value());
  EXPECT_FALSE(manager.send(*id, std::string(100'000, 'x')).value());
  EXPECT_FALSE(manager.close(*id).value());
  ReadResult read;
  std::thread client([&] {
    set_receive_timeout(pair.client, 10s);
    read = read_to_end(pair.client);
    ::close(pair.client);
  });
  run_until(manager, [&] { return !recorder.reports.empty(); });
  client.join();
  EXPECT_EQ(read.bytes, "hello, " + std::string(100'000, 'x'));
  EXPECT_TRUE(read.clean_eof);
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].first, *id);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::clean);
  EXPECT_EQ(recorder.reports[0].second.bytes_sent, 100'007u);
  EXPECT_EQ(manager.stats().connections_adopted, 1u);
}

// send_file() between two sends: the range (not the whole file) goes out in order, across many
// partial sendfile calls (the client starts reading late, so the socket buffer fills), on a
// socket adopted in blocking mode; then the usual graceful close.
TEST_P(ManagerApi, SendFileSendsTheRangeInOrderWithTheOtherPieces) {
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  const std::string contents = pattern(3u << 20);
  const int file = file_with(contents);
  TcpPair pair = make_pair();
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  constexpr std::size_t kOffset = 12345;
  constexpr std::size_t kLength = 2u << 20;
  EXPECT_FALSE(manager.send(*id, "head|").value());
  EXPECT_FALSE(manager.send_file(*id, file, kOffset, kLength).value());
  EXPECT_FALSE(manager.send(*id, "|tail").value());
  EXPECT_FALSE(manager.close(*id).value());
  EXPECT_EQ(manager.send_file(*id, file, 0, 1), std::errc::broken_pipe) << "after close()";
  ReadResult read;
  std::thread client([&] {
    std::this_thread::sleep_for(100ms);
    set_receive_timeout(pair.client, 10s);
    read = read_to_end(pair.client);
    ::close(pair.client);
  });
  run_until(manager, [&] { return !recorder.reports.empty(); });
  client.join();
  ::close(file);
  EXPECT_EQ(read.bytes.size(), 5 + kLength + 5);
  EXPECT_TRUE(read.bytes == "head|" + contents.substr(kOffset, kLength) + "|tail")
      << "the bytes differ from the file range";
  EXPECT_TRUE(read.clean_eof);
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::clean);
  EXPECT_EQ(recorder.reports[0].second.bytes_sent, 5 + kLength + 5);
}

TEST_P(ManagerApi, SendFilePastTheEndOfTheFileFailsTheConnection) {
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  const int file = file_with(pattern(1000));
  TcpPair pair = make_pair();
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(manager.send_file(*id, -1, 0, 10), std::errc::bad_file_descriptor);
  EXPECT_FALSE(manager.send_file(*id, file, 500, 1000).value());  // 500 bytes exist
  EXPECT_FALSE(manager.close(*id).value());
  run_until(manager, [&] { return !recorder.reports.empty(); });
  ::close(file);
  ::close(pair.client);
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::send_error);
  EXPECT_EQ(recorder.reports[0].second.first_error, ENODATA);
  EXPECT_EQ(recorder.reports[0].second.bytes_sent, 500u);
}

// sendfile has no MSG_NOSIGNAL: to a reset peer it fails with EPIPE and raises SIGPIPE, whose
// default action kills the process. The manager must catch it: this test dies if it does not.
TEST_P(ManagerApi, SendFileToAResetPeerRaisesNoSigpipe) {
  struct sigaction previous {};
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ASSERT_EQ(sigaction(SIGPIPE, &default_action, &previous), 0);
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  const int file = file_with(pattern(100'000));
  TcpPair pair = make_pair();
  const linger reset{1, 0};
  ASSERT_EQ(setsockopt(pair.client, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)), 0);
  ::close(pair.client);  // RST
  // Take the pending ECONNRESET now, so that the next send sees the EPIPE that raises SIGPIPE.
  char byte = 0;
  for (int tries = 0; tries < 200; ++tries) {
    if (::recv(pair.server, &byte, 1, MSG_DONTWAIT) < 0 && errno == ECONNRESET) break;
    std::this_thread::sleep_for(5ms);
  }
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(manager.send_file(*id, file, 0, 100'000).value());
  EXPECT_FALSE(manager.close(*id).value());
  run_until(manager, [&] { return !recorder.reports.empty(); });
  ::close(file);
  sigset_t pending;
  sigpending(&pending);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0) << "a SIGPIPE was left pending";
  sigaction(SIGPIPE, &previous, nullptr);
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::peer_reset);
  EXPECT_EQ(recorder.reports[0].second.first_error, EPIPE) << "the path that raises SIGPIPE ran";
}

TEST_P(ManagerApi, StaleHandlesAndLateSendsAreRefused) {
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  TcpPair pair = make_pair();
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(manager.close(*id).value());
  EXPECT_EQ(manager.send(*id, "late"), std::errc::broken_pipe);
  EXPECT_FALSE(manager.close(*id).value()) << "a second close() is harmless";
  ::close(pair.client);  // the peer's FIN ends the drain
  run_until(manager, [&] { return !recorder.reports.empty(); });
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(manager.send(*id, "x"), std::errc::bad_file_descriptor);
  EXPECT_EQ(manager.close(*id), std::errc::bad_file_descriptor);
  EXPECT_EQ(manager.abort(*id), std::errc::bad_file_descriptor);
  EXPECT_EQ(manager.fd(*id), -1);
  EXPECT_FALSE(manager.state(*id).has_value());
  EXPECT_EQ(manager.send(ConnectionId{}, "x"), std::errc::bad_file_descriptor);
}

TEST_P(ManagerApi, AdoptRefusesBadFdsAndAFullTable) {
  Config config = base_config();
  config.max_connections = 1;
  Manager manager(config);
  EXPECT_FALSE(manager.adopt(-1).has_value());
  TcpPair first = make_pair();
  TcpPair second = make_pair();
  auto id = manager.adopt(first.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(manager.adopt(second.server).has_value()) << "the table holds one connection";
  ::close(second.server);  // refused: still ours to close
  ::close(second.client);
  EXPECT_FALSE(manager.abort(*id).value());
  run_until(manager, [&] { return !manager.state(*id).has_value(); });
  ::close(first.client);
}

TEST_P(ManagerApi, AbortResetsTheConnectionAtOnce) {
  Recorder recorder;
  Manager manager(base_config(), recorder.callbacks());
  TcpPair pair = make_pair();
  auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(manager.abort(*id).value());
  run_until(manager, [&] { return !recorder.reports.empty(); });
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(recorder.reports[0].second.reset_sent);
  set_receive_timeout(pair.client, 5s);
  const ReadResult read = read_to_end(pair.client);
  EXPECT_EQ(read.error, ECONNRESET);
  ::close(pair.client);
}

TEST_P(ManagerApi, InvalidConfigurationIsRejectedNamingTheField) {
  Config config = base_config();
  config.drain_idle_timeout_ms = 0;
  try {
    Manager manager(config);
    FAIL() << "an invalid configuration was accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("drain_idle_timeout_ms"), std::string::npos)
        << error.what();
  }
  config = base_config();
  config.ring_entries = 1000;  // not a power of two
  EXPECT_THROW(Manager{config}, std::invalid_argument);
}

TEST_P(ManagerStop, LingeringConnectionsAreResetAtTheStopDeadline) {
  Config config = base_config();
  config.drain_idle_timeout_ms = 60'000;  // the drain alone would take a minute
  Responder responder(config, tools::make_response(1000));
  constexpr int kClients = 20;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(responder.address));
    send_all(clients.back(), tools::make_request(0));
  }
  // Every connection answered and draining (the clients never send FIN).
  EXPECT_TRUE(responder.run_until(
      [&] { return responder.manager().stats().in_state(State::draining) == kClients; }));
  const auto start = std::chrono::steady_clock::now();
  responder.stop_and_finish(300ms);
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(responder.reports.size(), static_cast<std::size_t>(kClients));
  EXPECT_EQ(responder.count(Outcome::stop_deadline), static_cast<std::size_t>(kClients));
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);
  EXPECT_FALSE(responder.manager().run_once(0ms)) << "a stopped manager stays stopped";
  for (int fd : clients) ::close(fd);
}

TEST_P(ManagerStop, GracefulClosesInProgressFinishCleanly) {
  Responder responder(base_config(), tools::make_response(300'000));
  constexpr int kClients = 10;
  std::vector<ReadResult> reads(kClients);
  std::atomic<int> requests_sent{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      const int fd = connect_client(responder.address);
      set_receive_timeout(fd, 10s);
      send_all(fd, tools::make_request(20'000));
      ++requests_sent;
      std::this_thread::sleep_for(200ms);  // read late: the server is stopping meanwhile
      reads[static_cast<std::size_t>(i)] = read_to_end(fd);
      ::close(fd);
    });
  }
  EXPECT_TRUE(responder.run_until([&] {
    return requests_sent == kClients &&
           responder.manager().stats().closed_connections() + responder.manager().stats().in_state(State::flushing) +
                   responder.manager().stats().in_state(State::draining) >= kClients;
  }));
  responder.stop_and_finish(10s);
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(responder.count(Outcome::clean), static_cast<std::size_t>(kClients));
  for (const ReadResult& read : reads) {
    EXPECT_TRUE(read.bytes == responder.response()) << read.bytes.size() << " bytes";
    EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  }
}

}  // namespace
}  // namespace ringlinger

namespace ringlinger {
namespace {

using namespace testing_support;

TEST(ManagerRing, ATinySubmissionQueueStillCarriesHundredsOfConnections) {
  Config config;
  config.backend = IoBackend::io_uring;  // the submission queue is io_uring's
  config.ring_entries = 8;  // far fewer SQEs than the requests of one step
  config.max_connections = 400;
  Responder responder(config, tools::make_response(20'000));
  constexpr int kClients = 300;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(responder.address));
    ASSERT_GE(clients.back(), 0);
    set_receive_timeout(clients.back(), 10s);
    send_all(clients.back(), tools::make_request(0));
  }
  // All requests are in: one step now has hundreds of sends and receives to submit.
  expect_every_client_served(responder, clients, 30s);
  EXPECT_GT(responder.manager().stats().sq_full_submits, 0u) << "the full-queue path was not taken";
}

TEST(ManagerRing, AnAcceptBurstBeyondTheTableIsQueuedAndServedNeverLost) {
  Config config;
  config.ring_entries = 8;
  config.max_connections = 8;  // completion queue: 32 entries
  Responder responder(config, tools::make_response(1000));
  constexpr int kClients = 200;
  std::vector<int> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(responder.address));
    send_all(clients.back(), tools::make_request(0));
    ::shutdown(clients.back(), SHUT_WR);  // served at once: slots free up again
  }
  // The accept that drains the backlog finds 200 connections waiting for 8 slots (and a 32-entry
  // completion queue: the kernel ends a multishot accept when the queue is full, and the manager
  // drains again).
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    responder.manager().run_once(10ms);
    const Stats stats = responder.manager().stats();
    if (stats.connections_accepted + stats.accepts_rejected >= kClients) break;
  }
  // What the accept delivers beyond the table waits for a slot; nothing is refused.
  const Stats stats = responder.manager().stats();
  EXPECT_EQ(stats.connections_accepted, static_cast<std::uint64_t>(kClients))
      << "every connection is served, none lost; accepted " << stats.connections_accepted
      << ", rejected " << stats.accepts_rejected << ", queued " << stats.accepts_queued;
  EXPECT_EQ(stats.accepts_rejected, 0u);
  EXPECT_GT(stats.accepts_queued, 0u) << "the burst never outran the table: the test shows nothing";
  for (int fd : clients) ::close(fd);
  responder.stop_and_finish(2s);
  EXPECT_EQ(responder.manager().stats().live_connections(), 0u);
}

}  // namespace
}  // namespace ringlinger

namespace ringlinger {
namespace {

using namespace testing_support;

TEST_P(ManagerLifetime, DestroyingAManagerWithLingeringConnectionsClosesThemAndLeaksNothing) {
  std::vector<int> clients;
  const auto start = std::chrono::steady_clock::now();
  {
    Config config = base_config();
    config.drain_idle_timeout_ms = 60'000;
    Responder responder(config, tools::make_response(1000));
    for (int i = 0; i < 10; ++i) {
      clients.push_back(connect_client(responder.address));
      send_all(clients.back(), tools::make_request(0));
    }
    EXPECT_TRUE(responder.run_until(
        [&] { return responder.manager().stats().in_state(State::draining) == 10; }));
  }  // ~Manager: resets the 10 lingering connections and waits for their requests
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  for (int fd : clients) {
    set_receive_timeout(fd, 5s);
    const ReadResult read = read_to_end(fd);
    EXPECT_EQ(read.bytes, tools::make_response(1000)) << "the response was delivered before";
    ::close(fd);
  }
}

}  // namespace
}  // namespace ringlinger

// ---------------------------------------------------------------------------------------------
// Issue 15: post(), snapshot(), reconfigure() and the close-latency histogram over real TCP.

namespace ringlinger {
namespace {

using namespace testing_support;

class ManagerThreads : public BackendTest {};

// Another thread hands connections over, waits for each close, then reads the counters with
// snapshot() while run() drives the manager on this thread: they match what it did.
TEST_P(ManagerThreads, SnapshotFromAnotherThreadCountsWhatRunDid) {
  constexpr int kConnections = 20;
  Manager manager(base_config());
  std::optional<Stats> first;
  std::optional<Stats> last;
  std::atomic<int> done{0};  // counted on the manager's thread (on_done)
  // The reports' close latencies, summed on the manager's thread (this one: it runs run()). A
  // close may take no step time at all (the epoll backend can adopt, send, see the peer's FIN
  // and close within one loop step), so the sum is compared with the reports', not with 0.
  std::uint64_t reported_latency_ns = 0;
  std::thread other([&] {
    first = manager.snapshot(10s);
    std::vector<int> clients;
    for (int i = 0; i < kConnections; ++i) {
      TcpPair pair = make_pair();
      clients.push_back(pair.client);
      EXPECT_FALSE(manager.handoff(pair.server, "bye\n", [&](const CloseReport& report) {
        reported_latency_ns += static_cast<std::uint64_t>(report.close_latency().count());
        ++done;
      }));
    }
    for (int client : clients) {
      set_receive_timeout(client, 10s);
      EXPECT_EQ(read_to_end(client).bytes, "bye\n");
      ::close(client);
    }
    for (int i = 0; i < 1000 && done.load() < kConnections; ++i) {
      std::this_thread::sleep_for(10ms);  // each step waits on the done count, bounded
    }
    last = manager.snapshot(10s);
    manager.stop(10s);
  });
  manager.run();
  other.join();
  ASSERT_TRUE(first.has_value()) << "snapshot() from another thread got no answer while run()";
  EXPECT_EQ(first->connections_handed_off, 0u);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->connections_handed_off, static_cast<std::uint64_t>(kConnections));
  EXPECT_EQ(last->with_outcome(Outcome::clean), static_cast<std::uint64_t>(kConnections));
  EXPECT_EQ(last->bytes_sent, 4u * kConnections);
  std::uint64_t counted = 0;
  for (std::uint64_t count : last->close_latency_counts) counted += count;
  EXPECT_EQ(counted, static_cast<std::uint64_t>(kConnections)) << "one latency per requested close";
  EXPECT_EQ(last->close_latency_sum_ns, reported_latency_ns);
  // On the driving thread, between loop steps: at once, the same as stats().
  const std::optional<Stats> here = manager.snapshot(0ms);
  ASSERT_TRUE(here.has_value());
  EXPECT_EQ(here->closed_connections(), manager.stats().closed_connections());
}

// Tasks posted from another thread run on the manager's thread, in order; a task posted from a
// task (a callback) runs at a later step, not inside post(); once the manager finished, post()
// is refused; a task queued when the manager is destroyed is destroyed unrun.
TEST_P(ManagerThreads, PostRunsTasksInOrderOnTheManagersThread) {
  Manager manager(base_config());
  const std::thread::id manager_thread = std::this_thread::get_id();
  std::vector<int> ran;  // touched by tasks only: the manager's thread
  bool wrong_thread = false;
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) {
      EXPECT_FALSE(manager.post([&, i] {
        wrong_thread = wrong_thread || std::this_thread::get_id() != manager_thread;
        ran.push_back(i);
      }));
    }
  });
  producer.join();
  run_until(manager, [&] { return ran.size() == 100; });
  std::vector<int> expected(100);
  for (int i = 0; i < 100; ++i) expected[static_cast<std::size_t>(i)] = i;
  EXPECT_EQ(ran, expected);
  EXPECT_FALSE(wrong_thread);

  bool inner_ran = false;
  bool inner_ran_inside_post = true;
  EXPECT_FALSE(manager.post([&] {
    EXPECT_FALSE(manager.post([&] { inner_ran = true; }));
    inner_ran_inside_post = inner_ran;
  }));
  run_until(manager, [&] { return inner_ran; });
  EXPECT_TRUE(inner_ran);
  EXPECT_FALSE(inner_ran_inside_post) << "a task posted from a task ran inside post()";
  EXPECT_EQ(manager.post({}), std::make_error_code(std::errc::invalid_argument));

  manager.stop(0ms);
  while (manager.run_once(10ms)) {
  }
  EXPECT_EQ(manager.post([] {}), std::make_error_code(std::errc::operation_canceled));
  std::thread late([&] { EXPECT_EQ(manager.snapshot(10s), std::nullopt); });  // refused at once
  late.join();
}

TEST_P(ManagerThreads, ATaskQueuedWhenTheManagerIsDestroyedIsDestroyedUnrun) {
  bool ran = false;
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> watch = alive;
  {
    Manager manager(base_config());
    EXPECT_FALSE(manager.post([&ran, alive] { ran = true; }));
    alive.reset();
    EXPECT_FALSE(watch.expired()) << "the queued task holds its captures";
  }
  EXPECT_FALSE(ran);
  EXPECT_TRUE(watch.expired()) << "the task was not destroyed with the manager";
}

// Nobody drives the manager: snapshot() from another thread gives up after its wait. Once the
// owner drives it again, the abandoned read runs harmlessly, and snapshot() answers.
TEST_P(ManagerThreads, SnapshotOfAManagerNobodyDrivesReturnsNulloptAfterItsWait) {
  Manager manager(base_config());
  std::optional<Stats> got = Stats{};
  std::thread reader([&] { got = manager.snapshot(100ms); });
  reader.join();
  EXPECT_EQ(got, std::nullopt);
  manager.run_once(0ms);  // runs the abandoned read: its reply is no one's now
  std::optional<Stats> later;
  std::atomic<bool> answered{false};
  std::thread again([&] {
    later = manager.snapshot(10s);
    answered = true;
  });
  run_until(manager, [&] { return answered.load(); });
  again.join();
  EXPECT_TRUE(later.has_value());
}

// reconfigure(): an invalid value or a fixed field is refused with a message naming it, and
// nothing changes; a valid change is what config() says from then on.
TEST_P(ManagerThreads, ReconfigureNamesTheFieldItRefuses) {
  Manager manager(base_config());
  const Config before = manager.config();
  auto message_of = [&](const Config& config) -> std::string {
    try {
      manager.reconfigure(config);
    } catch (const std::invalid_argument& error) {
      return error.what();
    }
    return "(accepted)";
  };
  Config config = before;
  config.drain_idle_timeout_ms = 0;
  EXPECT_NE(message_of(config).find("drain_idle_timeout_ms"), std::string::npos);
  config = before;
  config.max_connections = before.max_connections / 2;
  EXPECT_EQ(message_of(config),
            "max_connections cannot change while the manager runs (restart to change it)");
  config = before;
  config.ring_entries = before.ring_entries * 2;
  EXPECT_EQ(message_of(config).rfind("ring_entries cannot change", 0), 0u);
  config = before;
  config.receive_buffer_bytes = before.receive_buffer_bytes * 2;
  EXPECT_EQ(message_of(config).rfind("receive_buffer_bytes cannot change", 0), 0u);
  EXPECT_EQ(manager.config().max_connections, before.max_connections);

  config = before;
  config.drain_idle_timeout_ms = 1234;
  config.drain_max_bytes = 4096;
  config.on_timeout = OnTimeout::reset;
  EXPECT_EQ(message_of(config), "(accepted)");
  EXPECT_EQ(manager.config().drain_idle_timeout_ms, 1234u);
  EXPECT_EQ(manager.config().drain_max_bytes, 4096u);
  EXPECT_EQ(manager.config().on_timeout, OnTimeout::reset);
}

// A drain idle timeout shortened through post() ends a silent peer's drain on a real socket.
TEST_P(ManagerThreads, ReconfigureThroughPostShortensTheDrainOfLaterConnections) {
  Config config = base_config();
  config.drain_idle_timeout_ms = 60'000;
  Recorder recorder;
  Manager manager(config, recorder.callbacks());
  config.drain_idle_timeout_ms = 50;
  std::thread other([&] { EXPECT_FALSE(manager.post([&] { manager.reconfigure(config); })); });
  other.join();
  run_until(manager, [&] { return manager.config().drain_idle_timeout_ms == 50; });
  TcpPair pair = make_pair();  // the client never reads nor closes: silent
  const auto id = manager.adopt(pair.server);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(manager.close(*id));
  run_until(manager, [&] { return !recorder.reports.empty(); }, 20s);
  ASSERT_EQ(recorder.reports.size(), 1u);
  EXPECT_EQ(recorder.reports[0].second.outcome, Outcome::drain_idle_timeout);
  ::close(pair.client);
}

INSTANTIATE_TEST_SUITE_P(Backends, ManagerThreads,
                         ::testing::Values(IoBackend::io_uring, IoBackend::epoll), backend_name);

}  // namespace
}  // namespace ringlinger

namespace ringlinger {
namespace {

using namespace testing_support;

INSTANTIATE_TEST_SUITE_P(Backends, ManagerApi, ::testing::Values(IoBackend::io_uring, IoBackend::epoll),
                         backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, ManagerStop, ::testing::Values(IoBackend::io_uring, IoBackend::epoll),
                         backend_name);
INSTANTIATE_TEST_SUITE_P(Backends, ManagerLifetime,
                         ::testing::Values(IoBackend::io_uring, IoBackend::epoll), backend_name);

}  // namespace
}  // namespace ringlinger
