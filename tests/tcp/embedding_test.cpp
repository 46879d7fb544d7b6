// Embedding the manager in a proxy, on real TCP over 127.0.0.1: driven from the host's own epoll
// loop (event_fd, poll_timeout, poll), handoff() from several producer threads (also run under
// ThreadSanitizer by tools/test --tsan), half-close, flow control, adopting a socket that is
// still connecting, and SO_REUSEPORT listeners.
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "ringlinger/ringlinger.hpp"
#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace std::chrono_literals;
using testing_support::connect_client;
using testing_support::read_to_end;
using testing_support::send_all;
using testing_support::set_receive_timeout;
using Clock = std::chrono::steady_clock;

Config config_for(IoBackend backend) {
  Config config;
  config.backend = backend;
  config.max_connections = 1024;
  config.ring_entries = 256;
  return config;
}

std::string pattern(std::size_t size, std::size_t seed = 0) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>('a' + (i * 7 + seed) % 26);
  return bytes;
}

// A plain blocking listener the test owns, to make connected pairs of sockets.
class PlainListener {
 public:
  PlainListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::listen(fd_, 1024), 0);
    address_ = *SocketAddress::local_of(fd_);
  }
  ~PlainListener() { ::close(fd_); }
  const SocketAddress& address() const { return address_; }
  int accept() const { return ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC); }
  // {client side, server side}
  std::pair<int, int> pair() const {
    const int client = connect_client(address_);
    return {client, accept()};
  }

 private:
  int fd_ = -1;
  SocketAddress address_;
};

// The host's loop: an epoll set holding only the manager's event_fd; returns how many waits
// ended because it was readable, and counts in `timed_out` the waits that ended by their timeout.
int drive_from_epoll(Manager& manager, const std::function<bool()>& done,
                     Clock::duration limit = 20s, int* timed_out = nullptr) {
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  EXPECT_EQ(epoll_ctl(epoll_fd, EPOLL_CTL_ADD, manager.event_fd(), &event), 0);
  int readable = 0;
  const auto deadline = Clock::now() + limit;
  while (!done() && Clock::now() < deadline) {
    // A long cap: if event_fd() did not wake us, the test would miss its deadline.
    const auto timeout = manager.poll_timeout(5s);
    epoll_event ready{};
    const int count = epoll_wait(epoll_fd, &ready, 1, static_cast<int>(timeout.count()));
    if (count > 0) ++readable;
    if (count == 0 && timeout.count() > 0 && timed_out != nullptr) ++*timed_out;
    manager.poll();
  }
  ::close(epoll_fd);
  return readable;
}

class EmbeddingTest : public ::testing::TestWithParam<IoBackend> {};

// The host's epoll loop is the only thing that runs the manager: an accepted connection gets its
// response and a graceful close, with every byte and a clean EOF.
TEST_P(EmbeddingTest, HostEpollLoopDrivesTheManager) {
  const std::string response = pattern(256 * 1024);
  std::vector<CloseReport> reports;
  Manager* manager_ptr = nullptr;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    EXPECT_FALSE(manager_ptr->send(id, response));
    EXPECT_FALSE(manager_ptr->close(id));
  };
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  // Every wait must end by event_fd(), so no timer may come due, however slowly the clients run
  // (under TSan beside stress-ng --cpu 6, serving the 200 took 22-37 s): the timeouts, the
  // clients' receive timeout and the loop's limit only guard against a hang here.
  Config config = config_for(GetParam());
  config.send_timeout_ms = config.drain_idle_timeout_ms = config.drain_timeout_ms = 200'000;
  Manager manager(config, callbacks);
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());

  // Enough at once that one poll() has more than 20 completions to take: the kernel runs at most
  // 20 pieces of deferred task work per io_uring_enter that waits for none, and does not signal
  // the eventfd again for the rest (the wait would then end only by its timeout).
  constexpr int kClients = 200;
  std::vector<testing_support::ReadResult> results(kClients);
  std::vector<std::thread> clients;
  // Nobody runs the manager until every client thread exists; a client that connected and then
  // waited on its receive timeout while the others were still being created would give up
  // before the loop began (under TSan beside other work, creating the 200 threads took 13-27 s,
  // longer than the 10 s receive timeout then, and 183 of 200 clients gave up and reset). So they
  // start together, when the loop is about to run.
  std::atomic<bool> start{false};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      start.wait(false);
      const int fd = connect_client(address);
      set_receive_timeout(fd, 150s);
      send_all(fd, "GET / HTTP/1.1\r\n\r\n");
      results[static_cast<std::size_t>(i)] = read_to_end(fd);
      ::close(fd);
    });
  }
  start = true;
  start.notify_all();
  int timed_out = 0;
  // Until the manager closed them all (the clients' own progress would not wake the loop).
  const int readable = drive_from_epoll(
      manager, [&] { return reports.size() == kClients; }, 180s, &timed_out);
  for (std::thread& client : clients) client.join();
  // No timer is due in this scenario (see the config): each wait must end because event_fd()
  // became readable.
  EXPECT_EQ(timed_out, 0) << "waits that ended by their timeout with work pending";
  ASSERT_EQ(reports.size(), std::size_t{kClients});
  for (const auto& result : results) {
    EXPECT_EQ(result.bytes.size(), response.size());
    EXPECT_TRUE(result.bytes == response);
    EXPECT_TRUE(result.clean_eof) << "errno " << result.error;
  }
  for (const CloseReport& report : reports) EXPECT_EQ(report.outcome, Outcome::clean);
  EXPECT_GT(readable, 0) << "event_fd() never woke the host's epoll_wait";
}

