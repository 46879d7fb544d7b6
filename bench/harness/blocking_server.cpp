// The blocking server (see blocking_server.hpp): one connection at a time, blocking sockets, the
// graceful close done with plain system calls. It is the "kernel floor" the manager's CPU per
// close is compared against, so the path of a well-behaved connection makes only the system
// calls the close itself needs:
//
//   accept4 -> recv (the head) -> sendmsg (head and body; until all is handed over) -> shutdown(SHUT_WR)
//           -> recv(MSG_TRUNC) until 0 -> close
//
// Timeouts: SO_RCVTIMEO and SO_SNDTIMEO are set once, on the listening socket, and every accepted
// socket inherits them (sk_clone copies sk_rcvtimeo/sk_sndtimeo; checked on 6.18). SO_SNDTIMEO is
// send_timeout_ms and never changes. SO_RCVTIMEO starts as min(head_timeout_ms,
// drain_idle_timeout_ms); a connection changes it (one setsockopt) only when what it is waiting
// for needs a shorter wait than the value armed:
//   - head_timeout_ms >= drain_idle_timeout_ms (the defaults, 10 s and 5 s): no setsockopt for a
//     connection whose head arrives within head_timeout_ms - drain_idle_timeout_ms; a slower
//     head is waited for in drain-idle-sized steps against its deadline;
//   - head_timeout_ms < drain_idle_timeout_ms: one setsockopt per connection, raising the
//     timeout to drain_idle_timeout_ms before the drain;
//   - a drain that gets within drain_idle_timeout_ms of its drain_timeout_ms total arms the time
//     left instead (one setsockopt), so the total is kept to the millisecond, not the idle step.
// A timeout is seen as EAGAIN from the blocking recv or send. The kernel rounds SO_*TIMEO up to
// a jiffy (4 ms at HZ=250), so a timeout fires up to a jiffy late. SO_SNDTIMEO bounds the time
// one send call blocks, not the time since the last progress: the call that made the last
// progress still waits out its timeout (and returns the partial count), so send_timeout fires
// between 1x and 2x send_timeout_ms after the peer stopped reading (the manager: 1x).
//
// Every response carries a Date (http.hpp's ResponseCache: formatted at most once a second); a
// HEAD request is answered with the head alone.
//
// The request head is taken with one recv of up to kHeadReadBytes and fed to HeadReader; bytes
// after the head in that read (the start of a body) are dropped with it, as the manager's
// on_receive drops them. A head that needs more reads costs more recv calls.
//
// Outcomes follow the manager's: an error is_peer_reset_error() names (outcome.hpp) is
// peer_reset; a send without progress for send_timeout_ms is send_timeout; SO_LINGER {1, 0} is
// set before close only for send_timeout, drain_idle_timeout and drain_timeout, and only with
// reset_on_timeout. Before a response there is no manager equivalent; we count: EOF before a
// whole head -> clean (nothing was owed; close() sends FIN, nothing is unread); a head that did
// not arrive within head_timeout_ms, or a failing recv -> receive_error; a reset -> peer_reset.
// Close latency (response handed to the kernel -> fd closed) is sampled for every connection
// that was sent a response.
//
// Timeouts of 0 mean "no limit" (as drain_max_bytes = 0 does).
#include "blocking_server.hpp"
#include "accept_error.hpp"
#include "defer_accept.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "http.hpp"

namespace ringlinger::tools {
namespace {

using Clock = std::chrono::steady_clock;

static_assert(std::atomic<bool>::is_always_lock_free, "stop() must be async-signal-safe");

constexpr std::size_t kDiscardChunkBytes = 256 * 1024;  // per drain recv, as the manager's
constexpr std::size_t kHeadReadBytes = 4096;            // per head recv: heads are small
constexpr int kAcceptPollMs = 100;                      // how soon run() notices stop()
constexpr int kAcceptBackoffMs = 10;                    // after EMFILE and the like
constexpr std::size_t kMaxLatencySamples = 1'000'000;   // about 4 MB
// What a timeout of 0 ("no limit") becomes: about 49 days.
constexpr std::uint32_t kUnlimitedMs = std::numeric_limits<std::uint32_t>::max();

std::uint32_t or_unlimited(std::uint32_t milliseconds) noexcept {
  return milliseconds == 0 ? kUnlimitedMs : milliseconds;
}

// Milliseconds from now to `deadline`, rounded up; 0 when it has passed.
std::uint32_t milliseconds_until(Clock::time_point deadline, Clock::time_point now) noexcept {
  if (now >= deadline) return 0;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
  return static_cast<std::uint32_t>(std::min<std::int64_t>(left, kUnlimitedMs));
}

Clock::time_point deadline_after(Clock::time_point start, std::uint32_t milliseconds) noexcept {
  return start + std::chrono::milliseconds(milliseconds);
}

bool set_timeout_option(int fd, int option, std::uint32_t milliseconds) noexcept {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(milliseconds / 1000);
  tv.tv_usec = static_cast<suseconds_t>((milliseconds % 1000) * 1000);
  return setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv)) == 0;
}

