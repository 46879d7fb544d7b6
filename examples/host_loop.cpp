// A complete small embedding: a server with its own epoll loop and its own worker threads, which
// lets ringlinger do every close. Build it against an installed ringlinger:
//   c++ -std=c++20 host_loop.cpp $(pkg-config --cflags --libs ringlinger) -o host_loop
// Run: ./host_loop 100   (serves 100 connections on 127.0.0.1, port printed, then exits)
//
// The host owns the listening socket and the epoll loop. For each connection it reads the
// request itself; then either
//   - the loop thread gives the socket to the manager (adopt + send + close), or
//   - a worker thread builds the response and calls handoff(), which is thread-safe;
// and the manager sends the response, shuts down its write side, drains the client's unread
// input and closes, so the client never gets a reset instead of the response.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <ringlinger/ringlinger.hpp>

namespace {

// The host's listening socket on 127.0.0.1, on a port the kernel picks (printed); -1 on failure.
int listen_on_loopback() {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(listener, 512) != 0) {
    std::perror("listen");
    return -1;
  }
  socklen_t length = sizeof(address);
  getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length);
  std::printf("listening on 127.0.0.1:%d\n", ntohs(address.sin_port));
  std::fflush(stdout);
  return listener;
}

// What the host's loop works with.
struct Host {
  int listener;
  ringlinger::Manager& manager;
  const ringlinger::Callbacks& callbacks;
  std::atomic<int>& closed;
  int accepted = 0;
  std::vector<std::thread> workers;
};

// A new connection: the host reads the request, then gives the socket and the response to the
// manager, every other time from a worker thread.
void respond(Host& host, int client) {
  // The host's own work: read the request (a real server parses it; blocking here for brevity),
  // decide the response.
  char request[1024];
  (void)!recv(client, request, sizeof(request), 0);
  std::string response = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
  if (++host.accepted % 2 == 0) {
    // From this thread: adopt, queue, close. Calls made outside callbacks are submitted by the
    // next poll(); poll_timeout() returns 0 until then.
    if (auto id = host.manager.adopt(client)) {
      host.manager.send(*id, std::move(response));
      host.manager.close(*id);
    } else {
      close(client);  // table full: a real server would answer 503 first
      ++host.closed;
    }
  } else {
    // From a worker thread: handoff() is thread-safe and never blocks; the manager's thread
    // adopts the socket, sends, closes, then calls the callback with the close report.
    host.workers.emplace_back([&host, client, response = std::move(response)]() mutable {
      host.manager.handoff(client, std::move(response),
                           [&host](const ringlinger::CloseReport& report) {
                             // On the manager's thread, like on_closed.
                             host.callbacks.on_closed({}, report);
                           });
    });
  }
}

// The host's epoll loop, until `to_serve` connections are closed.
void serve(Host& host, int to_serve) {
  using namespace std::chrono_literals;
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = host.listener;
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, host.listener, &event);
  event.data.fd = host.manager.event_fd();  // readable when the manager has work
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, host.manager.event_fd(), &event);

  while (host.closed < to_serve) {
    epoll_event ready[64];
    // Never sleep past the manager's next timer (a drain timeout).
    const int count = epoll_wait(epoll_fd, ready, 64,
                                 static_cast<int>(host.manager.poll_timeout(1s).count()));
    for (int i = 0; i < count; ++i) {
      if (ready[i].data.fd != host.listener) continue;  // the manager's fd: poll() below
      int client;
      while ((client = accept4(host.listener, nullptr, nullptr, SOCK_CLOEXEC)) >= 0) {
        respond(host, client);
      }
    }
    host.manager.poll();  // handle completions, submit what was queued, expire timers
  }
  for (std::thread& worker : host.workers) worker.join();
  close(epoll_fd);
}

}  // namespace

int main(int argc, char** argv) {
  const int to_serve = argc > 1 ? std::atoi(argv[1]) : 100;
  const int listener = listen_on_loopback();
  if (listener < 0) return 1;

  // The manager: created on the thread that drives it, with nginx-like drain limits.
  ringlinger::Config config;
  config.drain_idle_timeout_ms = 5'000;  // nginx lingering_timeout
  config.drain_timeout_ms = 30'000;      // nginx lingering_time
  config.drain_max_bytes = 1 << 20;      // give up on a client that uploads more than 1 MiB
  std::atomic<int> closed{0};
  ringlinger::Callbacks callbacks;
  callbacks.on_closed = [&](ringlinger::ConnectionId, const ringlinger::CloseReport& report) {
    if (report.outcome != ringlinger::Outcome::clean) {
      std::fprintf(stderr, "closed: %s\n", std::string(to_string(report.outcome)).c_str());
    }
    ++closed;
  };
  ringlinger::Manager manager(config, callbacks);

  Host host{listener, manager, callbacks, closed, 0, {}};
  serve(host, to_serve);
  const ringlinger::Stats stats = manager.stats();
  std::printf("served %d: %llu clean, %llu handed off, %llu syscalls\n", to_serve,
              static_cast<unsigned long long>(stats.with_outcome(ringlinger::Outcome::clean)),
              static_cast<unsigned long long>(stats.connections_handed_off),
              static_cast<unsigned long long>(stats.syscalls));
  close(listener);
  return stats.with_outcome(ringlinger::Outcome::clean) == static_cast<unsigned>(to_serve) ? 0 : 1;
}
