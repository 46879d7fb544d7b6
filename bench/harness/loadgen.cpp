// The load generator (see loadgen.hpp): one thread, one edge-triggered epoll loop, one slot per
// connection that may be open at once.
//
// Edge-triggered: every socket is registered once, right after connect(), for
// EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET and never modified. So every handler must go on until
// the kernel says EAGAIN (send until EAGAIN or done, recv until EAGAIN, 0 or an error), or put the
// connection in a list that brings it back without an edge. Edges that arrive while a connection
// does not want them (in its read delay, in a slow reader's pause) are ignored on purpose: when
// the wait ends the loop reads at once, without waiting for an edge that already came. The two
// exceptions to "until EAGAIN": a slow reader stops after one read of slow_reader_bytes (its
// pause timer brings it back), and a flood stops after kMaxFloodBytesPerTurn (the send-ready
// list brings it back next turn), so that one connection cannot hold the loop.
//
// Peer types (PeerType): each connection gets one when it starts (see PeerSchedule) and is judged
// against it. A connection is "decided" when it is counted complete or failed; most are closed at
// that moment, but a never-fin peer then holds its fd open (state holding) and a flood peer goes
// on sending (state flooding). Decided connections still occupy their slot.
//
// Time: every deadline of one kind is "start of something + the same duration", so one FIFO of
// slots per kind, ordered by deadline (intrusive lists through the slots, O(1) insertion and
// removal), is the whole timer structure: connect timeouts, read delays, slow-reader pauses,
// never-fin holds, flood limits. The epoll_wait timeout is the earliest of their fronts. Memory
// per open connection is one slot (about 150 bytes) plus a response-head accumulator that exists
// only while a head spans reads; all reads go through one shared 64 KiB buffer and every flood
// sends from one shared read-only 64 KiB chunk.
#include "loadgen.hpp"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <system_error>

#include "http.hpp"

namespace ringlinger::tools {

std::string_view to_string(Failure failure) noexcept {
  switch (failure) {
    case Failure::reset: return "reset";
    case Failure::short_read: return "short_read";
    case Failure::bad_response: return "bad_response";
    case Failure::extra_bytes: return "extra_bytes";
    case Failure::connect_error: return "connect_error";
    case Failure::timeout: return "timeout";
  }
  return "unknown";
}

std::string_view to_string(PeerType type) noexcept {
  switch (type) {
    case PeerType::cooperative: return "cooperative";
    case PeerType::never_fin: return "never-fin";
    case PeerType::flood: return "flood";
    case PeerType::reset: return "reset";
    case PeerType::slow_reader: return "slow-reader";
    case PeerType::half_close: return "half-close";
  }
  return "unknown";
}

namespace {

static_assert(static_cast<std::size_t>(Failure::timeout) + 1 == kFailureCount,
              "kFailureCount must match the Failure enum");
static_assert(static_cast<std::size_t>(PeerType::half_close) + 1 == kPeerTypeCount,
              "kPeerTypeCount must match the PeerType enum");

std::string_view trim_spaces(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string known_peer_type_names() {
  std::string names;
  for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
    names += (i == 0 ? "" : ", ");
    names += to_string(static_cast<PeerType>(i));
  }
  return names;
}

}  // namespace

std::variant<PeerMix, std::string> parse_peer_mix(std::string_view text) {
  PeerMix mix;
  mix.weights.fill(0);
  std::array<bool, kPeerTypeCount> named{};
  if (trim_spaces(text).empty()) {
    return std::string("no peer types given (expected e.g. 'cooperative=90,flood=10')");
  }
  for (std::size_t start = 0;;) {
    const std::size_t comma = text.find(',', start);
    const std::string_view item =
        trim_spaces(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start));
    if (item.empty()) return "empty item in '" + std::string(text) + "'";
    const std::size_t equals = item.find('=');
    if (equals == std::string_view::npos) {
      return "'" + std::string(item) + "' is not name=weight";
    }
    const std::string_view name = trim_spaces(item.substr(0, equals));
    const std::string_view weight_text = trim_spaces(item.substr(equals + 1));
    std::size_t type = 0;
    while (type < kPeerTypeCount && to_string(static_cast<PeerType>(type)) != name) ++type;
    if (type == kPeerTypeCount) {
      return "unknown peer type '" + std::string(name) + "' (known: " + known_peer_type_names() +
             ")";
    }
    if (named[type]) return "peer type '" + std::string(name) + "' is given twice";
    named[type] = true;
    std::uint32_t weight = 0;
    const auto [end, error] =
        std::from_chars(weight_text.data(), weight_text.data() + weight_text.size(), weight);
    if (weight_text.empty() || error != std::errc() ||
        end != weight_text.data() + weight_text.size()) {
      return "'" + std::string(item) + "': the weight must be a non-negative integer below 2^32";
    }
    mix.weights[type] = weight;
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  if (std::all_of(mix.weights.begin(), mix.weights.end(), [](auto w) { return w == 0; })) {
    return "'" + std::string(text) + "': at least one peer type needs a positive weight";
  }
  return mix;
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadBufferBytes = 64 * 1024;
// A response head longer than this without its blank line is a bad response.
constexpr std::size_t kMaxResponseHeadBytes = 16 * 1024;
constexpr int kMaxEventsPerWait = 1024;
// Connections started per loop iteration at most, so that events are handled between batches: a
// connect() can take milliseconds when most ephemeral ports of a (source, destination) are taken,
// and a loop stuck in starting 19,000 of them would time out the ones that connected long ago.
constexpr int kMaxStartsPerIteration = 256;
// The loop wakes at least this often, whatever the deadlines say.
constexpr std::chrono::milliseconds kMaxWait{1000};
constexpr Clock::duration kProgressInterval = std::chrono::seconds(1);
constexpr std::uint32_t kNoSlot = std::numeric_limits<std::uint32_t>::max();
constexpr std::string_view kEndOfHead = "\r\n\r\n";
// A flood peer sends at most this much per turn of the loop before it lets the others run; a
// server that reads as fast as we send would otherwise never let send() say EAGAIN.
constexpr std::size_t kMaxFloodBytesPerTurn = 256 * 1024;

// What every flood peer sends after its request: one read-only chunk shared by all of them.
constexpr std::size_t kFloodChunkBytes = 64 * 1024;
constexpr std::array<char, kFloodChunkBytes> make_flood_chunk() {
  std::array<char, kFloodChunkBytes> chunk{};
  chunk.fill('F');
  return chunk;
}
constexpr std::array<char, kFloodChunkBytes> kFloodChunk = make_flood_chunk();

// ClientConnection i's peer type, by smooth weighted round robin (nginx's upstream balancer): at every
// pick each type's credit grows by its weight, the type with the most credit wins (the lowest
// PeerType value on a tie) and pays the total weight W back. So in every block of W consecutive
// connections from the first one, type t appears exactly weights[t] times, spread as evenly as
// the weights allow; and since multiplying every weight by k gives the same sequence, the real
// period is W / gcd(weights). Example: 90,2,2,2,2,2 repeats every 50 connections, each rare type
// once per 50, the first of them at index 8. Deterministic: a run can be repeated exactly.
class PeerSchedule {
 public:
  explicit PeerSchedule(const PeerMix& mix) {
    for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
      weights_[i] = mix.weights[i];
      total_ += mix.weights[i];
    }
    if (total_ == 0) throw std::invalid_argument("LoadOptions::peers: every weight is 0");
  }

  PeerType next() noexcept {
    std::size_t best = 0;
    for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
      credit_[i] += weights_[i];
      if (credit_[i] > credit_[best]) best = i;
    }
    credit_[best] -= total_;
    return static_cast<PeerType>(best);
  }

