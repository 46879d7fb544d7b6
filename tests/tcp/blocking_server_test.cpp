// The blocking server (the kernel-floor baseline) closes like the manager, one connection at a
// time, on real TCP over 127.0.0.1: a cooperative client gets the exact response and an EOF
// (clean), also with a request body the server never reads; a client that never sends FIN is cut
// off after drain_idle_timeout_ms; one that trickles forever after drain_timeout_ms in total; a
// flooding client after exactly drain_max_bytes + 1 discarded bytes; a client that resets is
// peer_reset, both while draining and while the server is blocked in send (no SIGPIPE); a client
// that never reads a big response is send_timeout (and gets an RST with reset_on_timeout); a
// malformed or too large head gets 400 or 431 and then a clean close; a head that does not arrive
// within head_timeout_ms is given up on at that time, even when the drain idle timeout is
// shorter (the accepted socket inherits the listener's SO_RCVTIMEO, or that test would hang);
// stop() ends an idle run() promptly; and 2000 connections from the real `ringlinger client`
// all complete. test_main checks every test for fd leaks.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "blocking_server.hpp"
#include "child_process.hpp"
#include "http.hpp"
#include "tcp_support.hpp"

namespace ringlinger::tools {
namespace {

using namespace testing_support;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

// A client socket that is closed on every way out of a test, so a failed assertion cannot leave
// the server blocked on it (and the test hanging in stop()).
class ClientSocket {
 public:
  explicit ClientSocket(int fd) noexcept : fd_(fd) {}
  ~ClientSocket() { close(); }
  ClientSocket(const ClientSocket&) = delete;
  ClientSocket& operator=(const ClientSocket&) = delete;
  int fd() const noexcept { return fd_; }
  void close() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Closes with an RST (SO_LINGER {1, 0}).
  void reset() noexcept {
    if (fd_ >= 0) reset_close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

class BlockingServerTest : public ::testing::Test {
 protected:
  void TearDown() override { stop(); }

  // Starts a server on 127.0.0.1, port 0, running in a thread.
  void start(BlockingServerOptions options) {
    options.listen = loopback_any_port();
    server_.emplace(options);
    thread_ = std::thread([this] { server_->run(); });
  }
  void stop() {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }
  BlockingServer& server() { return *server_; }
  ClientSocket connect() {
    const int fd = connect_client(server_->address());
    EXPECT_GE(fd, 0) << "connect failed";
    return ClientSocket(fd);
  }
  // Waits until `count` connections were closed by the server.
  bool wait_closed(std::uint64_t count, std::chrono::milliseconds limit = 20s) {
    const auto deadline = Clock::now() + limit;
    while (server_->connections_closed() < count) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
  std::uint64_t count(Outcome outcome) const {
    return server_->outcomes()[static_cast<std::size_t>(outcome)];
  }
  // The only outcome seen so far (fails when there were several kinds).
  std::optional<Outcome> only_outcome() const {
    std::optional<Outcome> seen;
    const auto counts = server_->outcomes();
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (counts[i] == 0) continue;
      if (seen) return std::nullopt;
      seen = static_cast<Outcome>(i);
    }
    return seen;
  }

 private:
  std::optional<BlockingServer> server_;
  std::thread thread_;
};

std::string outcome_name(std::optional<Outcome> outcome) {
  return outcome ? std::string(to_string(*outcome)) : "none or several";
}

TEST_F(BlockingServerTest, CooperativeClientGetsExactBytesAndEof) {
  start({});
  for (const std::uint64_t body_bytes : {0ull, 256ull * 1024}) {
    ClientSocket client = connect();
    ASSERT_TRUE(send_all(client.fd(), make_request(body_bytes)));
    const ReadResult result = read_to_end(client.fd());
    client.close();
    EXPECT_TRUE(result.clean_eof) << "error " << result.error;
    EXPECT_EQ(without_date(result.bytes), make_response(16384)) << "with a body of " << body_bytes;
  }
  ASSERT_TRUE(wait_closed(2));
  EXPECT_EQ(count(Outcome::clean), 2u);
  // The body is read and discarded after SHUT_WR, except what came in the head's read.
  EXPECT_GT(server().bytes_discarded(), 256u * 1024 - 4096);
  EXPECT_LE(server().bytes_discarded(), 256u * 1024);
  stop();
  EXPECT_EQ(server().close_latencies_us().size(), 2u);
}

TEST_F(BlockingServerTest, ClientThatNeverSendsFinIsCutOffAfterTheDrainIdleTimeout) {
  BlockingServerOptions options;
  options.drain_idle_timeout_ms = 300;
  start(options);
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  const ReadResult result = read_to_end(client.fd());  // the server's FIN: it is draining now
  EXPECT_TRUE(result.clean_eof);
  EXPECT_EQ(without_date(result.bytes), make_response(16384));
  const auto eof_at = Clock::now();
  ASSERT_TRUE(wait_closed(1));
  const auto waited = since(eof_at);
  client.close();
  EXPECT_EQ(only_outcome(), Outcome::drain_idle_timeout) << outcome_name(only_outcome());
  RecordProperty("waited_ms", static_cast<int>(waited.count()));
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 1500ms);
  stop();
  ASSERT_EQ(server().close_latencies_us().size(), 1u);
  EXPECT_GE(server().close_latencies_us()[0], 300'000u);
  EXPECT_LT(server().close_latencies_us()[0], 1'500'000u);
}

TEST_F(BlockingServerTest, TricklingClientIsCutOffAfterTheDrainTimeoutInTotal) {
  BlockingServerOptions options;
  options.drain_idle_timeout_ms = 300;
  options.drain_timeout_ms = 700;
  start(options);
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  EXPECT_TRUE(read_to_end(client.fd()).clean_eof);
  // One byte every 100 ms: never idle for 300 ms, so only the 700 ms total can end it.
  while (server().connections_closed() == 0 && send_all(client.fd(), "x")) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(wait_closed(1));
  client.close();
  EXPECT_EQ(only_outcome(), Outcome::drain_timeout) << outcome_name(only_outcome());
  stop();
  if (!server().close_latencies_us().empty()) {
    RecordProperty("close_latency_us", static_cast<int>(server().close_latencies_us()[0]));
  }
  ASSERT_EQ(server().close_latencies_us().size(), 1u);
  EXPECT_GE(server().close_latencies_us()[0], 700'000u);
  EXPECT_LT(server().close_latencies_us()[0], 1'500'000u);
}

TEST_F(BlockingServerTest, FloodingClientIsCutOffAtTheByteCap) {
  BlockingServerOptions options;
  options.drain_max_bytes = 1u << 20;
  start(options);
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  std::thread flood([fd = client.fd()] {
    const std::string chunk(64 * 1024, 'f');
    const auto give_up_at = Clock::now() + 10s;
    while (Clock::now() < give_up_at && send_all(fd, chunk)) {  // until the server's RST
    }
  });
  const ReadResult result = read_to_end(client.fd(), make_response(16384, http_date(0)).size());
  flood.join();
  ASSERT_TRUE(wait_closed(1));
  client.close();
  EXPECT_EQ(without_date(result.bytes), make_response(16384));
  EXPECT_EQ(only_outcome(), Outcome::drain_byte_cap) << outcome_name(only_outcome());
  EXPECT_EQ(server().bytes_discarded(), (1u << 20) + 1);  // asks for one byte past the cap
}

TEST_F(BlockingServerTest, ClientThatResetsWhileDrainingIsPeerReset) {
  start({});
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  EXPECT_TRUE(read_to_end(client.fd()).clean_eof);
  client.reset();
  ASSERT_TRUE(wait_closed(1));
  EXPECT_EQ(only_outcome(), Outcome::peer_reset) << outcome_name(only_outcome());
}

TEST_F(BlockingServerTest, ClientThatResetsDuringABlockedSendIsPeerResetWithoutSigpipe) {
  BlockingServerOptions options;
  options.response_bytes = 32u << 20;  // far more than the socket buffers hold
  start(options);
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  std::this_thread::sleep_for(200ms);  // the server fills the buffers and blocks in send
  client.reset();
  ASSERT_TRUE(wait_closed(1));
  EXPECT_EQ(only_outcome(), Outcome::peer_reset) << outcome_name(only_outcome());
  stop();
  EXPECT_TRUE(server().close_latencies_us().empty());  // the response was never handed over
}

TEST_F(BlockingServerTest, ClientThatNeverReadsABigResponseIsSendTimeoutAndGetsAReset) {
  BlockingServerOptions options;
  options.response_bytes = 32u << 20;
  options.send_timeout_ms = 300;
  options.reset_on_timeout = true;
  start(options);
  ClientSocket client = connect();
  ASSERT_TRUE(send_all(client.fd(), make_request(0)));
  const auto sent_at = Clock::now();
  ASSERT_TRUE(wait_closed(1));
  const auto waited = since(sent_at);
  EXPECT_EQ(only_outcome(), Outcome::send_timeout) << outcome_name(only_outcome());
  // SO_SNDTIMEO bounds each send call: the call that made the last progress waits it out too,
  // so the timeout fires between 1x and 2x send_timeout_ms after the peer stopped reading.
  RecordProperty("waited_ms", static_cast<int>(waited.count()));
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 3000ms);
  // SO_LINGER {1, 0}: what was queued is thrown away and the client reads into an RST.
  set_receive_timeout(client.fd(), 5s);
  const ReadResult result = read_to_end(client.fd());
  client.close();
  EXPECT_FALSE(result.clean_eof);
  EXPECT_EQ(result.error, ECONNRESET);
  EXPECT_LT(result.bytes.size(), make_response(32u << 20).size());
}

TEST_F(BlockingServerTest, MalformedOrTooLargeHeadGetsAnErrorResponseThenACleanClose) {
  start({});
  struct Case {
    std::string request;
    std::string response;
  };
  std::string huge_head = "GET / HTTP/1.1\r\n";
  while (huge_head.size() <= kMaxHeadBytes + 4096) huge_head += "X-Filler: aaaaaaaaaaaaaaaa\r\n";
  const Case cases[] = {
      {"NOT A REQUEST\r\n\r\n", make_error_response(400, "Bad Request")},
      {huge_head, make_error_response(431, "Request Header Fields Too Large")},
  };
  for (const Case& c : cases) {
    ClientSocket client = connect();
    ASSERT_TRUE(send_all(client.fd(), c.request));
    const ReadResult result = read_to_end(client.fd());
    client.close();
    EXPECT_TRUE(result.clean_eof) << "error " << result.error;
    EXPECT_EQ(without_date(result.bytes), c.response);
  }
  ASSERT_TRUE(wait_closed(2));
  EXPECT_EQ(count(Outcome::clean), 2u);
}

TEST_F(BlockingServerTest, HeadThatDoesNotArriveIsGivenUpAtTheHeadTimeout) {
  // head_timeout_ms > drain_idle_timeout_ms: the inherited SO_RCVTIMEO is the drain idle
  // timeout, so the head is waited for in steps until its own deadline.
  BlockingServerOptions options;
  options.head_timeout_ms = 500;
  options.drain_idle_timeout_ms = 150;
  start(options);
  ClientSocket client = connect();
  const auto connected_at = Clock::now();
  ASSERT_TRUE(send_all(client.fd(), "GET / HTTP/1.1\r\n"));  // never finished
  set_receive_timeout(client.fd(), 5s);
  const ReadResult result = read_to_end(client.fd());
  const auto waited = since(connected_at);
  client.close();
  RecordProperty("waited_ms", static_cast<int>(waited.count()));
  EXPECT_TRUE(result.clean_eof);  // everything sent was read: close() sends FIN
  EXPECT_TRUE(result.bytes.empty());
  EXPECT_GE(waited, 450ms);
  EXPECT_LT(waited, 2000ms);
  ASSERT_TRUE(wait_closed(1));
  EXPECT_EQ(only_outcome(), Outcome::receive_error) << outcome_name(only_outcome());
}

TEST_F(BlockingServerTest, EofBeforeAHeadClosesCleanlyWithoutAnAnswer) {
  start({});
  ClientSocket client = connect();
  ::shutdown(client.fd(), SHUT_WR);
  const ReadResult result = read_to_end(client.fd());
  client.close();
  EXPECT_TRUE(result.clean_eof);
  EXPECT_TRUE(result.bytes.empty());
  ASSERT_TRUE(wait_closed(1));
  EXPECT_EQ(only_outcome(), Outcome::clean) << outcome_name(only_outcome());
}

TEST_F(BlockingServerTest, StopEndsAnIdleRunPromptly) {
  start({});
  std::this_thread::sleep_for(50ms);
  const auto stop_at = Clock::now();
  stop();
  EXPECT_LT(since(stop_at), 1000ms);  // the accept loop polls every 100 ms
}

TEST_F(BlockingServerTest, TwoThousandConnectionsFromTheRealClientAllComplete) {
  start({});
  char path[] = "/tmp/ringlinger-blocking-test-XXXXXX";
  const int path_fd = mkstemp(path);
  ASSERT_GE(path_fd, 0);
  ::close(path_fd);
  ChildProcess client({ringlinger_exe(),
                       {"client", "--connect", server().address().to_string(), "--connections",
                        "2000", "--concurrency", "100", "--response-bytes", "16KiB", "--timeout",
                        "30s", "--json", path},
                       -1,
                       false});
  const int exit_code = client.wait(120s);
  std::ifstream file(path);
  const nlohmann::json report = nlohmann::json::parse(file, nullptr, false);
  std::remove(path);
  EXPECT_EQ(exit_code, 0);
  ASSERT_TRUE(report.is_object()) << "the client wrote no report";
  EXPECT_EQ(report["complete"], 2000u) << report.dump(2);
  EXPECT_EQ(report["failed"], 0u) << report.dump(2);
  ASSERT_TRUE(wait_closed(2000));
  EXPECT_EQ(count(Outcome::clean), 2000u);
  stop();
  EXPECT_EQ(server().close_latencies_us().size(), 2000u);
}

}  // namespace
}  // namespace ringlinger::tools
