// Helpers for tests on real TCP sockets over 127.0.0.1 (port 0, read back with getsockname):
// a responder built on the Manager like `ringlinger serve`, blocking client sockets, and a loop
// driver. Clients run in threads (a few connections) or in a child process running the real
// `ringlinger client` (thousands).
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http.hpp"
#include "ringlinger/ringlinger.hpp"

namespace ringlinger::testing_support {

using namespace std::chrono_literals;

// Path of the `ringlinger` program (meson passes it in RINGLINGER_EXE).
inline std::string ringlinger_exe() {
  const char* path = std::getenv("RINGLINGER_EXE");
  return path != nullptr ? path : "cli/ringlinger";
}

inline SocketAddress loopback_any_port() { return *SocketAddress::parse("127.0.0.1:0"); }

// A Manager that answers every request head with a fixed response and then closes gracefully,
// recording every close report.
class Responder {
 public:
  explicit Responder(Config config = {}, std::string response = tools::make_response(16384))
      : response_(std::move(response)), heads_(config.max_connections) {
    Callbacks callbacks;
    callbacks.on_accept = [this](ConnectionId id) {
      heads_[id.slot].reset();
      if (on_accept_hook) on_accept_hook(id);
    };
    callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
      if (data.empty()) {
        (void)manager_->close(id);
        return;
      }
      if (heads_[id.slot].feed(data) != tools::HeadReader::Status::complete) return;
      (void)manager_->send_view(id, std::as_bytes(std::span(response_)));
      if (close_after_response) (void)manager_->close(id);
    };
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      reports.emplace_back(id, report);
      closed_at.push_back(std::chrono::steady_clock::now());
    };
    manager_.emplace(config, std::move(callbacks));
    address = manager_->listen(loopback_any_port());
  }

  Manager& manager() { return *manager_; }

  // Runs the loop until `done()` or `limit`; returns whether `done()` became true.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      manager_->run_once(10ms);
    }
    return true;
  }
  bool run_until_closed(std::size_t count, std::chrono::milliseconds limit = 20s) {
    return run_until([&] { return reports.size() >= count; }, limit);
  }
  // Stops the manager gracefully and runs it until it is done.
  void stop_and_finish(std::chrono::milliseconds grace = 5s) {
    manager_->stop(grace);
    const auto deadline = std::chrono::steady_clock::now() + grace + 5s;
    while (manager_->run_once(10ms) && std::chrono::steady_clock::now() < deadline) {
    }
  }
  std::size_t count(Outcome outcome) const {
    std::size_t n = 0;
    for (const auto& [id, report] : reports) n += report.outcome == outcome ? 1 : 0;
    return n;
  }

  const std::string& response() const { return response_; }

  SocketAddress address;
  std::vector<std::pair<ConnectionId, CloseReport>> reports;
  // When each report arrived (its fd closed): minus teardown_time, when its outcome was decided.
  std::vector<std::chrono::steady_clock::time_point> closed_at;
  std::function<void(ConnectionId)> on_accept_hook;
  bool close_after_response = true;

 private:
  std::string response_;
  std::vector<tools::HeadReader> heads_;
  std::optional<Manager> manager_;
};

// A blocking client socket connected to `address`. `receive_buffer` (bytes, 0: the default) is
// set before connecting, so that the window the client offers from its first segment on, and its
// window scale, follow it (set later, the buffer shrinks but the window offered already does not).
// `max_segment` (TCP_MAXSEG, 0: the default, 65483 bytes over loopback) makes segments the size
// they are on a real network: a receiver reopens a closed window only once a whole segment fits.
inline int connect_client(const SocketAddress& address, int receive_buffer = 0,
                          int max_segment = 0) {
  const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (receive_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
  }
  if (max_segment > 0) setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &max_segment, sizeof(max_segment));
  if (::connect(fd, address.data(), address.size()) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

inline void set_receive_timeout(int fd, std::chrono::milliseconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

// Sends everything (MSG_NOSIGNAL); false on error.
inline bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(sent));
  }
  return true;
}

// What a client read until the connection ended.
struct ReadResult {
  std::string bytes;
  bool clean_eof = false;  // recv returned 0
  int error = 0;           // errno of the failing recv, if it failed
};

// Reads until EOF, an error, or `limit` bytes.
inline ReadResult read_to_end(int fd, std::size_t limit = SIZE_MAX) {
  ReadResult result;
  char buffer[65536];
  while (result.bytes.size() < limit) {
    const ssize_t count = ::recv(fd, buffer, std::min(sizeof(buffer), limit - result.bytes.size()), 0);
    if (count == 0) {
      result.clean_eof = true;
      break;
    }
    if (count < 0) {
      if (errno == EINTR) continue;
      result.error = errno;
      break;
    }
    result.bytes.append(buffer, static_cast<std::size_t>(count));
  }
  return result;
}

// Runs the responder while another thread reads each client to its end and closes it; then
// checks that every client got the whole response and a clean EOF, and that each connection
// ended clean. For tests that send all the requests before the manager runs.
inline void expect_every_client_served(Responder& responder, const std::vector<int>& clients,
                                       std::chrono::milliseconds limit) {
  std::vector<ReadResult> reads(clients.size());
  std::thread readers([&] {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      reads[i] = read_to_end(clients[i]);
      ::close(clients[i]);
    }
  });
  EXPECT_TRUE(responder.run_until_closed(clients.size(), limit));
  readers.join();
  EXPECT_EQ(responder.count(Outcome::clean), clients.size());
  for (const ReadResult& read : reads) {
    EXPECT_TRUE(read.bytes == responder.response() && read.clean_eof);
  }
}

// Closes with an RST (SO_LINGER {1, 0}).
inline void reset_close(int fd) {
  const linger reset{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  ::close(fd);
}

}  // namespace ringlinger::testing_support
