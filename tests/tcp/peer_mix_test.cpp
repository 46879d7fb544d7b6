// The load generator's peer types (bench/harness/loadgen.hpp), against a real Manager-based responder on
// 127.0.0.1 with short drain limits (idle 300 ms, byte cap 1 MiB, drain 3 s). For each type it
// proves two things at once: the client side judges the type correctly (every connection of the
// type counts as complete, the figures add up), and the server's CloseReport outcome is the one
// that type must cause: cooperative, slow-reader and half-close -> clean; never-fin ->
// drain_idle_timeout; flood -> drain_byte_cap (or drain_timeout); reset -> peer_reset, with the
// RST arriving mid-response. It also checks the edges of each behaviour (a slow reader is really
// slow and still bounded by timeout_ms, a never-fin hold keeps its slot, a flood stops at
// flood_limit_ms when the server lets it go on), --peers parsing, and the deterministic,
// interleaved assignment of types to connections.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>

#include "load_report.hpp"
#include "loadgen.hpp"
#include "tcp_support.hpp"

namespace ringlinger {
namespace {

using namespace testing_support;
using tools::Failure;
using tools::LoadOptions;
using tools::LoadResult;
using tools::PeerMix;
using tools::PeerType;

constexpr std::size_t index_of(PeerType type) { return static_cast<std::size_t>(type); }

PeerMix only(PeerType type) {
  PeerMix mix;
  mix.weights.fill(0);
  mix.weights[index_of(type)] = 1;
  return mix;
}

// The server configuration of these tests: short drain limits, so hostile peers end quickly.
Config short_drain_config() {
  Config config;
  config.drain_idle_timeout_ms = 300;
  config.drain_max_bytes = 1 << 20;
  config.drain_timeout_ms = 3000;
  config.max_connections = 1024;
  return config;
}

LoadOptions small_load(PeerMix peers, std::uint64_t response_bytes) {
  LoadOptions options;
  options.connections = 30;
  options.concurrency = 30;
  options.response_bytes = response_bytes;
  options.timeout_ms = 10'000;
  options.peers = peers;
  return options;
}

// Runs `options` against `responder`: the responder's loop on this thread, run_load() in another,
// until the load is done and the server has reported every connection that reached it.
LoadResult run_against(Responder& responder, LoadOptions options) {
  options.target = responder.address;
  LoadResult result;
  std::atomic<bool> done{false};
  std::thread client([&] {
    result = tools::run_load(options);
    done = true;
  });
  const bool finished = responder.run_until(
      [&] {
        return done.load() &&
               responder.reports.size() >= result.started - result.with(Failure::connect_error);
      },
      30s);
  client.join();
  EXPECT_TRUE(finished) << "the load or the server did not finish in time: "
                        << tools::summarize(result) << ", " << responder.reports.size()
                        << " server reports";
  return result;
}

// The figures of a result agree with each other: the totals are the sums over types, every
// connection finished, and no more payload was counted than expected.
void expect_consistent(const LoadResult& result) {
  std::uint64_t started = 0;
  std::uint64_t complete = 0;
  std::array<std::uint64_t, tools::kFailureCount> failures{};
  for (const tools::PeerResult& peer : result.by_peer) {
    started += peer.started;
    complete += peer.complete;
    for (std::size_t i = 0; i < tools::kFailureCount; ++i) failures[i] += peer.failures[i];
    EXPECT_EQ(peer.started, peer.complete + peer.failed());
  }
  EXPECT_EQ(started, result.started);
  EXPECT_EQ(complete, result.complete);
  EXPECT_EQ(failures, result.failures);
  EXPECT_EQ(result.finished(), result.started);
  EXPECT_LE(result.payload_bytes_received, result.payload_bytes_expected);
}

std::string outcomes_of(const Responder& responder) {
  std::string text;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    const std::size_t count = responder.count(static_cast<Outcome>(i));
    if (count != 0) text += std::string(to_string(static_cast<Outcome>(i))) + "=" + std::to_string(count) + " ";
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// One peer type at a time: 30 connections, all open at once.

TEST(PeerTypes, CooperativePeersPostingAnUnreadBodyEndClean) {
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::cooperative), 16384);
  options.body_bytes = 64 * 1024;  // never read by the responder: drained after its FIN
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::cooperative)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::clean), 30u) << outcomes_of(responder);
  EXPECT_EQ(result.payload_bytes_received, 30u * 16384);
  EXPECT_EQ(result.latencies_us.size(), 30u);
}