// One poll() takes every completion that is ready, however many: io_uring_enter without a wait
// runs at most 20 pieces of the ring's deferred task work, and the kernel does not signal the
// event fd again for the rest, so a host loop would sleep on them until its timeout.
TEST_P(EmbeddingTest, OnePollTakesEveryReadyCompletion) {
  constexpr int kConnections = 100;
  int deliveries = 0;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId, std::span<const std::byte> data) {
    if (!data.empty()) ++deliveries;
  };
  Manager manager(config_for(GetParam()), callbacks);
  PlainListener listener;
  std::vector<int> clients;
  for (int i = 0; i < kConnections; ++i) {
    auto [client, server] = listener.pair();
    clients.push_back(client);
    ASSERT_TRUE(manager.adopt(server).has_value());
  }
  manager.poll();  // the receives are submitted
  // Every peer sends; on loopback the data, and the ring's work for it, is there when send()
  // returns.
  for (int client : clients) ASSERT_TRUE(send_all(client, "x"));
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(epoll_fd, EPOLL_CTL_ADD, manager.event_fd(), &event), 0);
  epoll_event ready{};
  EXPECT_EQ(epoll_wait(epoll_fd, &ready, 1, 5000), 1) << "event_fd() not readable";
  manager.poll();
  EXPECT_EQ(deliveries, kConnections) << "one poll() left completions behind";
  ::close(epoll_fd);
  for (int client : clients) ::close(client);
  for (int i = 0; i < 20 && manager.stats().live_connections() > 0; ++i) {
    manager.poll();
    std::this_thread::sleep_for(10ms);
  }
}

// handoff() from four producer threads while the manager's thread runs its loop: every fd is
// closed gracefully after its final bytes, every on_done runs exactly once, on the manager's
// thread.
TEST_P(EmbeddingTest, HandoffFromSeveralThreads) {
  constexpr int kProducers = 4;
  constexpr int kPerProducer = 100;
  constexpr int kTotal = kProducers * kPerProducer;
  std::atomic<bool> stop_loop{false};
  std::thread::id loop_thread;
  std::mutex reports_mutex;  // on_done runs on the manager's thread; the test reads after join
  std::vector<CloseReport> reports;
  std::atomic<int> wrong_thread{0};
  // The manager is created on the thread that drives it (its ring has a single issuer).
  std::optional<Manager> manager_storage;
  std::atomic<bool> ready{false};
  std::thread loop([&] {
    loop_thread = std::this_thread::get_id();
    manager_storage.emplace(config_for(GetParam()));
    ready = true;
    const auto deadline = Clock::now() + 60s;
    while (Clock::now() < deadline) {
      manager_storage->run_once(1s);  // a long wait: handoff() must wake it
      std::lock_guard lock(reports_mutex);
      if (stop_loop && reports.size() == kTotal) break;
    }
  });
  while (!ready) std::this_thread::sleep_for(1ms);
  Manager& manager = *manager_storage;
  std::atomic<int> complete{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      PlainListener listener;  // its own: accept() must return this producer's connection
      for (int i = 0; i < kPerProducer; ++i) {
        auto [client, server] = listener.pair();
        ASSERT_GE(client, 0);
        ASSERT_GE(server, 0);
        const std::string final_bytes = pattern(16 * 1024 + static_cast<std::size_t>(i), static_cast<std::size_t>(p));
        const std::error_code error =
            manager.handoff(server, final_bytes, [&](const CloseReport& report) {
              if (std::this_thread::get_id() != loop_thread) ++wrong_thread;
              std::lock_guard lock(reports_mutex);
              reports.push_back(report);
            });
        EXPECT_FALSE(error);
        set_receive_timeout(client, 10s);
        const testing_support::ReadResult result = read_to_end(client);
        ::close(client);
        if (result.bytes == final_bytes && result.clean_eof) ++complete;
      }
    });
  }
  for (std::thread& producer : producers) producer.join();
  stop_loop = true;
  loop.join();
  EXPECT_EQ(complete.load(), kTotal) << "connections that got every byte and a clean EOF";
  ASSERT_EQ(reports.size(), std::size_t{kTotal});
  for (const CloseReport& report : reports) EXPECT_EQ(report.outcome, Outcome::clean);
  EXPECT_EQ(wrong_thread.load(), 0);
  const Stats stats = manager.stats();
  EXPECT_EQ(stats.connections_handed_off, std::uint64_t{kTotal});
  EXPECT_EQ(stats.with_outcome(Outcome::clean), std::uint64_t{kTotal});
  EXPECT_GE(stats.handoff_wakes, 1u);
  EXPECT_EQ(stats.live_connections(), 0u);
}