// How reading the request head ended.
enum class HeadEnding : std::uint8_t {
  complete,   // a whole, well-formed head: answer it
  malformed,  // answer 400
  too_large,  // answer 431
  eof,        // the peer's EOF before a whole head: nothing to answer
  reset,      // the peer reset the connection
  failed,     // head_timeout_ms passed, or recv failed otherwise
};

// One accepted connection: its fd and the SO_RCVTIMEO currently armed on it.
struct AcceptedSocket {
  int fd = -1;
  std::uint32_t armed_receive_timeout_ms = 0;
};

}  // namespace

struct BlockingServer::Impl {
  explicit Impl(const BlockingServerOptions& server_options)
      : options(server_options),
        head_timeout_ms(or_unlimited(server_options.head_timeout_ms)),
        drain_idle_timeout_ms(or_unlimited(server_options.drain_idle_timeout_ms)),
        listener_receive_timeout_ms(std::min(head_timeout_ms, drain_idle_timeout_ms)),
        payload(make_payload(server_options.response_bytes)),
        responses(server_options.response_bytes),
        scratch(std::make_unique_for_overwrite<char[]>(kDiscardChunkBytes)) {}
  ~Impl() {
    if (listen_fd >= 0) close(listen_fd);
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void open_listener();
  int accept_next();
  void serve(int fd);
  HeadEnding read_head(AcceptedSocket& connection, Clock::time_point accepted_at);
  std::optional<Outcome> send_all(const AcceptedSocket& connection, std::string_view head,
                                  std::string_view body);
  Outcome drain(AcceptedSocket& connection, Clock::time_point shutdown_at);
  bool arm_receive_timeout(AcceptedSocket& connection, std::uint32_t milliseconds) noexcept;
  void finish(const AcceptedSocket& connection, Outcome outcome);

  const BlockingServerOptions options;
  const std::uint32_t head_timeout_ms;
  const std::uint32_t drain_idle_timeout_ms;
  const std::uint32_t listener_receive_timeout_ms;  // what every accepted socket starts with
  const std::string payload;  // the body, built once, sent to everyone after the head
  ResponseCache responses;  // the heads and the error responses, dated
  // Head reads use the first kHeadReadBytes; MSG_TRUNC drains never write it at all.
  const std::unique_ptr<char[]> scratch;
  HeadReader head_reader;
  int listen_fd = -1;
  SocketAddress address;

  std::atomic<bool> stop_requested{false};
  std::array<std::atomic<std::uint64_t>, kOutcomeCount> outcomes{};
  std::atomic<std::uint64_t> bytes_discarded{0};
  std::vector<std::uint32_t> close_latencies_us;
};

// A non-blocking listener (accept4 never blocks; poll() waits), with the timeouts every accepted
// socket inherits.
void BlockingServer::Impl::open_listener() {
  listen_fd = socket(options.listen.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) throw std::system_error(errno, std::system_category(), "socket");
  const int enable = 1;
  if (setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &enable, sizeof(enable)) != 0) {
    throw std::system_error(errno, std::system_category(), "setsockopt(SO_REUSEADDR)");
  }
  if (!set_timeout_option(listen_fd, SO_RCVTIMEO, listener_receive_timeout_ms) ||
      !set_timeout_option(listen_fd, SO_SNDTIMEO, or_unlimited(options.send_timeout_ms))) {
    throw std::system_error(errno, std::system_category(), "setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)");
  }
  if (options.defer_accept) defer_accept(listen_fd);
  if (bind(listen_fd, options.listen.data(), options.listen.size()) != 0) {
    throw std::system_error(errno, std::system_category(), "bind " + options.listen.to_string());
  }
  if (listen(listen_fd, options.backlog) != 0) {
    throw std::system_error(errno, std::system_category(), "listen");
  }
  auto bound = SocketAddress::local_of(listen_fd);
  if (!bound) throw std::system_error(errno, std::system_category(), "getsockname");
  address = *bound;
}