TEST(PeerTypes, HalfClosingPeersEndClean) {
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::half_close), 16384);
  options.body_bytes = 4096;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::half_close)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::clean), 30u) << outcomes_of(responder);
  EXPECT_EQ(result.latencies_us.size(), 30u);
}

TEST(PeerTypes, SlowReadersAreReallySlowAndEndClean) {
  // 8 KiB + head in reads of 512 B with 5 ms pauses: at least 16 pauses, about 90 ms in all,
  // well inside the server's 300 ms drain idle timeout.
  Responder responder(short_drain_config(), tools::make_response(8192));
  LoadOptions options = small_load(only(PeerType::slow_reader), 8192);
  options.slow_reader_bytes = 512;
  options.slow_reader_interval_ms = 5;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::slow_reader)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::clean), 30u) << outcomes_of(responder);
  ASSERT_EQ(result.latencies_us.size(), 30u);
  EXPECT_GE(*std::min_element(result.latencies_us.begin(), result.latencies_us.end()), 16u * 5'000)
      << "a slow reader read faster than slow_reader_bytes per slow_reader_interval_ms";
}

TEST(PeerTypes, SlowReaderOutlastingTheDrainIdleTimeoutStillGetsEverything) {
  // 16 KiB in 512 B reads every 20 ms takes more than 660 ms: the server's drain idle timer
  // (300 ms without input after its SHUT_WR) fires first and it closes. Its FIN and the whole
  // response are already queued at the client, so the client still gets every byte and the EOF;
  // the connection's timeout (from connect) does not cut it short either.
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::slow_reader), 16384);
  options.slow_reader_interval_ms = 20;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::slow_reader)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::drain_idle_timeout), 30u) << outcomes_of(responder);
}

TEST(PeerTypes, SlowReaderIsStillBoundByTheConnectionTimeout) {
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::slow_reader), 16384);
  options.slow_reader_interval_ms = 10;  // about 330 ms in all
  options.timeout_ms = 150;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::slow_reader)].failures[static_cast<std::size_t>(
                Failure::timeout)],
            30u)
      << tools::summarize(result);
  // The client resets at its timeout, before the server's drain idle timeout.
  EXPECT_EQ(responder.count(Outcome::peer_reset), 30u) << outcomes_of(responder);
  EXPECT_LT(result.payload_bytes_received, result.payload_bytes_expected);
}

TEST(PeerTypes, NeverFinPeersAreEndedByTheDrainIdleTimeoutAndHoldTheirSlot) {
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::never_fin), 16384);
  options.never_fin_hold_ms = 700;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::never_fin)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(result.latencies_us.size(), 30u);
  EXPECT_EQ(responder.count(Outcome::drain_idle_timeout), 30u) << outcomes_of(responder);
  for (const auto& [id, report] : responder.reports) {
    EXPECT_GE(report.drain_time, 300ms);  // never before the timeout
  }
  EXPECT_GE(result.elapsed, 700ms) << "the hold did not keep the connections open";
}

TEST(PeerTypes, NeverFinHoldKeepsItsConcurrencySlot) {
  Responder responder(short_drain_config(), tools::make_response(1000));
  LoadOptions options = small_load(only(PeerType::never_fin), 1000);
  options.connections = 3;
  options.concurrency = 1;
  options.never_fin_hold_ms = 200;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.complete, 3u) << tools::summarize(result);
  EXPECT_GE(result.elapsed, 600ms) << "three holds of 200 ms through one slot";
}

TEST(PeerTypes, FloodPeersGetTheirResponseAndAreCutOffByTheServer) {
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::flood), 16384);
  options.flood_limit_ms = 10'000;  // longer than the server's drain timeout: the server must cut
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::flood)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(result.latencies_us.size(), 30u);
  EXPECT_EQ(responder.count(Outcome::drain_byte_cap) + responder.count(Outcome::drain_timeout), 30u)
      << outcomes_of(responder);
  EXPECT_GE(responder.count(Outcome::drain_byte_cap), 1u) << "1 MiB over loopback takes < 3 s";
  EXPECT_LT(result.elapsed, 10s) << "the floods ended at flood_limit_ms, not at the server's cut";
}