// A host-driven manager is woken by handoff() through event_fd() (the wake pipe's read
// completes in the ring, which signals the ring's registered eventfd).
TEST_P(EmbeddingTest, HandoffWakesAHostDrivenManager) {
  Manager manager(config_for(GetParam()));
  PlainListener listener;
  std::atomic<int> done{0};
  std::atomic<bool> clean{true};
  std::thread producer([&] {
    for (int i = 0; i < 20; ++i) {
      auto [client, server] = listener.pair();
      (void)manager.handoff(server, "bye\n", [&](const CloseReport& report) {
        if (report.outcome != Outcome::clean) clean = false;
        ++done;
      });
      set_receive_timeout(client, 10s);
      const auto result = read_to_end(client);
      EXPECT_EQ(result.bytes, "bye\n");
      EXPECT_TRUE(result.clean_eof);
      ::close(client);
    }
  });
  const int readable = drive_from_epoll(manager, [&] { return done == 20; });
  producer.join();
  EXPECT_EQ(done.load(), 20);
  EXPECT_TRUE(clean.load());
  EXPECT_GT(readable, 0);
}

TEST_P(EmbeddingTest, HandoffErrorsAndTeardown) {
  PlainListener listener;
  auto [client, server] = listener.pair();
  std::vector<CloseReport> reports;
  {
    Manager manager(config_for(GetParam()));
    EXPECT_EQ(manager.handoff(-1, "x"), std::make_error_code(std::errc::bad_file_descriptor));
    // Queued, never taken by a loop step: the destructor resets it and reports it.
    EXPECT_FALSE(manager.handoff(server, "never sent",
                                 [&](const CloseReport& report) { reports.push_back(report); }));
  }
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, Outcome::aborted);
  EXPECT_TRUE(reports[0].reset_sent);
  set_receive_timeout(client, 5s);
  const auto result = read_to_end(client);
  EXPECT_TRUE(result.bytes.empty());
  EXPECT_EQ(result.error, ECONNRESET);
  ::close(client);
}

// shutdown_write(): our FIN follows the response while the peer can still send; its data keeps
// arriving at on_receive, then its EOF; close() then ends cleanly.
TEST_P(EmbeddingTest, HalfClose) {
  PlainListener listener;
  int client = -1, server = -1;  // variables, not bindings: clang 14 cannot capture bindings
  std::tie(client, server) = listener.pair();
  const std::string response = pattern(512 * 1024);
  std::string received;
  bool peer_eof = false;
  std::vector<CloseReport> reports;
  Manager* manager_ptr = nullptr;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) {
      peer_eof = true;
      EXPECT_FALSE(manager_ptr->close(id));
      return;
    }
    const bool first = received.empty();
    received.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (first) {
      EXPECT_FALSE(manager_ptr->send(id, response));
      EXPECT_FALSE(manager_ptr->shutdown_write(id));
      EXPECT_FALSE(manager_ptr->shutdown_write(id));  // harmless
      EXPECT_EQ(manager_ptr->send(id, "late"), std::make_error_code(std::errc::broken_pipe));
    }
  };
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  ASSERT_TRUE(manager.adopt(server).has_value());
  std::thread peer([&] {
    set_receive_timeout(client, 10s);
    send_all(client, "request");
    const auto result = read_to_end(client);  // our FIN ends it while the peer's side is open
    EXPECT_EQ(result.bytes.size(), response.size());
    EXPECT_TRUE(result.bytes == response);
    EXPECT_TRUE(result.clean_eof);
    EXPECT_TRUE(send_all(client, "|after our FIN"));  // the peer can still talk
    ::shutdown(client, SHUT_WR);
    char byte;
    EXPECT_EQ(::recv(client, &byte, 1, 0), 0);
    ::close(client);
  });
  const auto deadline = Clock::now() + 20s;
  while (reports.empty() && Clock::now() < deadline) manager.run_once(100ms);
  peer.join();
  EXPECT_EQ(received, "request|after our FIN");
  EXPECT_TRUE(peer_eof);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, Outcome::clean);
  EXPECT_EQ(reports[0].bytes_sent, response.size());
  EXPECT_EQ(manager.stats().write_shutdowns, 1u);
}