 private:
  // 6 weights below 2^32: the credits stay within (-6 * 2^32, 6 * 2^32).
  std::array<std::int64_t, kPeerTypeCount> weights_{};
  std::array<std::int64_t, kPeerTypeCount> credit_{};
  std::int64_t total_ = 0;
};

// The state of one slot. Sending is orthogonal to it: see ClientConnection::sending_stopped. The
// states up to awaiting_eof are "undecided" (the connection is in the timeout list); holding and
// flooding come after the connection was counted complete.
enum class ClientState : std::uint8_t {
  free,             // unused: fd == -1, in no list, not registered with epoll
  connecting,       // connect() in progress; waiting for an event, then SO_ERROR; in the timeout list
  waiting_to_read,  // connected; in the read-delay list; nothing has been read yet
  reading_head,     // reading; the response head is incomplete (head_pending holds its prefix)
  reading_payload,  // head accepted; fewer payload bytes than the goal received so far
  awaiting_eof,     // every payload byte received; the next recv must return 0
  holding,          // never-fin: complete; fd open, nothing read or sent; in the hold list until
                    // hold_until, then closed with RST
  flooding,         // flood: complete; sends on every EPOLLOUT edge, never reads; in the flood
                    // list; a failed send (the server's cut) or the flood limit closes it with RST
};

// Whether `from -> to` is an edge of the connection's life; every state change is checked.
bool is_legal_transition(ClientState from, ClientState to) noexcept {
  switch (from) {
    case ClientState::free: return to == ClientState::connecting;
    case ClientState::connecting:
      return to == ClientState::waiting_to_read || to == ClientState::reading_head ||
             to == ClientState::free;
    case ClientState::waiting_to_read:
      return to == ClientState::reading_head || to == ClientState::free;
    case ClientState::reading_head:  // -> free also when a reset peer's goal is 0
      return to == ClientState::reading_payload || to == ClientState::awaiting_eof ||
             to == ClientState::free;
    case ClientState::reading_payload:
      return to == ClientState::awaiting_eof || to == ClientState::free;
    case ClientState::awaiting_eof:
      return to == ClientState::holding || to == ClientState::flooding ||
             to == ClientState::free;
    case ClientState::holding:
    case ClientState::flooding: return to == ClientState::free;
  }
  return false;
}

bool is_reading(ClientState state) noexcept {
  switch (state) {
    case ClientState::reading_head:
    case ClientState::reading_payload:
    case ClientState::awaiting_eof: return true;
    case ClientState::free:
    case ClientState::connecting:
    case ClientState::waiting_to_read:
    case ClientState::holding:
    case ClientState::flooding: return false;
  }
  return false;
}

// Not yet counted as complete or failed (and so in the timeout list).
bool is_undecided(ClientState state) noexcept {
  switch (state) {
    case ClientState::connecting:
    case ClientState::waiting_to_read:
    case ClientState::reading_head:
    case ClientState::reading_payload:
    case ClientState::awaiting_eof: return true;
    case ClientState::free:
    case ClientState::holding:
    case ClientState::flooding: return false;
  }
  return false;
}

// Links of one intrusive doubly linked list, as slot indices.
struct ListLinks {
  std::uint32_t previous = kNoSlot;
  std::uint32_t next = kNoSlot;
};

struct ClientConnection {
  int fd = -1;
  ClientState state = ClientState::free;
  PeerType peer = PeerType::cooperative;
  // No more send() calls: the request is fully sent (and, for a flood peer, its flood is over),
  // or a send failed.
  bool sending_stopped = false;
  // send() reported a reset (ECONNRESET or another error, not EPIPE) before the connection was
  // decided. The kernel reports an error once, so a later recv() == 0 is not a clean EOF and the
  // connection counts as reset.
  bool reset_seen_while_sending = false;
  // Bumped when the slot is reused, so an epoll event for the previous fd is recognised as stale.
  std::uint32_t generation = 0;
  std::uint64_t request_bytes_sent = 0;
  std::uint64_t payload_bytes_received = 0;  // correct payload bytes, in order, at most the goal
  Clock::time_point connect_started;
  Clock::time_point read_start;      // when waiting_to_read ends
  Clock::time_point resume_reading;  // slow reader: when its pause ends
  Clock::time_point hold_until;      // never-fin: when holding ends
  // One member per list (a slot can be in several at once); membership is the list's contains().
  ListLinks timeout_links;      // timeout list: exactly while undecided
  ListLinks read_delay_links;   // read-delay list: exactly while waiting_to_read
  ListLinks slow_read_links;    // slow-read list: a slow reader between two reads (events ignored)
  ListLinks hold_links;         // hold list: exactly while holding
  ListLinks flood_links;        // flood list: a flood peer from connect until its flood ends
  ListLinks send_ready_links;   // send-ready list: a flood that used its turn's budget
  std::string head_pending;     // response head prefix while it spans reads; empty otherwise
};