TEST(PeerTypes, FloodStopsAtTheFloodLimitWhenTheServerLetsItGoOn) {
  Config config = short_drain_config();
  config.drain_max_bytes = 0;  // unlimited: only the drain timeout (3 s) would stop the flood
  config.drain_idle_timeout_ms = 3000;
  Responder responder(config, tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::flood), 16384);
  options.connections = 4;
  options.flood_limit_ms = 500;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.complete, 4u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::peer_reset), 4u) << outcomes_of(responder);
  EXPECT_GE(result.elapsed, 500ms);
  EXPECT_LT(result.elapsed, 2500ms);
  for (const auto& [id, report] : responder.reports) EXPECT_GT(report.bytes_discarded, 1u << 20);
}

TEST(PeerTypes, FloodLimitOfZeroStopsTheGarbageButNotTheRequest) {
  // The flood ends at the first deadline pass, after at most one burst of garbage: the request
  // (with its body) has gone out, the response and EOF come, and the peer then resets at once
  // (its flood is over), so the server, which never saw a FIN, reports a peer reset.
  Responder responder(short_drain_config(), tools::make_response(16384));
  LoadOptions options = small_load(only(PeerType::flood), 16384);
  options.body_bytes = 10'000;
  options.flood_limit_ms = 0;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.complete, 30u) << tools::summarize(result);
  EXPECT_EQ(responder.count(Outcome::peer_reset), 30u) << outcomes_of(responder);
  EXPECT_LT(result.elapsed, 2s);
}

TEST(PeerTypes, ResetPeersResetMidResponse) {
  // 8 MiB is more than the server's send buffer (tcp_wmem max 4 MiB) plus the client's receive
  // window, so the RST after 4 KiB arrives while the server is still sending.
  constexpr std::uint64_t kResponseBytes = 8u << 20;
  Responder responder(short_drain_config(), tools::make_response(kResponseBytes));
  LoadOptions options = small_load(only(PeerType::reset), kResponseBytes);
  options.reset_after_bytes = 4096;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.by_peer[index_of(PeerType::reset)].complete, 30u) << tools::summarize(result);
  EXPECT_EQ(result.payload_bytes_expected, 30u * 4096);
  EXPECT_EQ(result.payload_bytes_received, 30u * 4096);
  EXPECT_TRUE(result.latencies_us.empty()) << "a reset peer has no EOF to measure up to";
  EXPECT_EQ(responder.count(Outcome::peer_reset), 30u) << outcomes_of(responder);
  for (const auto& [id, report] : responder.reports) {
    EXPECT_LT(report.bytes_sent, responder.response().size()) << "the RST came after the response";
  }
}

TEST(PeerTypes, ResetPeerWithAShortResponseReadsAllOfItThenResets) {
  // The goal is min(reset_after_bytes, response_bytes): the whole 1000 bytes, then RST without
  // waiting for the EOF. The server never sees a FIN from it, so this is still a peer reset.
  Responder responder(short_drain_config(), tools::make_response(1000));
  LoadOptions options = small_load(only(PeerType::reset), 1000);
  options.reset_after_bytes = 4096;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  EXPECT_EQ(result.complete, 30u) << tools::summarize(result);
  EXPECT_EQ(result.payload_bytes_expected, 30u * 1000);
  EXPECT_EQ(result.payload_bytes_received, 30u * 1000);
  EXPECT_EQ(responder.count(Outcome::peer_reset), 30u) << outcomes_of(responder);
}

