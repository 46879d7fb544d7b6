// How the manager ends connections with each kind of peer, on real TCP over loopback: a peer
// that half-closes, one behind a tiny send buffer (partial sends), one that sends late pipelined
// data, one that never sends FIN, one that floods during the drain, one that resets mid-response,
// one that never reads. Each test checks the outcome reported, the accounting, and for peers that
// read, the exact bytes AND a clean EOF. Everything runs on both backends (io_uring and epoll);
// the cooperative cases also for both shutdown modes and with and without DEFER_TASKRUN.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace testing_support;

struct RingVariant {
  IoBackend backend;
  ShutdownMode shutdown;
  bool defer_taskrun;
};

class CooperativePeer : public ::testing::TestWithParam<RingVariant> {
 protected:
  Config base_config() const {
    Config config;
    config.backend = GetParam().backend;
    config.shutdown_mode = GetParam().shutdown;
    config.defer_taskrun = GetParam().defer_taskrun;
    return config;
  }
};

TEST_P(CooperativePeer, HalfClosingPeerGetsEverything) {
  Responder responder(base_config(), tools::make_response(200'000));
  ReadResult read;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(10'000));
    ::shutdown(fd, SHUT_WR);  // our request is complete: FIN right after it
    read = read_to_end(fd);
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  client.join();
  EXPECT_EQ(read.bytes, responder.response());
  EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  ASSERT_EQ(responder.reports.size(), 1u);
  EXPECT_EQ(responder.reports[0].second.outcome, Outcome::clean);
  EXPECT_EQ(responder.reports[0].second.first_error, 0);
}

TEST_P(CooperativePeer, PartialSendsBehindATinySendBufferAreResumedInOrder) {
  Responder responder(base_config(), tools::make_response(1 << 20));
  responder.on_accept_hook = [&](ConnectionId id) {
    const int size = 4096;
    setsockopt(responder.manager().fd(id), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
  };
  ReadResult read;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(0));
    read = read_to_end(fd);
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  client.join();
  EXPECT_EQ(read.bytes.size(), responder.response().size());
  EXPECT_TRUE(read.bytes == responder.response()) << "bytes out of order or corrupt";
  EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  ASSERT_EQ(responder.reports.size(), 1u);
  EXPECT_EQ(responder.reports[0].second.outcome, Outcome::clean);
  EXPECT_EQ(responder.reports[0].second.bytes_sent, responder.response().size());
  // 1 MiB through a few KiB of buffers cannot go in one send: it was resumed many times.
  EXPECT_GT(responder.manager().stats().completions, 20u);
}

TEST_P(CooperativePeer, LatePipelinedRequestDoesNotResetTheResponse) {
  Responder responder(base_config(), tools::make_response(1 << 20));
  ReadResult read;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(0));
    std::this_thread::sleep_for(50ms);  // the server has answered and asked to close by now
    send_all(fd, tools::make_request(0) + tools::make_request(0));  // pipelined, never read
    std::this_thread::sleep_for(50ms);
    read = read_to_end(fd);
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  client.join();
  EXPECT_TRUE(read.bytes == responder.response()) << read.bytes.size() << " bytes";
  EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  ASSERT_EQ(responder.reports.size(), 1u);
  EXPECT_EQ(responder.reports[0].second.outcome, Outcome::clean);
  EXPECT_GT(responder.reports[0].second.bytes_discarded, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    RingVariants, CooperativePeer,
    ::testing::Values(RingVariant{IoBackend::io_uring, ShutdownMode::syscall, true},
                      RingVariant{IoBackend::io_uring, ShutdownMode::ring, true},
                      RingVariant{IoBackend::io_uring, ShutdownMode::syscall, false},
                      RingVariant{IoBackend::io_uring, ShutdownMode::ring, false},
                      RingVariant{IoBackend::epoll, ShutdownMode::syscall, true},
                      RingVariant{IoBackend::epoll, ShutdownMode::ring, true}),
    [](const ::testing::TestParamInfo<RingVariant>& variant) {
      if (variant.param.backend == IoBackend::epoll) {
        return std::string("Epoll") +
               (variant.param.shutdown == ShutdownMode::ring ? "DeferredShutdown" : "SyscallShutdown");
      }
      return std::string(variant.param.shutdown == ShutdownMode::ring ? "RingShutdown" : "SyscallShutdown") +
             (variant.param.defer_taskrun ? "DeferTaskrun" : "Plain");
    });

// The hostile peers, on both backends.
class HostilePeer : public ::testing::TestWithParam<IoBackend> {
 protected:
  Config base_config() const {
    Config config;
    config.backend = GetParam();
    return config;
  }
};

TEST_P(HostilePeer, PeerThatNeverSendsFinIsClosedAtTheDrainIdleTimeout) {
  Config config = base_config();
  config.drain_idle_timeout_ms = 200;
  Responder responder(config, tools::make_response(50'000));
  ReadResult read;
  std::atomic<bool> release{false};
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(0));
    read = read_to_end(fd);  // ends at our FIN; the client keeps its side open
    while (!release) std::this_thread::sleep_for(5ms);
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  release = true;
  client.join();
  EXPECT_TRUE(read.bytes == responder.response());
  EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::drain_idle_timeout);
  EXPECT_GE(report.drain_time, 200ms);  // never before the timeout
  EXPECT_LT(report.drain_time, 5s);     // and not forgotten
}

TEST_P(HostilePeer, PeerThatFloodsDuringTheDrainIsCutOffAtTheByteCap) {
  Config config = base_config();
  config.drain_max_bytes = 1 << 20;
  Responder responder(config, tools::make_response(1000));
  std::atomic<bool> stop{false};
  std::uint64_t flooded = 0;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    send_all(fd, tools::make_request(0));
    const std::string chunk(64 * 1024, 'f');
    timeval tv{0, 200'000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!stop && std::chrono::steady_clock::now() < deadline) {
      const ssize_t sent = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;  // reset by the server
      if (sent > 0) flooded += static_cast<std::uint64_t>(sent);
    }
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  stop = true;
  client.join();
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::drain_byte_cap);
  // Receives ask for at most one byte beyond the cap, so the cut is exact.
  EXPECT_EQ(report.bytes_discarded, config.drain_max_bytes + 1);
  EXPECT_GT(flooded, config.drain_max_bytes);
}

TEST_P(HostilePeer, PeerThatResetsMidResponseIsReportedOnceAndKillsNothing) {
  // SIGPIPE keeps its default action here: a send without MSG_NOSIGNAL would kill the test.
  Responder responder(base_config(), tools::make_response(16 << 20));
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(0));
    (void)read_to_end(fd, 64 * 1024);
    reset_close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  client.join();
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::peer_reset);
  EXPECT_TRUE(report.first_error == ECONNRESET || report.first_error == EPIPE)
      << "first error " << report.first_error;
  EXPECT_LT(report.bytes_sent, responder.response().size());
  EXPECT_EQ(responder.manager().stats().with_outcome(Outcome::peer_reset), 1u);
}

