// What libringlinger-preload.so adds to a close() that it does not take over (docs/WRAP.md). The
// issue's target: at most 1 us per close for a program whose sockets have nothing pending. We
// time only close() calls, with clock_gettime around a loop of them, for:
//   tcp         the accept side of connected 127.0.0.1 pairs, ESTABLISHED, request and response
//               read by the peer and acknowledged (SIOCOUTQ and FIONREAD 0 on both ends)
//   tcp_epoll   the same, each socket registered in an epoll set first, as an epoll server's are
//   pipe        both ends of pipes (the preload's not-a-socket path)
//   file        descriptors of a regular file
// Pairs are made in batches so that the descriptors stay under RLIMIT_NOFILE. Run it plainly and
// with LD_PRELOAD; bench/wrap_overhead.sh does both, pinned, several times, and prints the
// difference.
//   build/bench/micro/wrap_overhead [closes per kind, default 20000] [batch, default 2000]
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(1);
}

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

// The time the closes of `fds` take, in ns: the only thing measured.
std::int64_t timed_close(const std::vector<int>& fds) {
  const std::int64_t start = now_ns();
  for (const int fd : fds) {
    if (close(fd) != 0) die("close (timed)");
  }
  return now_ns() - start;
}

void close_all(const std::vector<int>& fds) {
  for (const int fd : fds) close(fd);
}

int listener() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) die("bind");
  if (listen(fd, 4096) != 0) die("listen");
  return fd;
}

void exchange(int from, int to, const char* message) {
  const std::size_t length = std::strlen(message);
  if (send(from, message, length, MSG_NOSIGNAL) != static_cast<ssize_t>(length)) die("send");
  char buffer[64];
  std::size_t got = 0;
  while (got < length) {
    const ssize_t n = recv(to, buffer, sizeof(buffer), 0);
    if (n <= 0) die("recv");
    got += static_cast<std::size_t>(n);
  }
}

int queued(int fd, unsigned long request) {
  int bytes = 0;
  if (ioctl(fd, request, &bytes) != 0) die("ioctl");
  return bytes;
}

// Nothing pending on either end: all sent bytes acknowledged, nothing unread. On loopback the
// ACK is sent as the segment is received, so this holds at once; we check rather than assume.
void wait_quiet(int fd) {
  for (int tries = 0; queued(fd, SIOCOUTQ) != 0 || queued(fd, FIONREAD) != 0; ++tries) {
    if (tries == 10'000) {
      std::fprintf(stderr, "fd %d never became quiet\n", fd);
      std::exit(1);
    }
    usleep(100);
  }
}

struct Pairs {
  std::vector<int> accepted;
  std::vector<int> connected;
};

// `count` connected pairs, each having exchanged a request and a response.
Pairs make_pairs(int listen_fd, std::size_t count) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  if (getsockname(listen_fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) die("getsockname");
  Pairs pairs;
  for (std::size_t i = 0; i < count; ++i) {
    const int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (client < 0) die("socket");
    if (connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) die("connect");
    const int server = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (server < 0) die("accept4");
    exchange(client, server, "GET / HTTP/1.1\r\n\r\n");
    exchange(server, client, "HTTP/1.1 200 OK\r\n\r\n");
    pairs.accepted.push_back(server);
    pairs.connected.push_back(client);
  }
  for (std::size_t i = 0; i < count; ++i) {
    wait_quiet(pairs.accepted[i]);
    wait_quiet(pairs.connected[i]);
  }
  return pairs;
}

std::int64_t close_tcp_batch(int listen_fd, std::size_t count, bool in_epoll) {
  Pairs pairs = make_pairs(listen_fd, count);
  const int epoll_fd = in_epoll ? epoll_create1(EPOLL_CLOEXEC) : -1;
  for (std::size_t i = 0; in_epoll && i < count; ++i) {
    const int fd = pairs.accepted[i];
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
  }
  const std::int64_t elapsed = timed_close(pairs.accepted);
  close_all(pairs.connected);
  if (epoll_fd >= 0) close(epoll_fd);
  return elapsed;
}

std::int64_t close_pipe_batch(std::size_t count) {
  std::vector<int> fds;
  for (std::size_t i = 0; i < count; i += 2) {
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) die("pipe2");
    fds.push_back(ends[0]);
    fds.push_back(ends[1]);
  }
  // An odd count leaves one end over, closed untimed so that `count` closes are timed.
  if (fds.size() > count) {
    close(fds.back());
    fds.pop_back();
  }
  return timed_close(fds);
}

std::int64_t close_file_batch(const std::string& path, std::size_t count) {
  std::vector<int> fds;
  for (std::size_t i = 0; i < count; ++i) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open");
    fds.push_back(fd);
  }
  return timed_close(fds);
}

enum class Kind { kTcp, kTcpEpoll, kPipe, kFile };

// `total` closes of one kind in batches of `batch`; prints ns per close.
void run(Kind kind, const char* name, std::size_t total, std::size_t batch, const std::string& file) {
  const int listen_fd = listener();
  std::int64_t elapsed = 0;
  for (std::size_t done = 0; done < total; done += batch) {
    const std::size_t count = std::min(batch, total - done);
    switch (kind) {
      case Kind::kTcp: elapsed += close_tcp_batch(listen_fd, count, false); break;
      case Kind::kTcpEpoll: elapsed += close_tcp_batch(listen_fd, count, true); break;
      case Kind::kPipe: elapsed += close_pipe_batch(count); break;
      case Kind::kFile: elapsed += close_file_batch(file, count); break;
    }
  }
  close(listen_fd);
  std::printf("%-10s %7zu closes %9.1f ns/close\n", name, total,
      static_cast<double>(elapsed) / static_cast<double>(total));
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t total = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 20'000;
  const std::size_t batch = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 2'000;
  if (total == 0 || batch < 2) {
    std::fprintf(stderr, "usage: wrap_overhead [closes per kind > 0] [batch >= 2]\n");
    return 2;
  }
  char path[] = "/tmp/wrap_overhead.XXXXXX";
  const int file_fd = mkstemp(path);
  if (file_fd < 0) die("mkstemp");
  close(file_fd);
  // Warm up: the preload's first close may set itself up (environment, symbol look-ups).
  run(Kind::kTcp, "(warm-up)", 200, 200, path);
  run(Kind::kTcp, "tcp", total, batch, path);
  run(Kind::kTcpEpoll, "tcp_epoll", total, batch, path);
  run(Kind::kPipe, "pipe", total, batch, path);
  run(Kind::kFile, "file", total, batch, path);
  unlink(path);
  return 0;
}