// All six types in one run, ten connections each, all open at once.
TEST(PeerTypes, MixedRunGivesEachTypeItsOutcome) {
  Responder responder(short_drain_config(), tools::make_response(8192));
  LoadOptions options = small_load(PeerMix{{1, 1, 1, 1, 1, 1}}, 8192);
  options.connections = 60;
  options.concurrency = 60;
  options.never_fin_hold_ms = 700;
  options.flood_limit_ms = 10'000;
  options.reset_after_bytes = 4096;
  options.slow_reader_interval_ms = 5;
  const LoadResult result = run_against(responder, options);
  expect_consistent(result);
  for (std::size_t type = 0; type < tools::kPeerTypeCount; ++type) {
    EXPECT_EQ(result.by_peer[type].started, 10u) << to_string(static_cast<PeerType>(type));
    EXPECT_EQ(result.by_peer[type].complete, 10u) << to_string(static_cast<PeerType>(type));
  }
  EXPECT_EQ(result.latencies_us.size(), 50u);
  EXPECT_EQ(result.payload_bytes_expected, 50u * 8192 + 10u * 4096);
  EXPECT_EQ(result.bytes_lost(), 0u);
  EXPECT_EQ(responder.count(Outcome::clean), 30u) << outcomes_of(responder);
  EXPECT_EQ(responder.count(Outcome::drain_idle_timeout), 10u) << outcomes_of(responder);
  EXPECT_EQ(responder.count(Outcome::drain_byte_cap) + responder.count(Outcome::drain_timeout), 10u)
      << outcomes_of(responder);
  EXPECT_EQ(responder.count(Outcome::peer_reset), 10u) << outcomes_of(responder);

  const std::string table = tools::peer_table(result);
  for (std::size_t type = 0; type < tools::kPeerTypeCount; ++type) {
    EXPECT_NE(table.find(to_string(static_cast<PeerType>(type))), std::string::npos) << table;
  }
  const nlohmann::json json = tools::to_json(result);
  EXPECT_EQ(json["peers"]["flood"]["complete"], 10u);
  EXPECT_EQ(json["peers"]["slow-reader"]["failed"], 0u);
  EXPECT_EQ(json["peers"]["reset"]["failures"]["reset"], 0u);
}

// ---------------------------------------------------------------------------------------------
// Assignment of types to connections, seen through by_peer[].started: the load runs against a
// port that is bound but not listening, so every connection fails at once with connect_error.

class RefusedPort {
 public:
  RefusedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const SocketAddress any = loopback_any_port();
    if (fd_ < 0 || ::bind(fd_, any.data(), any.size()) != 0) return;
    sockaddr_storage storage{};
    socklen_t length = sizeof(storage);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&storage), &length);
    address = SocketAddress(reinterpret_cast<const sockaddr*>(&storage), length);
  }
  ~RefusedPort() { ::close(fd_); }
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;

  SocketAddress address;

 private:
  int fd_ = -1;
};

std::array<std::uint64_t, tools::kPeerTypeCount> types_of_first(const PeerMix& mix,
                                                                std::uint64_t connections) {
  RefusedPort port;
  LoadOptions options;
  options.target = port.address;
  options.connections = connections;
  options.concurrency = 200;
  options.timeout_ms = 5'000;
  options.peers = mix;
  const LoadResult result = tools::run_load(options);
  expect_consistent(result);
  EXPECT_EQ(result.with(Failure::connect_error), connections);
  std::array<std::uint64_t, tools::kPeerTypeCount> started{};
  for (std::size_t type = 0; type < tools::kPeerTypeCount; ++type) {
    started[type] = result.by_peer[type].started;
    EXPECT_EQ(result.by_peer[type].failures[static_cast<std::size_t>(Failure::connect_error)],
              started[type]);
  }
  return started;
}

TEST(PeerAssignment, EveryTypeOfTheDocumentedMixAppearsInTheFirst100Connections) {
  const PeerMix mix{{90, 2, 2, 2, 2, 2}};
  const std::array<std::uint64_t, tools::kPeerTypeCount> expected{90, 2, 2, 2, 2, 2};
  EXPECT_EQ(types_of_first(mix, 100), expected);
  // Halving the weights gives the same sequence: each rare type once in the first 50.
  const std::array<std::uint64_t, tools::kPeerTypeCount> first_half{45, 1, 1, 1, 1, 1};
  EXPECT_EQ(types_of_first(mix, 50), first_half);
}