// A FIFO of slots threaded through one ListLinks member of every ClientConnection: push_back, front,
// back, contains and unlink are O(1), no allocation.
class SlotFifo {
 public:
  SlotFifo(std::vector<ClientConnection>& connections, ListLinks ClientConnection::*links) noexcept
      : connections_(connections), links_(links) {}

  bool empty() const noexcept { return first_ == kNoSlot; }
  std::uint32_t front() const noexcept { return first_; }
  std::uint32_t back() const noexcept { return last_; }
  bool contains(std::uint32_t slot) const noexcept {
    return first_ == slot || (connections_[slot].*links_).previous != kNoSlot;
  }

  void push_back(std::uint32_t slot) noexcept {
    ListLinks& links = connections_[slot].*links_;
    assert(links.previous == kNoSlot && links.next == kNoSlot && first_ != slot);
    links.previous = last_;
    if (last_ == kNoSlot) {
      first_ = slot;
    } else {
      (connections_[last_].*links_).next = slot;
    }
    last_ = slot;
  }

  void unlink(std::uint32_t slot) noexcept {
    assert(contains(slot));
    ListLinks& links = connections_[slot].*links_;
    if (links.previous == kNoSlot) {
      first_ = links.next;
    } else {
      (connections_[links.previous].*links_).next = links.next;
    }
    if (links.next == kNoSlot) {
      assert(last_ == slot);
      last_ = links.previous;
    } else {
      (connections_[links.next].*links_).previous = links.previous;
    }
    links = ListLinks{};
  }

  void unlink_if_linked(std::uint32_t slot) noexcept {
    if (contains(slot)) unlink(slot);
  }

 private:
  std::vector<ClientConnection>& connections_;
  ListLinks ClientConnection::*links_;
  std::uint32_t first_ = kNoSlot;
  std::uint32_t last_ = kNoSlot;
};

// epoll_event.data.u64 of a connection:
//   63            32 31             0
//   +---------------+---------------+
//   |  generation   |     slot      |
//   +---------------+---------------+
std::uint64_t encode_token(std::uint32_t slot, std::uint32_t generation) noexcept {
  return (std::uint64_t{generation} << 32) | slot;
}
std::uint32_t token_slot(std::uint64_t token) noexcept {
  return static_cast<std::uint32_t>(token & 0xffff'ffffU);
}
std::uint32_t token_generation(std::uint64_t token) noexcept {
  return static_cast<std::uint32_t>(token >> 32);
}

// Prints a failed syscall that cannot fail in a correct program, and stops the process.
[[noreturn]] void abort_on_impossible_error(const char* what, int error) noexcept {
  std::fprintf(stderr, "ringlinger loadgen: %s failed: %s\n", what, std::strerror(error));
  std::abort();
}

bool equals_ignoring_case(std::string_view left, std::string_view right) noexcept {
  if (left.size() != right.size()) return false;
  for (std::size_t i = 0; i < left.size(); ++i) {
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; };
    if (lower(left[i]) != lower(right[i])) return false;
  }
  return true;
}

std::string_view trim_spaces_and_tabs(std::string_view text) noexcept {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Whether `head` (up to and including the blank line) is "HTTP/1.1 200 ..." with exactly one
// Content-Length value, equal to `expected_content_length`, and well-formed header lines.
bool is_expected_response_head(std::string_view head, std::uint64_t expected_content_length) {
  constexpr std::string_view kStatus = "HTTP/1.1 200";
  std::size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  if (!status_line.starts_with(kStatus)) return false;
  if (status_line.size() > kStatus.size() && status_line[kStatus.size()] != ' ') return false;

  bool content_length_seen = false;
  for (std::size_t line_start = line_end + 2; line_start < head.size(); line_start = line_end + 2) {
    line_end = head.find("\r\n", line_start);
    if (line_end == std::string_view::npos) return false;
    const std::string_view line = head.substr(line_start, line_end - line_start);
    if (line.empty()) return content_length_seen;  // the blank line that ends the head
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    if (!equals_ignoring_case(line.substr(0, colon), "content-length")) continue;
    const std::string_view value = trim_spaces_and_tabs(line.substr(colon + 1));
    std::uint64_t content_length = 0;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(),
                                              content_length);
    if (error != std::errc() || end != value.data() + value.size() || value.empty()) return false;
    if (content_length != expected_content_length) return false;
    content_length_seen = true;
  }
  return false;
}


// How release() closes the fd.
enum class CloseWith : std::uint8_t {
  fin,    // plain close(): the server's FIN came and everything was read, so this sends a FIN
  reset,  // SO_LINGER {1, 0} first: RST, and no TIME_WAIT or FIN_WAIT state kept on this side
};

// One run of run_load(): the slots, the lists, the counters.
class LoadRun {
 public:
  explicit LoadRun(const LoadOptions& options);
  ~LoadRun();
  LoadRun(const LoadRun&) = delete;
  LoadRun& operator=(const LoadRun&) = delete;

  LoadResult run();