TEST_P(HostilePeer, PeerThatNeverReadsEndsAtTheSendTimeoutWithAReset) {
  Config config = base_config();
  config.send_timeout_ms = 300;
  config.on_timeout = OnTimeout::reset;
  Responder responder(config, tools::make_response(32 << 20));
  std::atomic<bool> release{false};
  ReadResult read;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    const int size = 8192;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    send_all(fd, tools::make_request(0));
    while (!release) std::this_thread::sleep_for(5ms);  // never reads while the server waits
    set_receive_timeout(fd, 5s);
    read = read_to_end(fd);
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1));
  release = true;
  client.join();
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::send_timeout);
  EXPECT_TRUE(report.reset_sent);
  EXPECT_GE(report.flush_time + report.open_time, 300ms);
  EXPECT_EQ(read.error, ECONNRESET) << "the client should see the reset";
}

TEST_P(HostilePeer, SlowReaderStillConsumingOurDataOutlastsTheDrainIdleTimeout) {
  // Silence from the peer is not idleness while it is still acknowledging our data: a reset at
  // the drain idle timeout would throw away the part of the response it has not read yet.
  // 1 s: long enough that a loaded machine (two cores, builds beside the tests) does not keep
  // the reading thread off the CPU for a whole period, which would be real idleness; the
  // response takes about 2.6 s to read, so the timer still fires during the drain (asserted).
  Config config = base_config();
  config.drain_idle_timeout_ms = 1'000;
  config.on_timeout = OnTimeout::reset;
  Responder responder(config, tools::make_response(4 << 20));
  ReadResult read;
  std::thread client([&] {
    const int fd = connect_client(responder.address);
    const int size = 64 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    set_receive_timeout(fd, 10s);
    send_all(fd, tools::make_request(0));
    char buffer[16 * 1024];
    while (true) {  // 16 KiB every 10 ms: about 1.6 MB/s, 2.6 s for the whole response
      const ssize_t count = ::recv(fd, buffer, sizeof(buffer), 0);
      if (count <= 0) {
        read.clean_eof = count == 0;
        read.error = count < 0 ? errno : 0;
        break;
      }
      read.bytes.append(buffer, static_cast<std::size_t>(count));
      std::this_thread::sleep_for(10ms);
    }
    ::close(fd);
  });
  EXPECT_TRUE(responder.run_until_closed(1, 30s));
  client.join();
  EXPECT_EQ(read.bytes.size(), responder.response().size());
  EXPECT_TRUE(read.bytes == responder.response());
  EXPECT_TRUE(read.clean_eof) << "errno " << read.error;
  ASSERT_EQ(responder.reports.size(), 1u);
  const CloseReport& report = responder.reports[0].second;
  EXPECT_EQ(report.outcome, Outcome::clean)
      << "flush " << std::chrono::duration<double>(report.flush_time).count() << " s, drain "
      << std::chrono::duration<double>(report.drain_time).count() << " s, extensions "
      << responder.manager().stats().drain_idle_extensions;
  EXPECT_GE(responder.manager().stats().drain_idle_extensions, 1u)
      << "the drain idle timer never fired: the test did not test the extension";
}

INSTANTIATE_TEST_SUITE_P(Backends, HostilePeer,
                         ::testing::Values(IoBackend::io_uring, IoBackend::epoll),
                         [](const ::testing::TestParamInfo<IoBackend>& backend) {
                           return backend.param == IoBackend::epoll ? "Epoll" : "IoUring";
                         });

}  // namespace
}  // namespace ringlinger
