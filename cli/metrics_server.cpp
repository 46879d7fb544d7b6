#include "metrics_server.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string_view>
#include <system_error>
#include <utility>

#include <fmt/format.h>

namespace ringlinger::tools {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The bounds that keep a slow or hostile scraper from holding the thread: a scrape is a request
// head of a few hundred bytes and a response of a few KiB, both done in a millisecond.
constexpr std::size_t kMaxHeadBytes = 8 * 1024;
constexpr auto kHeadTimeout = 5s;
constexpr auto kSendTimeout = 5s;
constexpr auto kDrainTimeout = 2s;        // shutdown(SHUT_WR) -> the scraper's EOF
constexpr std::size_t kDrainMaxBytes = 64 * 1024;
constexpr std::size_t kMaxClients = 16;   // more wait in the listen backlog
constexpr auto kAcceptBackoff = 100ms;    // after EMFILE and the like, which poll() would repeat

class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  ~Fd() { reset(); }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// One scraper's connection: its request head, then our response, then its EOF.
struct Client {
  enum class Phase { head, respond, drain };
  Fd fd;
  Phase phase = Phase::head;
  std::string data;  // the head read so far, then the response
  std::size_t sent = 0;
  std::size_t discarded = 0;
  Clock::time_point deadline;
};

std::string http_response(std::string_view status, std::string_view content_type,
                          std::string_view body, bool with_body, std::string_view headers = {}) {
  return fmt::format(
      "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{}",
      status, content_type, body.size(), headers, with_body ? body : std::string_view());
}

constexpr std::string_view kPlain = "text/plain; charset=utf-8";

// The response to a complete request head ("METHOD TARGET HTTP/x.y", then header lines).
std::string answer(std::string_view head, const std::function<std::string()>& render) {
  const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
  const auto first_space = line.find(' ');
  const auto last_space = line.rfind(' ');
  if (first_space == std::string_view::npos || first_space == last_space ||
      !line.substr(last_space + 1).starts_with("HTTP/")) {
    return http_response("400 Bad Request", kPlain, "Bad request\n", true);
  }
  const std::string_view method = line.substr(0, first_space);
  const std::string_view target = line.substr(first_space + 1, last_space - first_space - 1);
  if (target.substr(0, target.find('?')) != "/metrics") {
    return http_response("404 Not Found", kPlain, "Not found: the metrics are at /metrics\n",
                         method != "HEAD");
  }
  if (method != "GET" && method != "HEAD") {
    return http_response("405 Method Not Allowed", kPlain, "Method not allowed\n", true,
                         "Allow: GET, HEAD\r\n");
  }
  try {
    return http_response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render(),
                         method == "GET");
  } catch (const std::exception& error) {
    return http_response("500 Internal Server Error", kPlain, std::string(error.what()) + "\n",
                         method == "GET");
  }
}

bool head_complete(std::string_view data) {
  return data.find("\r\n\r\n") != std::string_view::npos ||
         data.find("\n\n") != std::string_view::npos;
}

bool would_block(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

Fd open_listener(const SocketAddress& address) {
  Fd fd(::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int one = 1;
  if (fd.get() < 0 ||
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::bind(fd.get(), address.data(), address.size()) != 0 || ::listen(fd.get(), 64) != 0) {
    const int error = errno;
    throw std::system_error(error, std::system_category(), "--metrics " + address.to_string());
  }
  return fd;
}

}  // namespace

struct MetricsServer::Loop {
  std::vector<Fd> listeners;
  Fd wake{::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
  std::function<std::string()> render;
  std::vector<Client> clients;
  Clock::time_point accept_paused_until{};

  void run();
  int poll_timeout_ms(Clock::time_point now) const;
  void accept_from(int listener, Clock::time_point now);
  void on_ready(Client& client, Clock::time_point now);
  void on_deadline(Client& client, Clock::time_point now);
  void read_head(Client& client, Clock::time_point now);
  void respond(Client& client, std::string response, Clock::time_point now);
  void send_more(Client& client, Clock::time_point now);
  void drain(Client& client);
};

// Sleeps in poll() until the eventfd, a listener or a scraper needs it, or a deadline passes.
void MetricsServer::Loop::run() {
  std::vector<pollfd> fds;
  for (;;) {
    const Clock::time_point before = Clock::now();
    const bool accepting = clients.size() < kMaxClients && before >= accept_paused_until;
    const std::size_t polled_clients = clients.size();
    fds.assign(1, pollfd{wake.get(), POLLIN, 0});
    for (const Client& client : clients) {
      const short events = client.phase == Client::Phase::respond ? POLLOUT : POLLIN;
      fds.push_back(pollfd{client.fd.get(), events, 0});
    }
    if (accepting) {
      for (const Fd& listener : listeners) fds.push_back(pollfd{listener.get(), POLLIN, 0});
    }
    // poll() fails only for want of memory (EINVAL needs more fds than RLIMIT_NOFILE): the
    // metrics are then gone, the servers go on.
    if (::poll(fds.data(), fds.size(), poll_timeout_ms(before)) < 0 && errno != EINTR) return;
    if (fds[0].revents != 0) return;  // the destructor wants the thread back
    const Clock::time_point now = Clock::now();
    for (std::size_t i = 0; i < polled_clients; ++i) {
      if (fds[1 + i].revents != 0) on_ready(clients[i], now);
      if (clients[i].fd.get() >= 0 && now >= clients[i].deadline) on_deadline(clients[i], now);
    }
    std::erase_if(clients, [](const Client& client) { return client.fd.get() < 0; });
    for (std::size_t i = 1 + polled_clients; i < fds.size(); ++i) {  // the listeners, if polled
      if (fds[i].revents != 0) accept_from(fds[i].fd, now);
    }
  }
}

int MetricsServer::Loop::poll_timeout_ms(Clock::time_point now) const {
  Clock::time_point wake_at = Clock::time_point::max();
  for (const Client& client : clients) wake_at = std::min(wake_at, client.deadline);
  if (now < accept_paused_until) wake_at = std::min(wake_at, accept_paused_until);
  if (wake_at == Clock::time_point::max()) return -1;  // nobody scraping: sleep until woken
  if (wake_at <= now) return 0;
  // Rounded up, so that the deadline has passed when poll() returns.
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(wake_at - now).count());
}

void MetricsServer::Loop::accept_from(int listener, Clock::time_point now) {
  while (clients.size() < kMaxClients) {
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // EMFILE and the like leave the connection in the backlog: poll() would report it again
      // at once, so wait a little instead of spinning.
      if (!would_block(errno)) accept_paused_until = now + kAcceptBackoff;
      return;
    }
    Client& client = clients.emplace_back();
    client.fd = Fd(fd);
    client.deadline = now + kHeadTimeout;
  }
}