// pause_receive() stops deliveries (at most the receive already in flight still delivers);
// resume_receive() brings the rest. on_send_drained() runs once the queue is empty.
TEST_P(EmbeddingTest, FlowControl) {
  PlainListener listener;
  int client = -1, server = -1;  // variables, not bindings: clang 14 cannot capture bindings
  std::tie(client, server) = listener.pair();
  const std::string upload = pattern(2 * 1024 * 1024);
  const std::string download = pattern(4 * 1024 * 1024, 3);
  std::string received;
  int deliveries_while_paused = 0;
  bool paused = false;
  bool eof = false;
  int drained = 0;
  std::uint64_t queued_after_send = 0;
  std::uint64_t queued_when_drained = 1;
  std::optional<ConnectionId> connection;
  Manager* manager_ptr = nullptr;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) {
      eof = true;
      return;
    }
    if (paused) ++deliveries_while_paused;
    if (received.empty()) {
      EXPECT_FALSE(manager_ptr->pause_receive(id));
      paused = true;
    }
    received.append(reinterpret_cast<const char*>(data.data()), data.size());
  };
  callbacks.on_send_drained = [&](ConnectionId id) {
    ++drained;
    queued_when_drained = manager_ptr->queued_bytes(id);
  };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  connection = manager.adopt(server);
  ASSERT_TRUE(connection.has_value());
  ASSERT_FALSE(manager.send(*connection, download));
  queued_after_send = manager.queued_bytes(*connection);
  std::thread peer([&] {
    EXPECT_TRUE(send_all(client, upload));
    ::shutdown(client, SHUT_WR);
    set_receive_timeout(client, 10s);
    const auto result = read_to_end(client);
    EXPECT_TRUE(result.bytes == download);
    EXPECT_TRUE(result.clean_eof);
    ::close(client);
  });
  // Paused: run steps until the download is drained; deliveries must stay stopped meanwhile.
  auto deadline = Clock::now() + 20s;
  while (drained == 0 && Clock::now() < deadline) manager.run_once(100ms);
  for (int i = 0; i < 5; ++i) manager.run_once(20ms);
  EXPECT_LE(deliveries_while_paused, 1);
  EXPECT_LT(received.size(), upload.size());
  paused = false;
  EXPECT_FALSE(manager.resume_receive(*connection));
  deadline = Clock::now() + 20s;
  while (!eof && Clock::now() < deadline) manager.run_once(100ms);
  EXPECT_EQ(received.size(), upload.size());
  EXPECT_TRUE(received == upload);
  EXPECT_EQ(drained, 1);
  EXPECT_EQ(queued_after_send, download.size());
  EXPECT_EQ(queued_when_drained, 0u);
  EXPECT_FALSE(manager.close(*connection));
  deadline = Clock::now() + 20s;
  while (manager.state(*connection) && Clock::now() < deadline) manager.run_once(100ms);
  peer.join();
  EXPECT_EQ(manager.pause_receive(*connection), std::make_error_code(std::errc::bad_file_descriptor));
  EXPECT_EQ(manager.queued_bytes(*connection), 0u);
}

int connecting_socket(const SocketAddress& address) {
  const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int result = ::connect(fd, address.data(), address.size());
  EXPECT_TRUE(result == 0 || errno == EINPROGRESS) << errno;
  return fd;
}