 private:
  bool may_start_more(Clock::time_point now) const noexcept;
  void start_connections();
  void start_connection(Clock::time_point now);
  void handle_event(std::uint64_t token, std::uint32_t events);
  void handle_connect_event(std::uint32_t slot, std::uint32_t events);
  void on_connected(std::uint32_t slot);
  void send_more(std::uint32_t slot);
  bool send_request(ClientConnection& connection);
  void send_flood(std::uint32_t slot);
  void on_flood_send_error(std::uint32_t slot, int error);
  void end_flood(std::uint32_t slot);
  void continue_floods();
  void start_reading(std::uint32_t slot);
  void resume_slow_read(std::uint32_t slot);
  std::size_t read_limit(const ClientConnection& connection) const noexcept;
  void read_available(std::uint32_t slot);
  bool consume_bytes(std::uint32_t slot, std::span<const char> bytes);
  bool consume_head_bytes(std::uint32_t slot, std::span<const char> bytes);
  bool accept_head(std::uint32_t slot, std::string_view head, std::span<const char> rest);
  bool consume_payload_bytes(std::uint32_t slot, std::span<const char> bytes);
  void on_end_of_stream(std::uint32_t slot);
  std::uint64_t payload_goal(const ClientConnection& connection) const noexcept;
  void expire_deadlines(Clock::time_point now);
  int wait_timeout_ms(Clock::time_point now) const noexcept;
  void report_progress_if_due(Clock::time_point now);
  void transition(ClientConnection& connection, ClientState next) noexcept;
  void count_decided(const ClientConnection& connection);
  void complete(std::uint32_t slot);
  void fail(std::uint32_t slot, Failure failure);
  void release(std::uint32_t slot, CloseWith close_with);

  const LoadOptions& options_;
  const std::string request_;
  const Clock::duration read_delay_;
  const Clock::duration timeout_;
  const Clock::duration never_fin_hold_;
  const Clock::duration flood_limit_;
  const Clock::duration slow_reader_interval_;
  const std::size_t slow_reader_bytes_;  // at least 1
  PeerSchedule schedule_;
  LoadResult result_;
  std::vector<ClientConnection> connections_;
  std::vector<std::uint32_t> free_slots_;  // a stack
  // The deadline FIFOs: every one is ordered by its deadline because every slot enters it at
  // "now" (or its connect start, for the flood list) plus the same duration.
  SlotFifo timeout_list_;     // undecided connections, by connect_started + timeout_
  SlotFifo read_delay_list_;  // waiting_to_read, by read_start
  SlotFifo slow_read_list_;   // slow readers in a pause, by resume_reading
  SlotFifo hold_list_;        // holding never-fin peers, by hold_until
  SlotFifo flood_list_;       // flood peers still flooding, by connect_started + flood_limit_
  // Not a deadline list: floods that stopped at kMaxFloodBytesPerTurn, continued next turn.
  SlotFifo send_ready_list_;
  std::unique_ptr<char[]> read_buffer_;    // kReadBufferBytes, shared by every connection
  int epoll_fd_ = -1;
  std::uint64_t open_connections_ = 0;
  Clock::time_point run_started_;
  Clock::time_point next_progress_;
};

LoadRun::LoadRun(const LoadOptions& options)
    : options_(options),
      request_(make_request(options.body_bytes)),
      read_delay_(std::chrono::milliseconds(options.read_delay_ms)),
      timeout_(std::chrono::milliseconds(options.timeout_ms)),
      never_fin_hold_(std::chrono::milliseconds(options.never_fin_hold_ms)),
      flood_limit_(std::chrono::milliseconds(options.flood_limit_ms)),
      slow_reader_interval_(std::chrono::milliseconds(options.slow_reader_interval_ms)),
      slow_reader_bytes_(std::clamp<std::size_t>(options.slow_reader_bytes, 1, kReadBufferBytes)),
      schedule_(options.peers),
      connections_(static_cast<std::size_t>(
          std::min<std::uint64_t>(options.concurrency, options.connections))),
      timeout_list_(connections_, &ClientConnection::timeout_links),
      read_delay_list_(connections_, &ClientConnection::read_delay_links),
      slow_read_list_(connections_, &ClientConnection::slow_read_links),
      hold_list_(connections_, &ClientConnection::hold_links),
      flood_list_(connections_, &ClientConnection::flood_links),
      send_ready_list_(connections_, &ClientConnection::send_ready_links),
      read_buffer_(std::make_unique<char[]>(kReadBufferBytes)) {
  free_slots_.reserve(connections_.size());
  for (std::size_t slot = connections_.size(); slot > 0; --slot) {
    free_slots_.push_back(static_cast<std::uint32_t>(slot - 1));
  }
  result_.latencies_us.reserve(
      static_cast<std::size_t>(std::min<std::uint64_t>(options.connections, 1U << 20)));
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::system_category(), "epoll_create1");
}

