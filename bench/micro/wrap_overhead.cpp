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
// difference. Every close is timed on its own (clock_gettime's ~20 ns included, the same on both
// paths) and the median kept, which a preemption does not move. On a busy machine the difference
// between runs drifts with the load, so every other close is made with the close system call
// directly, which no preload sees: close() - raw, in the same process and under the same load, is
// the preload's cost (about 0 without it).
//   build/bench/micro/wrap_overhead [closes per kind, default 20000] [batch, default 2000]
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

// The close system call itself, past any close() or syscall() a preloaded library replaces.
int raw_close(int fd) {
#if defined(__x86_64__)
  long result = SYS_close;
  asm volatile("syscall" : "+a"(result) : "D"(static_cast<long>(fd)) : "rcx", "r11", "memory");
  return result == 0 ? 0 : -1;
#else
  return static_cast<int>(syscall(SYS_close, fd));  // interposable: the two halves then agree
#endif
}

// Each timed close's duration in ns, by the way it was made.
struct Samples {
  std::vector<std::int64_t> libc;  // close(): interposed under LD_PRELOAD
  std::vector<std::int64_t> raw;   // the system call made directly
};

// Closes `fds`, timing each close on its own, with close() and raw_close() in turn (libc, raw,
// raw, libc, ...: each way gets as many of a pipe's read ends as of its write ends, and as many
// firsts as seconds): the two ways see the same load, and a preemption lands in one sample.
void timed_close(const std::vector<int>& fds, Samples& samples) {
  for (std::size_t i = 0; i < fds.size(); ++i) {
    const bool raw = (i + i / 2) % 2 == 1;
    const std::int64_t start = now_ns();
    if ((raw ? raw_close(fds[i]) : close(fds[i])) != 0) die("close (timed)");
    (raw ? samples.raw : samples.libc).push_back(now_ns() - start);
  }
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

void close_tcp_batch(int listen_fd, std::size_t count, bool in_epoll, Samples& samples) {
  Pairs pairs = make_pairs(listen_fd, count);
  const int epoll_fd = in_epoll ? epoll_create1(EPOLL_CLOEXEC) : -1;
  for (std::size_t i = 0; in_epoll && i < count; ++i) {
    const int fd = pairs.accepted[i];
    epoll_event event{};
    event.events = EPOLLIN | EPOLLRDHUP;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
  }
  timed_close(pairs.accepted, samples);
  close_all(pairs.connected);
  if (epoll_fd >= 0) close(epoll_fd);
}

void close_pipe_batch(std::size_t count, Samples& samples) {
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
  timed_close(fds, samples);
}

void close_file_batch(const std::string& path, std::size_t count, Samples& samples) {
  std::vector<int> fds;
  for (std::size_t i = 0; i < count; ++i) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open");
    fds.push_back(fd);
  }
  timed_close(fds, samples);
}

enum class Kind { kTcp, kTcpEpoll, kPipe, kFile };

double median(std::vector<std::int64_t>& values) {
  if (values.empty()) return 0;
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  return static_cast<double>(*middle);
}

double mean(const std::vector<std::int64_t>& values) {
  std::int64_t sum = 0;
  for (const std::int64_t value : values) sum += value;
  return values.empty() ? 0 : static_cast<double>(sum) / static_cast<double>(values.size());
}

// `total` closes of one kind in batches of `batch`; prints the medians and means in ns.
void run(Kind kind, const char* name, std::size_t total, std::size_t batch, const std::string& file) {
  const int listen_fd = listener();
  Samples samples;
  for (std::size_t done = 0; done < total; done += batch) {
    const std::size_t count = std::min(batch, total - done);
    switch (kind) {
      case Kind::kTcp: close_tcp_batch(listen_fd, count, false, samples); break;
      case Kind::kTcpEpoll: close_tcp_batch(listen_fd, count, true, samples); break;
      case Kind::kPipe: close_pipe_batch(count, samples); break;
      case Kind::kFile: close_file_batch(file, count, samples); break;
    }
  }
  close(listen_fd);
  const double libc_mean = mean(samples.libc), raw_mean = mean(samples.raw);
  const double libc_median = median(samples.libc), raw_median = median(samples.raw);
  std::printf("%-10s %7zu closes  median ns: close() %8.1f raw %8.1f diff %+7.1f  "
              "mean ns: close() %8.1f raw %8.1f\n",
              name, total, libc_median, raw_median, libc_median - raw_median, libc_mean, raw_mean);
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