// adopt() takes a socket whose non-blocking connect() is still in progress (a proxy's upstream
// leg): queued bytes go out once it connects; a refused connect ends it with ECONNREFUSED.
TEST_P(EmbeddingTest, AdoptAConnectingSocket) {
  PlainListener listener;
  std::vector<CloseReport> reports;
  Callbacks callbacks;
  callbacks.on_receive = [](ConnectionId, std::span<const std::byte>) {};
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  Manager manager(config_for(GetParam()), callbacks);
  const std::string request = pattern(300 * 1024);
  const auto id = manager.adopt(connecting_socket(listener.address()));
  ASSERT_TRUE(id.has_value());
  ASSERT_FALSE(manager.send(*id, request));
  ASSERT_FALSE(manager.close(*id));
  std::thread upstream([&] {
    const int fd = listener.accept();
    set_receive_timeout(fd, 10s);
    const auto result = read_to_end(fd);
    EXPECT_TRUE(result.bytes == request);
    EXPECT_TRUE(result.clean_eof);
    ::close(fd);
  });
  // A port nobody listens on: bound, then closed.
  SocketAddress refused_address;
  {
    PlainListener gone;
    refused_address = gone.address();
  }
  ASSERT_TRUE(manager.adopt(connecting_socket(refused_address)).has_value());
  const auto deadline = Clock::now() + 20s;
  while (reports.size() < 2 && Clock::now() < deadline) manager.run_once(100ms);
  upstream.join();
  ASSERT_EQ(reports.size(), 2u);
  int clean = 0;
  int refused = 0;
  for (const CloseReport& report : reports) {
    if (report.outcome == Outcome::clean && report.bytes_sent == request.size()) ++clean;
    if (report.outcome != Outcome::clean && report.first_error == ECONNREFUSED) ++refused;
  }
  EXPECT_EQ(clean, 1);
  EXPECT_EQ(refused, 1);
}

// An adopted descriptor's number is its owner's too (it may dup2 onto it once told that it is
// closed): its close is reported only once the kernel ran it, even for a drain the peer's FIN
// ended, which the manager reports at the close's submission for the sockets it accepted itself.
TEST_P(EmbeddingTest, AnAdoptedDescriptorIsClosedWhenItsCloseIsReported) {
  PlainListener listener;
  int adopted_fd = -1;
  std::optional<int> fcntl_error;  // errno of fcntl(F_GETFD) inside on_closed, 0 if it worked
  Callbacks callbacks;
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) {
    EXPECT_EQ(report.outcome, Outcome::clean);
    fcntl_error = fcntl(adopted_fd, F_GETFD) == -1 ? errno : 0;
  };
  Manager manager(config_for(GetParam()), callbacks);
  adopted_fd = connecting_socket(listener.address());
  const auto id = manager.adopt(adopted_fd);
  ASSERT_TRUE(id.has_value());
  ASSERT_FALSE(manager.send(*id, "hello"));
  ASSERT_FALSE(manager.close(*id));
  std::thread peer([&] {
    const int fd = listener.accept();
    set_receive_timeout(fd, 10s);
    const auto result = read_to_end(fd);
    EXPECT_EQ(result.bytes, "hello");
    EXPECT_TRUE(result.clean_eof);
    ::close(fd);  // its FIN ends the drain
  });
  const auto deadline = Clock::now() + 20s;
  while (!fcntl_error && Clock::now() < deadline) manager.run_once(100ms);
  peer.join();
  EXPECT_EQ(fcntl_error, EBADF) << "on_closed ran while the adopted fd was still open";
}

TEST_P(EmbeddingTest, ReusePortListeners) {
  Manager first(config_for(GetParam()));
  Manager second(config_for(GetParam()));
  const SocketAddress bound = first.listen(testing_support::loopback_any_port(), 128, true);
  EXPECT_EQ(second.listen(bound, 128, true).port(), bound.port());
  Manager third(config_for(GetParam()));
  EXPECT_THROW(third.listen(bound, 128, false), std::system_error);
}

// The listening socket of `port` in this process (-1 if none): /proc/self/fd, then
// SO_ACCEPTCONN and the bound port.
int listener_fd(std::uint16_t port) {
  for (int fd = 0; fd < 1024; ++fd) {
    int accepting = 0;
    socklen_t size = sizeof(accepting);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) != 0 || accepting == 0) continue;
    const auto local = SocketAddress::local_of(fd);
    if (local && local->port() == port) return fd;
  }
  return -1;
}

int defer_accept_of(std::uint16_t port) {
  const int fd = listener_fd(port);
  int seconds = -1;
  socklen_t size = sizeof(seconds);
  if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, &size) != 0) return -1;
  return seconds;
}