// The next connection (a blocking socket), or -1 once stop() was called. Polls only when no
// connection is waiting, so a busy server makes one accept4 per connection and nothing else.
int BlockingServer::Impl::accept_next() {
  while (!stop_requested.load(std::memory_order_acquire)) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) return fd;
    switch (classify_accept_error(errno)) {
      case AcceptError::drained: {
        pollfd listener{listen_fd, POLLIN, 0};
        if (poll(&listener, 1, kAcceptPollMs) < 0 && errno != EINTR) {
          throw std::system_error(errno, std::system_category(), "poll(listener)");
        }
        break;
      }
      case AcceptError::next: break;
      case AcceptError::back_off: poll(nullptr, 0, kAcceptBackoffMs); break;
      case AcceptError::unexpected: throw std::system_error(errno, std::system_category(), "accept4");
    }
  }
  return -1;
}

// The whole life of one connection, start to close.
void BlockingServer::Impl::serve(int fd) {
  AcceptedSocket connection{fd, listener_receive_timeout_ms};
  const HeadEnding ending = read_head(connection, Clock::now());
  const DatedResponses& reply = *responses.current();  // one connection at a time: no copy kept
  std::string_view head;
  std::string_view body_to_send;
  switch (ending) {
    case HeadEnding::complete:
      head = reply.ok;
      if (!head_reader.head_method()) body_to_send = payload;
      break;
    case HeadEnding::malformed: head = reply.bad_request; break;
    case HeadEnding::too_large: head = reply.head_too_large; break;
    case HeadEnding::eof: return finish(connection, Outcome::clean);
    case HeadEnding::reset: return finish(connection, Outcome::peer_reset);
    case HeadEnding::failed: return finish(connection, Outcome::receive_error);
  }
  if (const auto failure = send_all(connection, head, body_to_send)) return finish(connection, *failure);
  const Clock::time_point handed_over = Clock::now();
  Outcome outcome = Outcome::clean;
  if (shutdown(fd, SHUT_WR) != 0) {
    // ENOTCONN: the peer's RST arrived after our last send.
    outcome = is_peer_reset_error(errno) ? Outcome::peer_reset : Outcome::send_error;
  } else {
    outcome = drain(connection, handed_over);
  }
  finish(connection, outcome);
  if (close_latencies_us.size() < kMaxLatencySamples) {
    const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() -
                                                                                handed_over);
    close_latencies_us.push_back(static_cast<std::uint32_t>(
        std::min<std::int64_t>(latency.count(), std::numeric_limits<std::uint32_t>::max())));
  }
}

// Reads until the head is complete (or malformed or too large), with a total of head_timeout_ms.
HeadEnding BlockingServer::Impl::read_head(AcceptedSocket& connection,
                                           Clock::time_point accepted_at) {
  head_reader.reset();
  const Clock::time_point deadline = deadline_after(accepted_at, head_timeout_ms);
  for (;;) {
    const ssize_t count = recv(connection.fd, scratch.get(), kHeadReadBytes, 0);
    if (count > 0) {
      const auto bytes = std::as_bytes(std::span(scratch.get(), static_cast<std::size_t>(count)));
      switch (head_reader.feed(bytes)) {
        case HeadReader::Status::incomplete: break;
        case HeadReader::Status::complete: return HeadEnding::complete;
        case HeadReader::Status::malformed: return HeadEnding::malformed;
        case HeadReader::Status::too_large: return HeadEnding::too_large;
      }
    } else if (count == 0) {
      return HeadEnding::eof;
    } else if (errno == EINTR) {
      // A signal (stop() from a handler, say): this connection still finishes.
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // A step of the wait ran out; the deadline decides below.
    } else {
      return is_peer_reset_error(errno) ? HeadEnding::reset : HeadEnding::failed;
    }
    // Rare path: the head needs another read (it came in pieces, or slowly).
    const std::uint32_t left_ms = milliseconds_until(deadline, Clock::now());
    if (left_ms == 0) return HeadEnding::failed;
    if (left_ms < connection.armed_receive_timeout_ms &&
        !arm_receive_timeout(connection, left_ms)) {
      return HeadEnding::failed;
    }
  }
}

// Hands every byte to the kernel, one sendmsg of both pieces per call; nullopt when done,
// otherwise why it could not.
std::optional<Outcome> BlockingServer::Impl::send_all(const AcceptedSocket& connection,
                                                      std::string_view head, std::string_view body) {
  std::size_t offset = 0;
  while (offset < head.size() + body.size()) {
    const ssize_t sent = send_from(connection.fd, head, body, offset);
    if (sent >= 0) {
      offset += static_cast<std::size_t>(sent);
      continue;
    }
    switch (errno) {
      case EINTR: continue;
      case EAGAIN: return Outcome::send_timeout;  // SO_SNDTIMEO passed without progress
      default: return is_peer_reset_error(errno) ? Outcome::peer_reset : Outcome::send_error;
    }
  }
  return std::nullopt;
}

