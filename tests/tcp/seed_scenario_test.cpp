// The seed scenario, as a regression test with a control. Clients post a 64 KiB body the server
// never reads and start reading 50 ms late. A plain close() server on that workload MUST lose
// data here (so the check is proven able to fail); the manager must lose none, for one
// connection with a 1 MiB response and for 5000 concurrent connections with 256 KiB responses,
// on io_uring and on the epoll fallback.
// "None" means, for every connection, the exact bytes AND a clean EOF, judged by the real
// `ringlinger client` running in its own process.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "naive_server.hpp"
#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace testing_support;
using tools::ChildProcess;

struct Workload {
  std::uint64_t connections;
  std::uint64_t response_bytes;
};

// Runs `ringlinger client` with the seed workload against `address` while `pump` (called every
// ~10 ms) keeps the server side going; returns the client's JSON report.
nlohmann::json run_seed_client(const SocketAddress& address, Workload workload,
                               const std::function<void()>& pump) {
  char path[] = "/tmp/ringlinger-test-XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  ::close(fd);
  ChildProcess client({ringlinger_exe(),
                       {"client", "--connect", address.to_string(), "--connections",
                        std::to_string(workload.connections), "--concurrency",
                        std::to_string(workload.connections), "--response-bytes",
                        std::to_string(workload.response_bytes), "--body-bytes", "64KiB",
                        "--read-delay", "50ms", "--timeout", "60s", "--json", path},
                       -1,
                       false});
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (!client.exited() && std::chrono::steady_clock::now() < deadline) pump();
  client.wait(1s);
  std::ifstream file(path);
  nlohmann::json report = nlohmann::json::parse(file, nullptr, false);
  std::remove(path);
  return report;
}

void expect_nothing_lost(const nlohmann::json& client, std::uint64_t connections) {
  ASSERT_TRUE(client.is_object()) << "the client wrote no report";
  EXPECT_EQ(client["complete"], connections) << client.dump(2);
  EXPECT_EQ(client["failed"], 0u) << client.dump(2);
  EXPECT_EQ(client["payload_bytes_lost"], 0u) << client.dump(2);
}

void expect_loss(const nlohmann::json& client) {
  ASSERT_TRUE(client.is_object()) << "the client wrote no report";
  EXPECT_GT(client["failed"].get<std::uint64_t>(), 0u) << client.dump(2);
  EXPECT_GT(client["payload_bytes_lost"].get<std::uint64_t>(), 0u) << client.dump(2);
}

// The control: the naive server in a thread of this process.
nlohmann::json run_against_plain_close(Workload workload) {
  tools::NaiveServer server({loopback_any_port(), workload.response_bytes, 4096});
  std::thread serving([&] { server.run(); });
  auto report = run_seed_client(server.address(), workload,
                                [] { std::this_thread::sleep_for(10ms); });
  server.stop();
  serving.join();
  return report;
}

nlohmann::json run_against_manager(Workload workload, Responder& responder) {
  auto report = run_seed_client(responder.address, workload,
                                [&] { responder.manager().run_once(10ms); });
  EXPECT_TRUE(responder.run_until_closed(workload.connections, 30s));
  return report;
}

TEST(SeedScenario, PlainCloseLosesTheResponseOfOneConnection) {
  expect_loss(run_against_plain_close({1, 1 << 20}));
}

TEST(SeedScenario, ManagerDeliversAllOfOneMiBAndEof) {
  Responder responder(Config{}, tools::make_response(1 << 20));
  expect_nothing_lost(run_against_manager({1, 1 << 20}, responder), 1);
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::clean);
  EXPECT_EQ(report.bytes_sent, responder.response().size());
  // Some of the 64 KiB body came with the head; the rest was drained and discarded.
  EXPECT_GT(report.bytes_discarded, 0u);
  EXPECT_EQ(report.bytes_received + report.bytes_discarded,
            tools::make_request(64 * 1024).size());
}

TEST(SeedScenario, PlainCloseLosesDataAtFiveThousandConcurrent) {
  expect_loss(run_against_plain_close({5000, 256 * 1024}));
}

TEST(SeedScenario, ManagerLosesNothingAtFiveThousandConcurrent) {
  Config config;
  config.max_connections = 6000;
  Responder responder(config, tools::make_response(256 * 1024));
  expect_nothing_lost(run_against_manager({5000, 256 * 1024}, responder), 5000);
  EXPECT_EQ(responder.count(Outcome::clean), 5000u);
  const Stats stats = responder.manager().stats();
  const double enters_per_close =
      static_cast<double>(stats.enter_calls) / static_cast<double>(stats.closed_connections());
  RecordProperty("io_uring_enter_per_close", std::to_string(enters_per_close));
  std::printf("io_uring_enter calls per close at 5000 concurrent: %.4f (%llu calls, %llu closes)\n",
              enters_per_close, static_cast<unsigned long long>(stats.enter_calls),
              static_cast<unsigned long long>(stats.closed_connections()));
  EXPECT_LT(enters_per_close, 1.0);
  EXPECT_EQ(stats.stale_completions, 0u);
  EXPECT_EQ(stats.live_connections(), 0u);
}

TEST(SeedScenario, EpollFallbackLosesNothingAtFiveThousandConcurrent) {
  Config config;
  config.backend = IoBackend::epoll;
  config.max_connections = 6000;
  Responder responder(config, tools::make_response(256 * 1024));
  ASSERT_EQ(responder.manager().backend(), IoBackend::epoll);
  expect_nothing_lost(run_against_manager({5000, 256 * 1024}, responder), 5000);
  EXPECT_EQ(responder.count(Outcome::clean), 5000u);
  const Stats stats = responder.manager().stats();
  EXPECT_EQ(stats.enter_calls, 0u);
  std::printf("epoll backend: %.2f system calls per close at 5000 concurrent\n",
              static_cast<double>(stats.syscalls) / static_cast<double>(stats.closed_connections()));
}

}  // namespace
}  // namespace ringlinger