// ListenOptions::defer_accept: the listener gets TCP_DEFER_ACCEPT (one second), and a client
// that connects and stays silent is not accepted before it sends, nor before the kernel's
// SYN-ACK retransmission a second after its connect: then it is, its request served in full.
TEST_P(EmbeddingTest, DeferredAcceptTakesASilentClientOnlyAfterItsFirstBytesOrASecond) {
  const std::string response = pattern(64 * 1024);
  Manager* manager_ptr = nullptr;
  std::optional<Clock::time_point> accepted_at;
  std::vector<CloseReport> reports;
  Callbacks callbacks;
  callbacks.on_accept = [&](ConnectionId) { accepted_at = Clock::now(); };
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    EXPECT_FALSE(manager_ptr->send(id, response));
    EXPECT_FALSE(manager_ptr->close(id));
  };
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  const SocketAddress deferred = manager.listen(testing_support::loopback_any_port(),
                                                ListenOptions{.defer_accept = true});
  const SocketAddress plain = manager.listen(testing_support::loopback_any_port());
  EXPECT_EQ(defer_accept_of(deferred.port()), 1);
  EXPECT_EQ(defer_accept_of(plain.port()), 0);

  const Clock::time_point connected_at = Clock::now();
  const int fd = connect_client(deferred);
  ASSERT_GE(fd, 0);
  set_receive_timeout(fd, 20s);
  // Silent until accepted: the kernel holds the connection for its retransmission, about 1 s.
  while (!accepted_at && Clock::now() - connected_at < 10s) manager.run_once(50ms);
  ASSERT_TRUE(accepted_at) << "a silent client was not accepted 10 s after its connect";
  EXPECT_GE(*accepted_at - connected_at, 900ms) << "accepted before the deferral ended";
  testing_support::ReadResult result;
  std::thread client([&] {
    send_all(fd, "GET / HTTP/1.1\r\n\r\n");
    result = read_to_end(fd);
    ::close(fd);
  });
  while (reports.empty() && Clock::now() - connected_at < 30s) manager.run_once(50ms);
  client.join();
  EXPECT_TRUE(result.bytes == response);
  EXPECT_TRUE(result.clean_eof) << "errno " << result.error;
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, Outcome::clean);
}

// abort_after_send() after close(): the send close() marked for its FIN (the io_uring backend
// holds its last segment) is pushed out all the same, every byte reaches the peer, then the reset.
// (Were it not pushed, a kernel timer would send it some 200 ms later, measured: this checks the
// bytes and the reset, not how soon.)
TEST_P(EmbeddingTest, AbortAfterSendFollowingACloseSendsEveryByteThenResets) {
  // One segment's worth: held whole, with nothing of ours in flight whose acknowledgement would
  // push it out.
  const std::string response = pattern(16 * 1024);
  Manager* manager_ptr = nullptr;
  std::vector<CloseReport> reports;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    EXPECT_FALSE(manager_ptr->send(id, response));
    EXPECT_FALSE(manager_ptr->close(id));
    EXPECT_FALSE(manager_ptr->abort_after_send(id));
  };
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());
  testing_support::ReadResult result;
  std::thread client([&] {
    const int fd = connect_client(address);
    set_receive_timeout(fd, 10s);
    send_all(fd, "GET / HTTP/1.1\r\n\r\n");
    result = read_to_end(fd);
    ::close(fd);
  });
  const auto start = Clock::now();
  while (reports.empty() && Clock::now() - start < 30s) manager.run_once(50ms);
  client.join();
  EXPECT_TRUE(result.bytes == response) << result.bytes.size() << " of " << response.size() << " bytes";
  EXPECT_FALSE(result.clean_eof);
  EXPECT_EQ(result.error, ECONNRESET);
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_EQ(reports[0].outcome, Outcome::aborted);
}

