// The plain-close server (see naive_server.hpp): one thread, one edge-triggered epoll loop, a
// connection table indexed by fd.
//
// Edge-triggered: the listener and every accepted socket are registered once for
// EPOLLIN (| EPOLLOUT | EPOLLRDHUP for connections) | EPOLLET and never modified, so each handler
// goes on until EAGAIN. The request head is taken byte-exactly: recv(MSG_PEEK) shows what is
// queued, and a second recv takes only the bytes up to and including the blank line. Whatever
// follows (a body, a pipelined request) stays unread in the kernel, and close() with unread input
// is what makes the kernel send RST: the loss this server exists to show.
#include "naive_server.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "accept_error.hpp"
#include "defer_accept.hpp"
#include "http.hpp"

namespace ringlinger::tools {
namespace {

static_assert(std::atomic<bool>::is_always_lock_free, "stop() must be async-signal-safe");

constexpr std::size_t kPeekBytes = 4096;  // request heads are small; a body is not peeked far
constexpr int kMaxEventsPerWait = 256;
constexpr int kWaitTimeoutMs = 100;  // how soon run() notices stop()
constexpr std::uint64_t kListenerToken = std::numeric_limits<std::uint64_t>::max();
constexpr std::string_view kEndOfHead = "\r\n\r\n";

enum class ServerConnectionState : std::uint8_t {
  free,          // this fd is not ours (never accepted, or closed)
  reading_head,  // accepted; taking the request head, and nothing after it
  sending,       // head complete; response_bytes_sent < response size; never reads again
};

struct ServerConnection {
  ServerConnectionState state = ServerConnectionState::free;
  // Bumped on every accept of this fd number, so an event for an earlier socket is stale.
  std::uint32_t generation = 0;
  // The last (up to 3) head bytes taken, to find a blank line split across reads.
  std::array<char, 3> head_tail{};
  std::uint8_t head_tail_size = 0;
  std::uint64_t response_bytes_sent = 0;
  std::uint64_t response_size = 0;  // the head, and the body unless the request was HEAD
  std::shared_ptr<const DatedResponses> response;  // the head it is sent, unchanged until closed
  HeadReader head_reader;
};

// epoll_event.data.u64 of a connection (the listener uses kListenerToken):
//   63            32 31             0
//   +---------------+---------------+
//   |  generation   |      fd       |
//   +---------------+---------------+
std::uint64_t encode_token(int fd, std::uint32_t generation) noexcept {
  return (std::uint64_t{generation} << 32) | static_cast<std::uint32_t>(fd);
}
int token_fd(std::uint64_t token) noexcept {
  return static_cast<int>(static_cast<std::uint32_t>(token & 0xffff'ffffU));
}
std::uint32_t token_generation(std::uint64_t token) noexcept {
  return static_cast<std::uint32_t>(token >> 32);
}

// Prints a failed syscall that cannot fail in a correct program, and stops the process.
[[noreturn]] void abort_on_impossible_error(const char* what, int error) noexcept {
  std::fprintf(stderr, "ringlinger naive_server: %s failed: %s\n", what, std::strerror(error));
  std::abort();
}

// How many bytes of `chunk` finish the request head, given the last head bytes already taken
// (`tail`, at most 3); nullopt when the blank line does not end within `chunk`.
std::optional<std::size_t> head_bytes_in_chunk(std::string_view tail,
                                               std::string_view chunk) noexcept {
  // A blank line that starts in the tail starts earlier than any that starts in the chunk.
  for (std::size_t bytes_in_tail = tail.size(); bytes_in_tail > 0; --bytes_in_tail) {
    if (tail.ends_with(kEndOfHead.substr(0, bytes_in_tail)) &&
        chunk.starts_with(kEndOfHead.substr(bytes_in_tail))) {
      return kEndOfHead.size() - bytes_in_tail;
    }
  }
  const std::size_t end = chunk.find(kEndOfHead);
  if (end == std::string_view::npos) return std::nullopt;
  return end + kEndOfHead.size();
}

// Keeps the last (up to 3) head bytes taken so far, given the bytes just taken.
void remember_head_tail(ServerConnection& connection, std::string_view taken) noexcept {
  std::array<char, 6> last_bytes{};  // old tail (<= 3) + the last <= 3 bytes taken
  const std::size_t old_size = connection.head_tail_size;
  const std::size_t taken_size = std::min<std::size_t>(taken.size(), 3);
  std::copy_n(connection.head_tail.begin(), old_size, last_bytes.begin());
  std::copy_n(taken.end() - static_cast<std::ptrdiff_t>(taken_size), taken_size,
              last_bytes.begin() + static_cast<std::ptrdiff_t>(old_size));
  const std::size_t total = old_size + taken_size;
  const std::size_t keep = std::min<std::size_t>(total, 3);
  std::copy_n(last_bytes.begin() + static_cast<std::ptrdiff_t>(total - keep), keep,
              connection.head_tail.begin());
  connection.head_tail_size = static_cast<std::uint8_t>(keep);
}

}  // namespace

struct NaiveServer::Internals {
  explicit Internals(std::atomic<std::uint64_t>& closed_counter) noexcept
      : connections_closed(closed_counter) {}
  ~Internals() { close_all(); }
  Internals(const Internals&) = delete;
  Internals& operator=(const Internals&) = delete;

  void accept_pending();
  void handle_event(std::uint64_t token, std::uint32_t events);
  void read_head(int fd);
  void send_response(int fd);
  void close_connection(int fd);
  void close_all() noexcept;

  std::atomic<std::uint64_t>& connections_closed;
  int listen_fd = -1;
  int epoll_fd = -1;
  SocketAddress address;
  std::string body;                           // built once, sent to everyone after their head
  std::optional<ResponseCache> responses;     // the heads, dated
  std::vector<ServerConnection> connections;  // indexed by fd; grows to the largest fd seen
  bool accept_backed_off = false;  // accept stopped on EMFILE and the like: retry next loop
  std::array<char, kPeekBytes> buffer{};
};

// Accepts until EAGAIN (edge-triggered listener); on fd or memory exhaustion backs off until the
// next loop iteration.
void NaiveServer::Internals::accept_pending() {
  accept_backed_off = false;
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      switch (classify_accept_error(errno)) {
        case AcceptError::drained: return;
        case AcceptError::next: continue;
        case AcceptError::back_off: accept_backed_off = true; return;
        case AcceptError::unexpected: abort_on_impossible_error("accept4", errno);
      }
    }
    const auto index = static_cast<std::size_t>(fd);
    if (index >= connections.size()) connections.resize(index + 1);
    ServerConnection& connection = connections[index];
    if (connection.state != ServerConnectionState::free) {
      abort_on_impossible_error("accept4 returned an fd still in use", EBADF);
    }
    ++connection.generation;
    connection.state = ServerConnectionState::reading_head;
    connection.head_tail_size = 0;
    connection.response_bytes_sent = 0;
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.u64 = encode_token(fd, connection.generation);
    // The ADD reports readiness that is already there, so a head queued before it is not missed.
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) close_connection(fd);  // ENOMEM
  }
}