LoadRun::~LoadRun() {
  // run() returns only when every connection is released; this is for an exception in between.
  for (const ClientConnection& connection : connections_) {
    if (connection.fd >= 0) close(connection.fd);
  }
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

LoadResult LoadRun::run() {
  run_started_ = Clock::now();
  next_progress_ = run_started_ + kProgressInterval;
  std::array<epoll_event, kMaxEventsPerWait> events{};
  for (;;) {
    start_connections();
    const Clock::time_point now = Clock::now();
    if (open_connections_ == 0 && !may_start_more(now)) break;
    report_progress_if_due(now);
    const int ready = epoll_wait(epoll_fd_, events.data(), kMaxEventsPerWait, wait_timeout_ms(now));
    if (ready < 0) {
      if (errno == EINTR) continue;
      abort_on_impossible_error("epoll_wait", errno);
    }
    for (int i = 0; i < ready; ++i) {
      handle_event(events[static_cast<std::size_t>(i)].data.u64,
                   events[static_cast<std::size_t>(i)].events);
    }
    continue_floods();
    // After the events: a connection whose EOF is already here is not declared timed out.
    expire_deadlines(Clock::now());
  }
  assert(timeout_list_.empty() && read_delay_list_.empty() && slow_read_list_.empty() &&
         hold_list_.empty() && flood_list_.empty() && send_ready_list_.empty());
  result_.elapsed = Clock::now() - run_started_;
  return std::move(result_);
}

bool LoadRun::may_start_more(Clock::time_point now) const noexcept {
  if (result_.started >= options_.connections || connections_.empty()) return false;
  return options_.duration_ms == 0 ||
         now - run_started_ < std::chrono::milliseconds(options_.duration_ms);
}

// Fills free slots (at most kMaxStartsPerIteration) while the connection count and the duration
// allow.
void LoadRun::start_connections() {
  for (int started_here = 0; started_here < kMaxStartsPerIteration && !free_slots_.empty();
       ++started_here) {
    const Clock::time_point now = Clock::now();  // fresh: also the connect start of this one
    if (!may_start_more(now)) return;
    start_connection(now);
  }
}

// Picks the peer type, then socket, optional bind to a source address, non-blocking connect,
// epoll registration. A failure anywhere is this connection's connect_error.
void LoadRun::start_connection(Clock::time_point now) {
  const std::uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  ClientConnection& connection = connections_[slot];
  assert(connection.state == ClientState::free && connection.fd < 0);
  const std::uint64_t index = result_.started++;
  connection.peer = schedule_.next();
  ++result_.by_peer[static_cast<std::size_t>(connection.peer)].started;
  ++open_connections_;
  ++connection.generation;
  connection.sending_stopped = false;
  connection.reset_seen_while_sending = false;
  connection.request_bytes_sent = 0;
  connection.payload_bytes_received = 0;
  connection.connect_started = now;
  transition(connection, ClientState::connecting);
  timeout_list_.push_back(slot);
  if (connection.peer == PeerType::flood) flood_list_.push_back(slot);

  connection.fd = socket(options_.target.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (connection.fd < 0) return fail(slot, Failure::connect_error);  // EMFILE, ENFILE, EAFNOSUPPORT
  if (!options_.sources.empty()) {
    const SocketAddress& source = options_.sources[index % options_.sources.size()];
    // Port chosen at connect() time, per (source, destination): each source has its own ports.
    // Without it (an old kernel) bind() picks a port per source and the load still runs.
    const int enable = 1;
    (void)setsockopt(connection.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &enable, sizeof(enable));
    if (bind(connection.fd, source.data(), source.size()) != 0) {
      return fail(slot, Failure::connect_error);  // EADDRNOTAVAIL, EADDRINUSE
    }
  }
  bool connected_at_once = false;
  if (connect(connection.fd, options_.target.data(), options_.target.size()) == 0) {
    connected_at_once = true;
  } else if (errno != EINPROGRESS && errno != EINTR) {
    // EINTR: the connect goes on asynchronously, like EINPROGRESS. Anything else (ECONNREFUSED,
    // EADDRNOTAVAIL when the ephemeral ports are exhausted, ENETUNREACH...) is a failed connect.
    return fail(slot, Failure::connect_error);
  }
  epoll_event event{};
  event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  event.data.u64 = encode_token(slot, connection.generation);
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, connection.fd, &event) != 0) {
    return fail(slot, Failure::connect_error);  // ENOMEM, ENOSPC (max_user_watches)
  }
  if (connected_at_once) on_connected(slot);
}