// send_view_and_close() and send_and_close(): the bytes, then a clean end of stream, also behind
// bytes queued before them (then the two calls' path); refused like send_view() (nothing queued,
// not closed) on a closing or half-closed connection and a stale id.
TEST_P(EmbeddingTest, SendViewAndCloseSendsEveryByteThenTheEnd) {
  const std::string first = pattern(100'000);  // more than one send: still in flight at the call
  const std::string last = pattern(16 * 1024);
  Manager* manager_ptr = nullptr;
  std::vector<CloseReport> reports;
  std::size_t answered = 0;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    Manager& manager = *manager_ptr;
    const bool behind = answered % 2 == 1;  // every other one: bytes queued before it
    const bool owned = answered++ % 3 == 2;  // every third one: send_and_close(), a copy
    if (behind) {
      EXPECT_FALSE(manager.send_view(id, std::as_bytes(std::span(first))));
    }
    if (owned) {
      EXPECT_FALSE(manager.send_and_close(id, last));
    } else {
      EXPECT_FALSE(manager.send_view_and_close(id, std::as_bytes(std::span(last))));
    }
    EXPECT_EQ(manager.send_view_and_close(id, std::as_bytes(std::span(last))),
              std::make_error_code(std::errc::broken_pipe));  // closing: nothing more queued
  };
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) { reports.push_back(report); };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());
  constexpr std::size_t kClients = 6;
  std::vector<testing_support::ReadResult> results(kClients);
  for (std::size_t i = 0; i < kClients; ++i) {
    std::thread client([&, i] {
      const int fd = connect_client(address);
      set_receive_timeout(fd, 10s);
      send_all(fd, "GET / HTTP/1.1\r\n\r\n");
      results[i] = read_to_end(fd);
      ::close(fd);
    });
    const auto start = Clock::now();
    while (reports.size() <= i && Clock::now() - start < 30s) manager.run_once(50ms);
    client.join();
  }
  ASSERT_EQ(reports.size(), kClients);
  for (std::size_t i = 0; i < kClients; ++i) {
    const std::string expected = (i % 2 == 1 ? first : std::string()) + last;
    EXPECT_TRUE(results[i].bytes == expected) << i << ": " << results[i].bytes.size() << " bytes";
    EXPECT_TRUE(results[i].clean_eof) << i << ": errno " << results[i].error;
    EXPECT_EQ(reports[i].outcome, Outcome::clean);
    EXPECT_EQ(reports[i].bytes_sent, expected.size());
  }
  EXPECT_EQ(manager.send_view_and_close(ConnectionId{}, std::as_bytes(std::span(last))),
            std::make_error_code(std::errc::bad_file_descriptor));
}

// How a test's server answers a request: the response, then the close.
using Answer = std::function<void(Manager&, ConnectionId, const std::string& response)>;

void send_view_and_close(Manager& manager, ConnectionId id, const std::string& response) {
  EXPECT_FALSE(manager.send_view_and_close(id, std::as_bytes(std::span(response))));
}

// Callbacks that answer each request with `answer` (through `manager`, set once it is made) and
// count in `clean` the connections that ended clean.
Callbacks answering(Manager*& manager, const std::string& response, Answer answer,
                    std::size_t& clean) {
  Callbacks callbacks;
  callbacks.on_receive = [&manager, &response, answer = std::move(answer)](
                             ConnectionId id, std::span<const std::byte> data) {
    if (!data.empty()) answer(*manager, id, response);
  };
  callbacks.on_closed = [&clean](ConnectionId, const CloseReport& report) {
    EXPECT_EQ(report.outcome, Outcome::clean);
    ++clean;
  };
  return callbacks;
}

// The sockets this process holds whose local port is `port`: the listener's, and every
// connection accepted from it.
int sockets_on_port(std::uint16_t port) {
  int count = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    const auto local = SocketAddress::local_of(fd);
    if (local && local->port() == port) ++count;
  }
  return count;
}

// A drain the peer's FIN ends closes with no completion on io_uring (reported at once, the fd
// closed by the next io_uring_enter): when that was the loop's last step, run_once() submits the
// closes before it returns false, so no fd outlives the loop until the Manager is destroyed.
TEST_P(EmbeddingTest, TheLastClosesRunBeforeTheLoopEnds) {
  const std::string response = pattern(16 * 1024);
  Manager* manager_ptr = nullptr;
  std::size_t closed = 0;
  Manager manager(config_for(GetParam()),
                  answering(manager_ptr, response, send_view_and_close, closed));
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());
  constexpr std::size_t kClients = 8;
  std::vector<int> clients;
  for (std::size_t i = 0; i < kClients; ++i) {
    clients.push_back(connect_client(address));
    set_receive_timeout(clients.back(), 10s);
    send_all(clients.back(), "GET / HTTP/1.1\r\n\r\n");
  }
  // Each client reads the response and the server's FIN; the server then drains, waiting for
  // theirs, which come once the listener is gone.
  std::vector<testing_support::ReadResult> results(kClients);
  std::atomic<bool> read_all{false};
  std::thread reader([&] {
    for (std::size_t i = 0; i < kClients; ++i) results[i] = read_to_end(clients[i]);
    read_all = true;
  });
  auto limit = Clock::now() + 30s;
  while (!read_all && Clock::now() < limit) manager.run_once(10ms);
  reader.join();
  manager.stop(10s);
  while (sockets_on_port(address.port()) > static_cast<int>(kClients) && Clock::now() < limit) {
    manager.run_once(10ms);  // the listener closes; the connections linger
  }
  ASSERT_EQ(sockets_on_port(address.port()), static_cast<int>(kClients));
  for (const int fd : clients) ::close(fd);
  limit = Clock::now() + 30s;
  while (manager.run_once(50ms) && Clock::now() < limit) {
  }
  EXPECT_EQ(closed, kClients);
  EXPECT_EQ(sockets_on_port(address.port()), 0) << "closes still unsubmitted when run_once() ended";
  for (std::size_t i = 0; i < kClients; ++i) {
    EXPECT_EQ(results[i].bytes, response) << i;
    EXPECT_TRUE(results[i].clean_eof) << i;
  }
}