void MetricsServer::Loop::on_ready(Client& client, Clock::time_point now) {
  switch (client.phase) {
    case Client::Phase::head: read_head(client, now); break;
    case Client::Phase::respond: send_more(client, now); break;
    case Client::Phase::drain: drain(client); break;
  }
}

// A head that never completes gets a 408 (and a graceful close); a response the scraper does not
// take, or an EOF that does not come, ends with a plain close.
void MetricsServer::Loop::on_deadline(Client& client, Clock::time_point now) {
  if (client.phase == Client::Phase::head) {
    respond(client, http_response("408 Request Timeout", kPlain, "Request timeout\n", true), now);
  } else {
    client.fd.reset();
  }
}

void MetricsServer::Loop::read_head(Client& client, Clock::time_point now) {
  char buffer[kMaxHeadBytes + 1];
  const std::size_t room = sizeof(buffer) - client.data.size();
  const ssize_t count = ::recv(client.fd.get(), buffer, room, 0);
  if (count < 0 && would_block(errno)) return;
  if (count <= 0) {  // gone before asking anything: nobody to answer
    client.fd.reset();
    return;
  }
  client.data.append(buffer, static_cast<std::size_t>(count));
  if (head_complete(client.data)) {
    respond(client, answer(client.data, render), now);
  } else if (client.data.size() > kMaxHeadBytes) {
    respond(client,
            http_response("431 Request Header Fields Too Large", kPlain, "Request too large\n",
                          true),
            now);
  }
}

void MetricsServer::Loop::respond(Client& client, std::string response, Clock::time_point now) {
  client.phase = Client::Phase::respond;
  client.data = std::move(response);
  client.sent = 0;
  client.deadline = now + kSendTimeout;
  send_more(client, now);  // the socket's buffer usually takes it all at once
}

void MetricsServer::Loop::send_more(Client& client, Clock::time_point now) {
  while (client.sent < client.data.size()) {
    const ssize_t count = ::send(client.fd.get(), client.data.data() + client.sent,
                                 client.data.size() - client.sent, MSG_NOSIGNAL);
    if (count < 0 && would_block(errno)) return;
    if (count <= 0) {
      client.fd.reset();
      return;
    }
    client.sent += static_cast<std::size_t>(count);
  }
  // All of it is queued: our FIN goes behind it, and we read to the scraper's EOF before closing,
  // so that a request byte it sent late does not make close() reset the response away.
  if (::shutdown(client.fd.get(), SHUT_WR) != 0) {
    client.fd.reset();
    return;
  }
  client.phase = Client::Phase::drain;
  client.data = std::string();
  client.deadline = now + kDrainTimeout;
  drain(client);
}

void MetricsServer::Loop::drain(Client& client) {
  char buffer[4096];
  for (;;) {
    const ssize_t count = ::recv(client.fd.get(), buffer, sizeof(buffer), 0);
    if (count < 0 && would_block(errno)) return;
    client.discarded += count > 0 ? static_cast<std::size_t>(count) : 0;
    if (count <= 0 || client.discarded > kDrainMaxBytes) {  // EOF (clean), an error, or the cap
      client.fd.reset();
      return;
    }
  }
}

MetricsServer::MetricsServer(std::vector<SocketAddress> addresses,
                             std::function<std::string()> render)
    : loop_(std::make_unique<Loop>()) {
  if (loop_->wake.get() < 0) throw std::system_error(errno, std::system_category(), "eventfd");
  loop_->render = std::move(render);
  for (const SocketAddress& address : addresses) {
    loop_->listeners.push_back(open_listener(address));
    bound_.push_back(SocketAddress::local_of(loop_->listeners.back().get()).value_or(address));
  }
  // The thread takes no asynchronous signal: they belong to the thread that waits for them
  // (it inherits this mask, which is put back at once).
  sigset_t all;
  sigset_t previous;
  sigfillset(&all);
  for (const int synchronous : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) {
    sigdelset(&all, synchronous);
  }
  pthread_sigmask(SIG_BLOCK, &all, &previous);
  try {
    thread_ = std::thread([loop = loop_.get()] { loop->run(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    throw;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
}

MetricsServer::~MetricsServer() {
  const std::uint64_t one = 1;
  (void)!::write(loop_->wake.get(), &one, sizeof(one));
  thread_.join();
}

}  // namespace ringlinger::tools