// After SHUT_WR: reads and discards (MSG_TRUNC: TCP drops the bytes without copying them) until
// the peer's EOF, an error, drain_idle_timeout_ms without input, drain_timeout_ms in total, or
// more than drain_max_bytes.
Outcome BlockingServer::Impl::drain(AcceptedSocket& connection, Clock::time_point shutdown_at) {
  const std::uint64_t cap = options.drain_max_bytes;
  const bool total_limited = options.drain_timeout_ms != 0;
  const Clock::time_point deadline = deadline_after(shutdown_at, options.drain_timeout_ms);
  std::uint64_t discarded = 0;
  Outcome outcome = Outcome::clean;
  for (;;) {
    // Arm the idle timeout, or the time left of the total when that is shorter.
    std::uint32_t wait_ms = drain_idle_timeout_ms;
    if (total_limited) {
      wait_ms = std::min(wait_ms, milliseconds_until(deadline, Clock::now()));
      if (wait_ms == 0) {
        outcome = Outcome::drain_timeout;
        break;
      }
    }
    if (wait_ms != connection.armed_receive_timeout_ms &&
        !arm_receive_timeout(connection, wait_ms)) {
      outcome = Outcome::receive_error;
      break;
    }
    // At most one byte more than the cap allows, so crossing it is seen at once.
    const std::size_t want = cap == 0 ? kDiscardChunkBytes
                                      : static_cast<std::size_t>(std::min<std::uint64_t>(
                                            kDiscardChunkBytes, cap - discarded + 1));
    const ssize_t count = recv(connection.fd, scratch.get(), want, MSG_TRUNC);
    if (count > 0) {
      discarded += static_cast<std::uint64_t>(count);
      if (cap != 0 && discarded > cap) {
        outcome = Outcome::drain_byte_cap;
        break;
      }
      continue;
    }
    if (count == 0) {
      outcome = Outcome::clean;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      outcome = wait_ms < drain_idle_timeout_ms ? Outcome::drain_timeout
                                                : Outcome::drain_idle_timeout;
      break;
    }
    outcome = is_peer_reset_error(errno) ? Outcome::peer_reset : Outcome::receive_error;
    break;
  }
  bytes_discarded.fetch_add(discarded, std::memory_order_relaxed);
  return outcome;
}

bool BlockingServer::Impl::arm_receive_timeout(AcceptedSocket& connection,
                                               std::uint32_t milliseconds) noexcept {
  if (!set_timeout_option(connection.fd, SO_RCVTIMEO, milliseconds)) return false;
  connection.armed_receive_timeout_ms = milliseconds;
  return true;
}

// SO_LINGER {1, 0} when the outcome is a timeout and reset_on_timeout is set; close; count.
void BlockingServer::Impl::finish(const AcceptedSocket& connection, Outcome outcome) {
  bool timed_out = false;
  switch (outcome) {
    case Outcome::send_timeout:
    case Outcome::drain_idle_timeout:
    case Outcome::drain_timeout: timed_out = true; break;
    case Outcome::clean:
    case Outcome::peer_reset:
    case Outcome::drain_byte_cap:
    case Outcome::send_error:
    case Outcome::receive_error:
    case Outcome::aborted:
    case Outcome::stop_deadline: break;
  }
  if (timed_out && options.reset_on_timeout) {
    const linger reset{1, 0};
    setsockopt(connection.fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  }
  close(connection.fd);  // on Linux the fd is released even when close reports an error
  outcomes[static_cast<std::size_t>(outcome)].fetch_add(1, std::memory_order_relaxed);
}

BlockingServer::BlockingServer(const BlockingServerOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
  impl_->open_listener();  // on a throw, ~Impl closes the listener
}

BlockingServer::~BlockingServer() = default;

const SocketAddress& BlockingServer::address() const noexcept { return impl_->address; }

void BlockingServer::run() {
  for (int fd = impl_->accept_next(); fd >= 0; fd = impl_->accept_next()) impl_->serve(fd);
}

void BlockingServer::stop() noexcept {
  impl_->stop_requested.store(true, std::memory_order_release);
}

std::array<std::uint64_t, kOutcomeCount> BlockingServer::outcomes() const noexcept {
  std::array<std::uint64_t, kOutcomeCount> counts{};
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    counts[i] = impl_->outcomes[i].load(std::memory_order_relaxed);
  }
  return counts;
}

std::uint64_t BlockingServer::connections_closed() const noexcept {
  std::uint64_t total = 0;
  for (const auto& count : impl_->outcomes) total += count.load(std::memory_order_relaxed);
  return total;
}

const std::vector<std::uint32_t>& BlockingServer::close_latencies_us() const noexcept {
  return impl_->close_latencies_us;
}

std::uint64_t BlockingServer::bytes_discarded() const noexcept {
  return impl_->bytes_discarded.load(std::memory_order_relaxed);
}

}  // namespace ringlinger::tools