void LoadRun::handle_event(std::uint64_t token, std::uint32_t events) {
  const std::uint32_t slot = token_slot(token);
  if (slot >= connections_.size()) abort_on_impossible_error("epoll token", EINVAL);
  ClientConnection& connection = connections_[slot];
  // Stale: the fd this event was for has been closed and the slot reused or freed.
  if (connection.generation != token_generation(token)) return;
  if (connection.state == ClientState::free) return;
  if (connection.state == ClientState::connecting) {
    // A just-connected socket has nothing to read yet; data that comes later brings a new edge.
    return handle_connect_event(slot, events);
  }
  if (!connection.sending_stopped && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0) {
    send_more(slot);  // ends the connection only for a flood that is already complete
  }
  if (is_reading(connection.state) && !slow_read_list_.contains(slot) &&
      (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0) {
    read_available(slot);
  }
}

// The end of a non-blocking connect: SO_ERROR says whether it worked.
void LoadRun::handle_connect_event(std::uint32_t slot, std::uint32_t events) {
  ClientConnection& connection = connections_[slot];
  int socket_error = 0;
  socklen_t length = sizeof(socket_error);
  if (getsockopt(connection.fd, SOL_SOCKET, SO_ERROR, &socket_error, &length) != 0) {
    socket_error = errno;
  }
  if (socket_error != 0) return fail(slot, Failure::connect_error);  // ECONNREFUSED, ETIMEDOUT...
  if ((events & EPOLLOUT) != 0) return on_connected(slot);
  if ((events & (EPOLLERR | EPOLLHUP)) != 0) return fail(slot, Failure::connect_error);
  // Neither writable nor an error: still connecting.
}

void LoadRun::on_connected(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  if (options_.read_delay_ms == 0) {
    transition(connection, ClientState::reading_head);
  } else {
    transition(connection, ClientState::waiting_to_read);
    connection.read_start = Clock::now() + read_delay_;
    read_delay_list_.push_back(slot);
  }
  send_more(slot);
}

// The request first, then what the peer type does after it: a half-close sends its FIN, a flood
// goes on with garbage while its flood lasts, everyone else stops sending.
void LoadRun::send_more(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  assert(!connection.sending_stopped);
  if (!send_request(connection)) {
    // EAGAIN: the next EPOLLOUT edge resumes. A failed send also ends a flood (it could not even
    // finish its request body); one that is already complete has nothing left to do.
    if (connection.sending_stopped && connection.peer == PeerType::flood) {
      if (connection.state == ClientState::flooding) return release(slot, CloseWith::reset);
      if (flood_list_.contains(slot)) end_flood(slot);
    }
    return;
  }
  switch (connection.peer) {
    case PeerType::flood:
      if (flood_list_.contains(slot)) return send_flood(slot);
      break;  // its flood ended before its request was out: the request was all it sent
    case PeerType::half_close:
      // ENOTCONN after the server's reset: the response check sees that reset.
      (void)shutdown(connection.fd, SHUT_WR);
      break;
    case PeerType::cooperative:
    case PeerType::never_fin:
    case PeerType::reset:
    case PeerType::slow_reader: break;
  }
  connection.sending_stopped = true;
}

// Sends the rest of the request until done (true) or EAGAIN (false). EPIPE (the peer's FIN came
// before its RST, so everything it sent is already here) just stops writing; another error also
// stops writing and is remembered, because it consumed the reset the response check would
// otherwise see.
bool LoadRun::send_request(ClientConnection& connection) {
  while (connection.request_bytes_sent < request_.size()) {
    const std::size_t offset = static_cast<std::size_t>(connection.request_bytes_sent);
    const ssize_t sent =
        send(connection.fd, request_.data() + offset, request_.size() - offset, MSG_NOSIGNAL);
    if (sent >= 0) {
      connection.request_bytes_sent += static_cast<std::uint64_t>(sent);
      continue;
    }
    const int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return false;  // the next EPOLLOUT edge resumes
    if (error != EPIPE) connection.reset_seen_while_sending = true;  // ECONNRESET, ETIMEDOUT...
    connection.sending_stopped = true;
    return false;
  }
  return true;
}

// A flood peer's garbage, after its request: until EAGAIN (the next EPOLLOUT edge resumes), an
// error, or kMaxFloodBytesPerTurn (the send-ready list resumes it next turn).
void LoadRun::send_flood(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  std::size_t budget = kMaxFloodBytesPerTurn;
  while (budget > 0) {
    const ssize_t sent = send(connection.fd, kFloodChunk.data(),
                              std::min(budget, kFloodChunk.size()), MSG_NOSIGNAL);
    if (sent > 0) {
      budget -= std::min(budget, static_cast<std::size_t>(sent));
      continue;
    }
    const int error = sent == 0 ? EAGAIN : errno;  // 0 cannot happen for a non-empty send
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return;
    return on_flood_send_error(slot, error);
  }
  if (!send_ready_list_.contains(slot)) send_ready_list_.push_back(slot);
}

// A flood's send failed. After the verified EOF this is the server giving up on the flood (its
// byte cap or drain timeout, usually with an RST): expected, and the end of the connection.
// Before it, it is judged like a failed request send.
void LoadRun::on_flood_send_error(std::uint32_t slot, int error) {
  ClientConnection& connection = connections_[slot];
  if (connection.state == ClientState::flooding) return release(slot, CloseWith::reset);
  if (error != EPIPE) connection.reset_seen_while_sending = true;
  end_flood(slot);
}

// An undecided flood peer stops flooding (its limit passed, or a send failed) and from now on
// only reads (after the rest of its request, if the limit came first); it closes with RST as soon
// as it is complete. A flood peer is in the flood list exactly while it may still send garbage.
void LoadRun::end_flood(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  assert(is_undecided(connection.state));
  flood_list_.unlink(slot);
  send_ready_list_.unlink_if_linked(slot);
  if (connection.request_bytes_sent == request_.size()) connection.sending_stopped = true;
}

// Gives every flood that used up its budget last turn one more turn; those that use it up again
// go to the back and wait for the next pass.
void LoadRun::continue_floods() {
  if (send_ready_list_.empty()) return;
  const std::uint32_t last = send_ready_list_.back();
  for (;;) {
    const std::uint32_t slot = send_ready_list_.front();
    send_ready_list_.unlink(slot);
    send_more(slot);  // sending_stopped is false: end_flood() takes a slot out of this list
    if (slot == last) return;
  }
}

// The read delay is over: read what has queued up since (its edges were ignored).
void LoadRun::start_reading(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  read_delay_list_.unlink(slot);
  transition(connection, ClientState::reading_head);
  read_available(slot);
}

// A slow reader's pause is over: read (its edges during the pause were ignored).
void LoadRun::resume_slow_read(std::uint32_t slot) {
  slow_read_list_.unlink(slot);
  read_available(slot);
}

// How much one recv() may take: a slow reader takes slow_reader_bytes; a reset peer no payload
// beyond its goal (the head read before may have brought more: those bytes are not counted).
std::size_t LoadRun::read_limit(const ClientConnection& connection) const noexcept {
  switch (connection.peer) {
    case PeerType::slow_reader: return slow_reader_bytes_;
    case PeerType::reset:
      if (connection.state == ClientState::reading_payload) {
        return static_cast<std::size_t>(std::min<std::uint64_t>(
            kReadBufferBytes, payload_goal(connection) - connection.payload_bytes_received));
      }
      return kReadBufferBytes;
    case PeerType::cooperative:
    case PeerType::never_fin:
    case PeerType::flood:
    case PeerType::half_close: return kReadBufferBytes;
  }
  return kReadBufferBytes;
}

// recv until EAGAIN, EOF, an error, or the connection is decided; a slow reader pauses after
// each read that brought bytes.
void LoadRun::read_available(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  const bool pauses = connection.peer == PeerType::slow_reader &&
                      slow_reader_interval_ > Clock::duration::zero();
  for (;;) {
    const ssize_t received = recv(connection.fd, read_buffer_.get(), read_limit(connection), 0);
    if (received > 0) {
      const std::span<const char> bytes(read_buffer_.get(), static_cast<std::size_t>(received));
      if (!consume_bytes(slot, bytes)) return;
      if (pauses) {
        connection.resume_reading = Clock::now() + slow_reader_interval_;
        return slow_read_list_.push_back(slot);
      }
      continue;
    }
    if (received == 0) return on_end_of_stream(slot);
    const int error = errno;
    if (error == EINTR) continue;
    if (error == EAGAIN || error == EWOULDBLOCK) return;
    return fail(slot, Failure::reset);  // ECONNRESET, or ETIMEDOUT and the like
  }
}

// Feeds received bytes to the response check; false when that decided the connection.
bool LoadRun::consume_bytes(std::uint32_t slot, std::span<const char> bytes) {
  switch (connections_[slot].state) {
    case ClientState::reading_head: return consume_head_bytes(slot, bytes);
    case ClientState::reading_payload: return consume_payload_bytes(slot, bytes);
    case ClientState::awaiting_eof: fail(slot, Failure::extra_bytes); return false;
    case ClientState::free:
    case ClientState::connecting:
    case ClientState::waiting_to_read:
    case ClientState::holding:
    case ClientState::flooding: break;
  }
  abort_on_impossible_error("consume_bytes in a state that does not read", EINVAL);
}

// Finds the end of the response head, in this read alone (no copy) or across reads (accumulated
// in head_pending, at most kMaxResponseHeadBytes).
bool LoadRun::consume_head_bytes(std::uint32_t slot, std::span<const char> bytes) {
  ClientConnection& connection = connections_[slot];
  const std::string_view text(bytes.data(), bytes.size());
  if (connection.head_pending.empty()) {
    const std::size_t end = text.find(kEndOfHead);
    if (end != std::string_view::npos) {
      const std::size_t head_size = end + kEndOfHead.size();
      return accept_head(slot, text.substr(0, head_size), bytes.subspan(head_size));
    }
  }
  const std::size_t previous_size = connection.head_pending.size();
  const std::size_t room = kMaxResponseHeadBytes - previous_size;
  connection.head_pending.append(text.substr(0, std::min(room, text.size())));
  const std::size_t end =
      connection.head_pending.find(kEndOfHead, previous_size >= 3 ? previous_size - 3 : 0);
  if (end == std::string::npos) {
    if (connection.head_pending.size() >= kMaxResponseHeadBytes) {
      fail(slot, Failure::bad_response);
      return false;
    }
    return true;
  }
  // The blank line ends inside this read: the bytes after it are payload.
  const std::size_t head_size = end + kEndOfHead.size();
  const std::size_t head_bytes_in_this_read = head_size - previous_size;
  std::string head = std::move(connection.head_pending);
  connection.head_pending = std::string();  // a moved-from string is unspecified: make it empty
  head.resize(head_size);
  return accept_head(slot, head, bytes.subspan(head_bytes_in_this_read));
}

// Checks the head, then treats `rest` (the bytes after it in this read) as payload. A reset peer
// whose goal is 0 is done right here.
bool LoadRun::accept_head(std::uint32_t slot, std::string_view head, std::span<const char> rest) {
  ClientConnection& connection = connections_[slot];
  if (!is_expected_response_head(head, options_.response_bytes)) {
    fail(slot, Failure::bad_response);
    return false;
  }
  if (payload_goal(connection) == 0) {
    if (connection.peer == PeerType::reset) {
      complete(slot);
      return false;
    }
    transition(connection, ClientState::awaiting_eof);
  } else {
    transition(connection, ClientState::reading_payload);
  }
  if (rest.empty()) return true;
  return consume_bytes(slot, rest);
}

// Checks payload bytes against payload_byte() at their offset. Bytes past the response are
// extra; a reset peer completes at its goal and ignores what came with it in the same read.
bool LoadRun::consume_payload_bytes(std::uint32_t slot, std::span<const char> bytes) {
  ClientConnection& connection = connections_[slot];
  const std::uint64_t goal = payload_goal(connection);
  const std::uint64_t missing = goal - connection.payload_bytes_received;
  const std::size_t expected_here =
      static_cast<std::size_t>(std::min<std::uint64_t>(missing, bytes.size()));
  const std::size_t correct =
      first_payload_mismatch(bytes.first(expected_here), connection.payload_bytes_received);
  connection.payload_bytes_received += correct;
  if (correct < expected_here) {
    fail(slot, Failure::bad_response);
    return false;
  }
  if (connection.payload_bytes_received == goal) {
    if (connection.peer == PeerType::reset) {
      complete(slot);
      return false;
    }
    transition(connection, ClientState::awaiting_eof);
  }
  if (bytes.size() > expected_here) {
    fail(slot, Failure::extra_bytes);
    return false;
  }
  return true;
}

// recv() returned 0: a clean EOF completes the connection only after the whole response, and only
// if no reset was swallowed by a send().
void LoadRun::on_end_of_stream(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  if (connection.reset_seen_while_sending) return fail(slot, Failure::reset);
  switch (connection.state) {
    case ClientState::awaiting_eof: return complete(slot);
    case ClientState::reading_head:
    case ClientState::reading_payload: return fail(slot, Failure::short_read);
    case ClientState::free:
    case ClientState::connecting:
    case ClientState::waiting_to_read:
    case ClientState::holding:
    case ClientState::flooding: break;
  }
  abort_on_impossible_error("end of stream in a state that does not read", EINVAL);
}

// The payload bytes this connection must receive: the whole response, or for a reset peer
// min(reset_after_bytes, response_bytes).
std::uint64_t LoadRun::payload_goal(const ClientConnection& connection) const noexcept {
  if (connection.peer != PeerType::reset) return options_.response_bytes;
  return std::min<std::uint64_t>(options_.reset_after_bytes, options_.response_bytes);
}

// Every deadline that has come: read delays end, slow readers read again, holds end, floods end,
// and undecided connections time out (still connecting: connect_error, a SYN that got no answer;
// else timeout). Each step takes the front out of its list, and whatever a step puts back in a
// list has a deadline after `now`, so every loop ends.
void LoadRun::expire_deadlines(Clock::time_point now) {
  while (!read_delay_list_.empty() && connections_[read_delay_list_.front()].read_start <= now) {
    start_reading(read_delay_list_.front());
  }
  while (!slow_read_list_.empty() &&
         connections_[slow_read_list_.front()].resume_reading <= now) {
    resume_slow_read(slow_read_list_.front());
  }
  while (!hold_list_.empty() && connections_[hold_list_.front()].hold_until <= now) {
    release(hold_list_.front(), CloseWith::reset);
  }
  while (!flood_list_.empty() &&
         connections_[flood_list_.front()].connect_started + flood_limit_ <= now) {
    const std::uint32_t slot = flood_list_.front();
    if (connections_[slot].state == ClientState::flooding) {
      release(slot, CloseWith::reset);
    } else {
      end_flood(slot);
    }
  }
  while (!timeout_list_.empty() &&
         connections_[timeout_list_.front()].connect_started + timeout_ <= now) {
    const std::uint32_t slot = timeout_list_.front();
    fail(slot, connections_[slot].state == ClientState::connecting ? Failure::connect_error
                                                                       : Failure::timeout);
  }
}

// Milliseconds until the earliest deadline (rounded up), at most kMaxWait; 0 while there are
// connections to start or floods to continue.
int LoadRun::wait_timeout_ms(Clock::time_point now) const noexcept {
  if (!free_slots_.empty() && may_start_more(now)) return 0;
  if (!send_ready_list_.empty()) return 0;
  Clock::time_point wake = now + kMaxWait;
  if (!read_delay_list_.empty()) {
    wake = std::min(wake, connections_[read_delay_list_.front()].read_start);
  }
  if (!slow_read_list_.empty()) {
    wake = std::min(wake, connections_[slow_read_list_.front()].resume_reading);
  }
  if (!hold_list_.empty()) wake = std::min(wake, connections_[hold_list_.front()].hold_until);
  if (!flood_list_.empty()) {
    wake = std::min(wake, connections_[flood_list_.front()].connect_started + flood_limit_);
  }
  if (!timeout_list_.empty()) {
    wake = std::min(wake, connections_[timeout_list_.front()].connect_started + timeout_);
  }
  if (options_.progress) wake = std::min(wake, next_progress_);
  if (wake <= now) return 0;
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake - now);
  return static_cast<int>(wait.count());
}