void NaiveServer::Internals::handle_event(std::uint64_t token, std::uint32_t events) {
  if (token == kListenerToken) return accept_pending();
  const int fd = token_fd(token);
  const auto index = static_cast<std::size_t>(fd);
  if (fd < 0 || index >= connections.size()) abort_on_impossible_error("epoll token", EINVAL);
  const ServerConnection& connection = connections[index];
  if (connection.generation != token_generation(token)) return;  // for a socket already closed
  switch (connection.state) {
    case ServerConnectionState::free: return;
    case ServerConnectionState::reading_head:
      if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0) read_head(fd);
      return;
    case ServerConnectionState::sending:
      if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) send_response(fd);
      return;
  }
}

// Takes the request head, exactly: peek, find the blank line, take only the bytes up to it.
// EOF, an error, a malformed or too large head: close.
void NaiveServer::Internals::read_head(int fd) {
  ServerConnection& connection = connections[static_cast<std::size_t>(fd)];
  for (;;) {
    const ssize_t peeked = recv(fd, buffer.data(), buffer.size(), MSG_PEEK);
    if (peeked == 0) return close_connection(fd);  // EOF before the head was complete
    if (peeked < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the next EPOLLIN edge resumes
      return close_connection(fd);                          // ECONNRESET and the like
    }
    const std::string_view tail(connection.head_tail.data(), connection.head_tail_size);
    const std::string_view chunk(buffer.data(), static_cast<std::size_t>(peeked));
    const std::size_t head_bytes = head_bytes_in_chunk(tail, chunk).value_or(chunk.size());
    // The same bytes again, now consumed: nobody else reads this socket, so they are all there.
    const ssize_t taken = recv(fd, buffer.data(), head_bytes, 0);
    if (taken != static_cast<ssize_t>(head_bytes)) {
      abort_on_impossible_error("recv of peeked bytes", taken < 0 ? errno : EIO);
    }
    remember_head_tail(connection, std::string_view(buffer.data(), head_bytes));

    const auto status =
        connection.head_reader.feed(std::as_bytes(std::span(buffer.data(), head_bytes)));
    switch (status) {
      case HeadReader::Status::incomplete: continue;
      case HeadReader::Status::complete:
        connection.state = ServerConnectionState::sending;
        connection.response = responses->current();
        connection.response_size = connection.response->ok.size() +
                                   (connection.head_reader.head_method() ? 0 : body.size());
        return send_response(fd);
      case HeadReader::Status::too_large:
      case HeadReader::Status::malformed: return close_connection(fd);
    }
  }
}