TEST(PeerAssignment, TypesAreInterleavedInEveryPrefix) {
  // Smooth weighted round robin: after n connections, each type has been picked within one of
  // its exact share n * weight / total (these mixes are checked exhaustively for two periods).
  for (const PeerMix& mix : {PeerMix{{90, 2, 2, 2, 2, 2}}, PeerMix{{5, 0, 3, 0, 1, 1}},
                             PeerMix{{1, 1, 1, 1, 1, 1}}, PeerMix{{0, 7, 0, 0, 0, 3}}}) {
    const double total = [&] {
      double sum = 0;
      for (auto weight : mix.weights) sum += weight;
      return sum;
    }();
    for (std::uint64_t n = 1; n <= 2 * static_cast<std::uint64_t>(total) && n <= 120; ++n) {
      const auto started = types_of_first(mix, n);
      for (std::size_t type = 0; type < tools::kPeerTypeCount; ++type) {
        const double share = static_cast<double>(n) * mix.weights[type] / total;
        EXPECT_LT(std::abs(static_cast<double>(started[type]) - share), 1.0)
            << "type " << to_string(static_cast<PeerType>(type)) << " after " << n;
        if (mix.weights[type] == 0) {
          EXPECT_EQ(started[type], 0u);
        }
      }
    }
  }
}

TEST(PeerAssignment, EveryWeightZeroIsRefused) {
  LoadOptions options;
  options.peers.weights.fill(0);
  EXPECT_THROW(tools::run_load(options), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// --peers parsing.

TEST(ParsePeerMix, AcceptsTheDocumentedMix) {
  auto parsed =
      tools::parse_peer_mix("cooperative=90,never-fin=2,flood=2,reset=2,slow-reader=2,half-close=2");
  ASSERT_TRUE(std::holds_alternative<PeerMix>(parsed)) << std::get<std::string>(parsed);
  const std::array<std::uint32_t, tools::kPeerTypeCount> expected{90, 2, 2, 2, 2, 2};
  EXPECT_EQ(std::get<PeerMix>(parsed).weights, expected);
}

TEST(ParsePeerMix, UnnamedTypesGetZeroAndSpacesAreAllowed) {
  auto parsed = tools::parse_peer_mix(" flood = 3 , reset=0,half-close=1");
  ASSERT_TRUE(std::holds_alternative<PeerMix>(parsed)) << std::get<std::string>(parsed);
  const std::array<std::uint32_t, tools::kPeerTypeCount> expected{0, 0, 3, 0, 0, 1};
  EXPECT_EQ(std::get<PeerMix>(parsed).weights, expected);
}

TEST(ParsePeerMix, EveryNameOfToStringParses) {
  for (std::size_t type = 0; type < tools::kPeerTypeCount; ++type) {
    const std::string text = std::string(to_string(static_cast<PeerType>(type))) + "=7";
    auto parsed = tools::parse_peer_mix(text);
    ASSERT_TRUE(std::holds_alternative<PeerMix>(parsed)) << text;
    EXPECT_EQ(std::get<PeerMix>(parsed).weights[type], 7u) << text;
  }
}

TEST(ParsePeerMix, ErrorsNameTheBadItem) {
  const std::pair<const char*, const char*> cases[] = {
      {"sloth=3", "unknown peer type 'sloth'"},
      {"cooperative=90,never_fin=2", "unknown peer type 'never_fin'"},
      {"cooperative", "'cooperative' is not name=weight"},
      {"flood=-1", "'flood=-1'"},
      {"flood=1.5", "'flood=1.5'"},
      {"flood=", "'flood='"},
      {"flood=x", "'flood=x'"},
      {"flood=4294967296", "'flood=4294967296'"},
      {"flood=1,flood=2", "peer type 'flood' is given twice"},
      {"flood=1,,reset=1", "empty item"},
      {"flood=1,", "empty item"},
      {"cooperative=0,flood=0", "at least one peer type needs a positive weight"},
      {"", "no peer types given"},
  };
  for (const auto& [text, message] : cases) {
    auto parsed = tools::parse_peer_mix(text);
    ASSERT_TRUE(std::holds_alternative<std::string>(parsed)) << "accepted '" << text << "'";
    EXPECT_NE(std::get<std::string>(parsed).find(message), std::string::npos)
        << "'" << text << "' -> " << std::get<std::string>(parsed);
  }
}

}  // namespace
}  // namespace ringlinger
