// The load generator: many concurrent HTTP/1.1 clients on one epoll loop, each of which sends a
// request head plus an optional body the server is not expected to read, starts reading after a
// delay, and verifies the response: status 200, the expected Content-Length, every payload byte,
// and then a clean EOF (recv == 0). Anything else is a failure with its reason. Each connection
// behaves as one peer type (cooperative by default; hostile ones on request, see PeerType) and is
// judged against what that type should get. Run it in its own process: it holds up to
// `concurrency` fds.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

// Why a connection did not deliver the whole response followed by a clean EOF.
enum class Failure : std::uint8_t {
  reset,          // ECONNRESET (or another error) while reading: the server's close was a reset
  short_read,     // EOF before the whole response arrived
  bad_response,   // not "200", wrong Content-Length, malformed head, or a payload byte differs
  extra_bytes,    // more bytes than the response before EOF
  connect_error,  // connect() failed (refused, no ports, timeout in SYN)
  timeout,        // no EOF within timeout_ms of connecting
};
inline constexpr std::size_t kFailureCount = 6;
std::string_view to_string(Failure failure) noexcept;

// How a client behaves; each is judged against what it should get (see PeerResult). Every send
// uses MSG_NOSIGNAL and every behaviour is bounded in time (timeout_ms until the connection is
// decided, then never_fin_hold_ms or flood_limit_ms).
enum class PeerType : std::uint8_t {
  cooperative,  // sends the request (and body), reads everything, closes after EOF
  never_fin,    // reads the whole response and EOF, then keeps its socket open (never sends FIN)
                // for never_fin_hold_ms: the server must end it by its drain idle timeout; then
                // closes with RST. Holding keeps its fd and its concurrency slot busy.
  flood,        // after its request, sends garbage as fast as the socket takes it while reading
                // the response and EOF; then goes on until a send fails (the server cuts it off:
                // byte cap or drain timeout) or flood_limit_ms after connect; then closes with RST
  reset,        // reads min(reset_after_bytes, response_bytes) of payload, then closes with RST
  slow_reader,  // reads at most slow_reader_bytes, then pauses slow_reader_interval_ms (a timer),
                // until the response and EOF are in; then closes
  half_close,   // shutdown(SHUT_WR) right after its request, then reads everything, then closes
};
inline constexpr std::size_t kPeerTypeCount = 6;
// "cooperative", "never-fin", "flood", "reset", "slow-reader", "half-close" (as in --peers).
std::string_view to_string(PeerType type) noexcept;

// Relative weights of the peer types, indexed by PeerType. Connection i gets a type chosen
// deterministically from them by smooth weighted round robin: in every block of
// sum(weights) / gcd(weights) consecutive connections from the first, each type appears in
// proportion to its weight, spread evenly (90,2,2,2,2,2: each rare type once per 50 connections).
// At least one weight must be positive (run_load throws std::invalid_argument otherwise).
struct PeerMix {
  std::array<std::uint32_t, kPeerTypeCount> weights{100, 0, 0, 0, 0, 0};
};
// Parses "cooperative=90,never-fin=2,flood=2,reset=2,slow-reader=2,half-close=2" (names as
// to_string(PeerType), weights non-negative integers below 2^32, at least one positive, each
// type at most once); types not named get weight 0. Returns the mix, or an error message naming
// the bad item, e.g. "unknown peer type 'sloth' (known: ...)".
std::variant<PeerMix, std::string> parse_peer_mix(std::string_view text);

struct LoadOptions {
  SocketAddress target;
  // Local addresses to bind before connecting, used round robin (each has its own 28k ephemeral
  // ports); empty: the kernel picks.
  std::vector<SocketAddress> sources;
  std::uint64_t connections = 1000;    // total connections to make
  std::uint32_t concurrency = 100;     // at most this many open at once
  std::uint64_t response_bytes = 16384;  // expected Content-Length (payload bytes)
  std::uint64_t body_bytes = 0;        // request body sent after the head
  std::uint32_t read_delay_ms = 0;     // start reading this long after connect completed
  std::uint32_t timeout_ms = 30'000;   // per connection, from the start of connect
  // Stop starting new connections after this long (0: no limit); those in flight finish.
  std::uint32_t duration_ms = 0;
  // Which kinds of peer to be, and their parameters.
  PeerMix peers;
  std::uint32_t never_fin_hold_ms = 6'000;   // never-fin: how long to keep the socket after EOF
  std::uint32_t flood_limit_ms = 35'000;     // flood: stop flooding after this long at most
  std::uint32_t reset_after_bytes = 4'096;   // reset: payload bytes read before the RST
  std::uint32_t slow_reader_bytes = 512;     // slow-reader: bytes per read (0 counts as 1)
  std::uint32_t slow_reader_interval_ms = 10;  // slow-reader: pause between reads
  // Called about once a second with the result so far (e.g. for a progress line).
  std::function<void(const struct LoadResult&)> progress;
};

// Results of the connections of one peer type. `complete` counts those that got what that type
// should get: for every type but reset, the exact response AND a clean EOF (a flood peer's later
// reset, after the EOF, is expected); for reset peers, reset_after_bytes of correct payload (or
// the whole response if shorter) before they reset the connection themselves.
struct PeerResult {
  std::uint64_t started = 0;   // connections of this type attempted
  std::uint64_t complete = 0;  // got what this type should get
  std::array<std::uint64_t, kFailureCount> failures{};  // the others, by reason
  // Sum of failures.
  std::uint64_t failed() const noexcept {
    std::uint64_t sum = 0;
    for (auto count : failures) sum += count;
    return sum;
  }
};

struct LoadResult {
  std::uint64_t started = 0;   // connections attempted
  std::uint64_t complete = 0;  // got what their type should get (see PeerResult)
  std::array<std::uint64_t, kFailureCount> failures{};
  // Sum over finished connections of the payload each should get: response_bytes, or
  // min(reset_after_bytes, response_bytes) for a reset peer.
  std::uint64_t payload_bytes_expected = 0;
  // Correct payload bytes received, over all, counting at most the expected amount per connection
  // (so bytes_lost() is never negative).
  std::uint64_t payload_bytes_received = 0;
  std::chrono::nanoseconds elapsed{0};
  // Connect start -> EOF, for complete connections of every type but reset (which has no EOF),
  // in microseconds (unsorted).
  std::vector<std::uint32_t> latencies_us;
  // The same counts per peer type (started, complete, failures add up to the totals above).
  std::array<PeerResult, kPeerTypeCount> by_peer{};

  std::uint64_t failed() const noexcept {
    std::uint64_t sum = 0;
    for (auto count : failures) sum += count;
    return sum;
  }
  std::uint64_t finished() const noexcept { return complete + failed(); }
  std::uint64_t bytes_lost() const noexcept {
    return payload_bytes_expected - payload_bytes_received;
  }
  std::uint64_t with(Failure failure) const noexcept {
    return failures[static_cast<std::size_t>(failure)];
  }
};

// Runs the whole load in the calling thread and returns when every connection has finished
// (including never-fin holds and floods). Throws std::system_error if epoll cannot be set up and
// std::invalid_argument if every peer weight is 0.
LoadResult run_load(const LoadOptions& options);

}  // namespace ringlinger::tools