void LoadRun::report_progress_if_due(Clock::time_point now) {
  if (!options_.progress || now < next_progress_) return;
  next_progress_ = now + kProgressInterval;
  result_.elapsed = now - run_started_;
  options_.progress(result_);
}

void LoadRun::transition(ClientConnection& connection, ClientState next) noexcept {
  if (!is_legal_transition(connection.state, next)) {
    abort_on_impossible_error("connection state transition", EINVAL);
  }
  connection.state = next;
}

// The payload figures of a connection that was just decided (complete or failed), exactly once.
void LoadRun::count_decided(const ClientConnection& connection) {
  assert(is_undecided(connection.state));
  assert(connection.payload_bytes_received <= payload_goal(connection));
  result_.payload_bytes_expected += payload_goal(connection);
  result_.payload_bytes_received += connection.payload_bytes_received;
}

// The connection got what its type should get. Counted now; then closed at once, or kept open
// (never-fin: holding; flood: flooding while its flood lasts).
void LoadRun::complete(std::uint32_t slot) {
  ClientConnection& connection = connections_[slot];
  const Clock::time_point now = Clock::now();
  count_decided(connection);
  ++result_.complete;
  ++result_.by_peer[static_cast<std::size_t>(connection.peer)].complete;
  timeout_list_.unlink(slot);
  if (connection.peer != PeerType::reset) {  // a reset peer has no EOF to measure up to
    const auto latency =
        std::chrono::duration_cast<std::chrono::microseconds>(now - connection.connect_started);
    result_.latencies_us.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(
        latency.count(), std::numeric_limits<std::uint32_t>::max())));
  }
  switch (connection.peer) {
    case PeerType::cooperative:
    case PeerType::slow_reader:
    case PeerType::half_close: return release(slot, CloseWith::fin);
    case PeerType::reset: return release(slot, CloseWith::reset);
    case PeerType::never_fin:
      transition(connection, ClientState::holding);
      connection.hold_until = now + never_fin_hold_;
      return hold_list_.push_back(slot);
    case PeerType::flood:
      // Flooding goes on only while the flood lasts (no failed send, flood_limit_ms not over).
      if (!flood_list_.contains(slot)) return release(slot, CloseWith::reset);
      return transition(connection, ClientState::flooding);
  }
}