// Sends the rest of the response until done or EAGAIN; once all of it is in the kernel, close()
// at once: no shutdown, no drain.
void NaiveServer::Internals::send_response(int fd) {
  ServerConnection& connection = connections[static_cast<std::size_t>(fd)];
  const std::string_view body_to_send =
      std::string_view(body).substr(0, connection.response_size - connection.response->ok.size());
  while (connection.response_bytes_sent < connection.response_size) {
    const ssize_t sent =
        send_from(fd, connection.response->ok, body_to_send, connection.response_bytes_sent);
    if (sent >= 0) {
      connection.response_bytes_sent += static_cast<std::uint64_t>(sent);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;  // the next EPOLLOUT edge resumes
    return close_connection(fd);  // EPIPE, ECONNRESET: the client is gone; not counted
  }
  close_connection(fd);
  connections_closed.fetch_add(1, std::memory_order_relaxed);
}

// close() (which also removes the fd from epoll) and forget the connection's state.
void NaiveServer::Internals::close_connection(int fd) {
  ServerConnection& connection = connections[static_cast<std::size_t>(fd)];
  connection.state = ServerConnectionState::free;
  connection.response.reset();
  // Frees a partial head's buffer (reset() would keep its capacity).
  HeadReader fresh_reader;
  std::swap(connection.head_reader, fresh_reader);
  close(fd);  // on Linux the fd is released even when close reports an error
}

void NaiveServer::Internals::close_all() noexcept {
  for (std::size_t fd = 0; fd < connections.size(); ++fd) {
    if (connections[fd].state != ServerConnectionState::free) {
      connections[fd].state = ServerConnectionState::free;
      close(static_cast<int>(fd));
    }
  }
  connections.clear();
  connections.shrink_to_fit();
  if (listen_fd >= 0) close(listen_fd);
  if (epoll_fd >= 0) close(epoll_fd);
  listen_fd = -1;
  epoll_fd = -1;
}

NaiveServer::NaiveServer(const NaiveServerOptions& options)
    : internals_(std::make_unique<Internals>(connections_closed_)) {
  Internals& internals = *internals_;  // its destructor closes what is open if we throw
  internals.body = make_payload(options.response_bytes);
  internals.responses.emplace(options.response_bytes);
  internals.listen_fd =
      socket(options.listen.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (internals.listen_fd < 0) throw std::system_error(errno, std::system_category(), "socket");
  const int enable = 1;
  if (setsockopt(internals.listen_fd, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof(enable)) != 0) {
    throw std::system_error(errno, std::system_category(), "setsockopt(SO_REUSEADDR)");
  }
  if (options.defer_accept) defer_accept(internals.listen_fd);
  if (bind(internals.listen_fd, options.listen.data(), options.listen.size()) != 0) {
    throw std::system_error(errno, std::system_category(), "bind " + options.listen.to_string());
  }
  if (listen(internals.listen_fd, options.backlog) != 0) {
    throw std::system_error(errno, std::system_category(), "listen");
  }
  auto bound = SocketAddress::local_of(internals.listen_fd);
  if (!bound) throw std::system_error(errno, std::system_category(), "getsockname");
  internals.address = *bound;
  internals.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (internals.epoll_fd < 0) {
    throw std::system_error(errno, std::system_category(), "epoll_create1");
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLET;
  event.data.u64 = kListenerToken;
  if (epoll_ctl(internals.epoll_fd, EPOLL_CTL_ADD, internals.listen_fd, &event) != 0) {
    throw std::system_error(errno, std::system_category(), "epoll_ctl(listener)");
  }
}

NaiveServer::~NaiveServer() = default;  // Internals' destructor closes every fd still held

const SocketAddress& NaiveServer::address() const noexcept { return internals_->address; }

void NaiveServer::run() {
  Internals& internals = *internals_;
  if (internals.epoll_fd < 0) return;  // a previous run() closed everything
  std::array<epoll_event, kMaxEventsPerWait> events{};
  while (!stop_requested_.load(std::memory_order_acquire)) {
    if (internals.accept_backed_off) internals.accept_pending();
    const int ready =
        epoll_wait(internals.epoll_fd, events.data(), kMaxEventsPerWait, kWaitTimeoutMs);
    if (ready < 0) {
      if (errno == EINTR) continue;
      abort_on_impossible_error("epoll_wait", errno);
    }
    for (int i = 0; i < ready; ++i) {
      const epoll_event& event = events[static_cast<std::size_t>(i)];
      internals.handle_event(event.data.u64, event.events);
    }
  }
  internals.close_all();
}

void NaiveServer::stop() noexcept { stop_requested_.store(true, std::memory_order_release); }

std::uint64_t NaiveServer::connections_closed() const noexcept {
  return connections_closed_.load(std::memory_order_relaxed);
}

}  // namespace ringlinger::tools