// After shutdown_write() our FIN may be out: send_view_and_close() is refused and closes nothing.
TEST_P(EmbeddingTest, SendViewAndCloseAfterAHalfCloseIsRefused) {
  Manager* manager_ptr = nullptr;
  std::optional<ConnectionId> half;
  Callbacks callbacks;
  callbacks.on_receive = [&](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty() || half) return;
    half = id;
    EXPECT_FALSE(manager_ptr->shutdown_write(id));
    EXPECT_EQ(manager_ptr->send_view_and_close(id, std::as_bytes(std::span("x", 1))),
              std::make_error_code(std::errc::broken_pipe));
    EXPECT_EQ(manager_ptr->state(id), State::open);
  };
  Manager manager(config_for(GetParam()), callbacks);
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());
  const int fd = connect_client(address);
  set_receive_timeout(fd, 10s);
  send_all(fd, "GET / HTTP/1.1\r\n\r\n");
  const auto start = Clock::now();
  while (!half && Clock::now() - start < 10s) manager.run_once(50ms);
  ASSERT_TRUE(half.has_value());
  const testing_support::ReadResult result = read_to_end(fd);  // our FIN, no bytes
  EXPECT_TRUE(result.bytes.empty());
  EXPECT_TRUE(result.clean_eof);
  EXPECT_EQ(manager.state(*half), State::open);  // still open: receiving goes on
  ::close(fd);
}

// A response followed by the close: on io_uring the send holds its last segment (MSG_MORE) and
// the shutdown sends it with the FIN, one segment (one fewer per close). So the peer's first
// wake-up finds the bytes and the end of the stream together: without the hold, the FIN follows
// the data a loop step later. `answer` sends the response and closes.
void expect_first_wake_ups_with_the_end(const Answer& answer) {
  const std::string response = pattern(16 * 1024);
  Manager* manager_ptr = nullptr;
  std::size_t closed = 0;
  Manager manager(config_for(IoBackend::io_uring),
                  answering(manager_ptr, response, answer, closed));
  manager_ptr = &manager;
  const SocketAddress address = manager.listen(testing_support::loopback_any_port());
  constexpr std::size_t kClients = 20;
  std::vector<short> first_events(kClients, 0);
  std::vector<testing_support::ReadResult> results(kClients);
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      const int fd = connect_client(address);
      set_receive_timeout(fd, 10s);
      send_all(fd, "GET / HTTP/1.1\r\n\r\n");
      pollfd watch{fd, POLLIN | POLLRDHUP, 0};
      if (::poll(&watch, 1, 10'000) == 1) first_events[i] = watch.revents;
      results[i] = read_to_end(fd);
      ::close(fd);
    });
  }
  const auto start = Clock::now();
  while (closed < kClients && Clock::now() - start < 30s) manager.run_once(50ms);
  for (std::thread& client : clients) client.join();
  ASSERT_EQ(closed, kClients);
  for (std::size_t i = 0; i < kClients; ++i) {
    EXPECT_TRUE(results[i].bytes == response);
    EXPECT_TRUE(results[i].clean_eof) << "errno " << results[i].error;
    EXPECT_EQ(first_events[i] & (POLLIN | POLLRDHUP), POLLIN | POLLRDHUP)
        << "client " << i << ": the first wake-up had the data without the FIN";
  }
}

TEST(FinWithTheResponse, ThePeersFirstWakeUpFindsTheDataAndTheEnd) {
  expect_first_wake_ups_with_the_end([](Manager& manager, ConnectionId id, const std::string& r) {
    EXPECT_FALSE(manager.send(id, r));
    EXPECT_FALSE(manager.close(id));
  });
}

TEST(FinWithTheResponse, SendViewAndCloseSendsTheDataAndTheEndTogether) {
  expect_first_wake_ups_with_the_end(send_view_and_close);
}

INSTANTIATE_TEST_SUITE_P(Backends, EmbeddingTest,
                         ::testing::Values(IoBackend::io_uring, IoBackend::epoll),
                         [](const auto& param_info) {
                           return std::string(param_info.param == IoBackend::io_uring ? "io_uring"
                                                                                : "epoll");
                         });

}  // namespace
}  // namespace ringlinger