void LoadRun::fail(std::uint32_t slot, Failure failure) {
  ClientConnection& connection = connections_[slot];
  count_decided(connection);
  ++result_.failures[static_cast<std::size_t>(failure)];
  ++result_.by_peer[static_cast<std::size_t>(connection.peer)]
        .failures[static_cast<std::size_t>(failure)];
  release(slot, CloseWith::reset);
}

// Closes the fd (which also removes it from epoll), takes the slot out of every list, and returns
// the slot to the free stack. The connection was counted before (count_decided).
void LoadRun::release(std::uint32_t slot, CloseWith close_with) {
  ClientConnection& connection = connections_[slot];
  if (connection.fd >= 0) {
    if (close_with == CloseWith::reset) {
      // If this fails (it cannot on a valid TCP socket) the close below sends a FIN instead.
      const linger abort_on_close{1, 0};
      (void)setsockopt(connection.fd, SOL_SOCKET, SO_LINGER, &abort_on_close,
                       sizeof(abort_on_close));
    }
    close(connection.fd);  // on Linux the fd is released even when close reports an error
    connection.fd = -1;
  }
  for (SlotFifo* list : {&timeout_list_, &read_delay_list_, &slow_read_list_, &hold_list_,
                         &flood_list_, &send_ready_list_}) {
    list->unlink_if_linked(slot);
  }
  transition(connection, ClientState::free);
  connection.head_pending = std::string();
  --open_connections_;
  free_slots_.push_back(slot);
}

}  // namespace

LoadResult run_load(const LoadOptions& options) {
  LoadRun load_run(options);
  return load_run.run();
}

}  // namespace ringlinger::tools
