// What this proves: detail::Engine, driven through FakeIo by a seeded fuzzer (random API calls,
// completions of outstanding requests in any order with any plausible result, parts of a
// multishot drain, time jumps, expired timers, buffer retries, stale completions, and callbacks
// that call back into the engine), keeps every rule of the connection lifecycle after EVERY
// event:
//   - at most one request of each op per connection, and the engine's in_flight bits are exactly
//     what the fake holds for that slot; a free slot has nothing outstanding;
//   - nothing is submitted for a connection after its close, and the close is submitted only
//     when nothing else is outstanding on the fd (checked by FakeIo at each submission);
//   - SHUT_WR (either mode) is issued only after every queued byte was sent; sends go out in
//     order and the bytes in each send are the right ones, still valid at completion;
//   - the half-close: shutdown(2) on an open connection only after shutdown_write(), once every
//     queued byte was sent and no send is in flight, once per connection (a later close() goes
//     straight to draining, with no second SHUT_WR); sends after it fail with broken_pipe; a
//     failing half-close decides the outcome (peer_reset or send_error); Stats::write_shutdowns;
//   - flow control: no delivering receive is started while paused (one in flight from before
//     may deliver), resume_receive() starts one again; queued_bytes() is the model's unsent
//     count; on_send_drained exactly when a send completion leaves an open connection with
//     nothing queued;
//   - the state of each slot is the one the model predicts, and each state does what it
//     promises (a receive in flight while reading, a send while bytes are queued, ...);
//   - timers: no live connection has a deadline in the past, next_deadline() is the model's, a
//     timeout outcome only when its deadline had passed;
//   - on_receive only for an open connection and never after close()/abort(); on_closed exactly
//     once per adopted connection, only inside its close completion, never for an unknown id;
//   - the CloseReport: outcome as the model predicts it (clean only after a successful SHUT_WR
//     and an EOF with no error), first error, reset, bytes sent/received/discarded, times;
//   - Stats: state gauges sum to max_connections and match the slots; byte and outcome counters
//     match the model; stale_completions counts exactly the stale completions we injected, which
//     change nothing else.
// Every run ends by driving every connection to its close, gracefully (close_all + time, which
// must terminate by itself) or by abort_all, and requires each adopted connection reported once.
// 200 seeds x 8 variants (shutdown mode x on_timeout x with/without on_receive), 300 steps each.
// The driver, the model and the checks live in engine_model.hpp, shared with the libFuzzer
// target fuzz/engine_fuzzer.cpp; here they draw their decisions from a seeded PRNG.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "choices.hpp"
#include "core/engine.hpp"
#include "engine_model.hpp"
#include "fake_io.hpp"
#include "core/state_machine.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;
using namespace engine_model;

// ---------------------------------------------------------------------------------------------

// One seeded run of the shared driver, model and checker (engine_model.hpp); each violation is
// reported to gtest as it is found.
class SeededFuzzer {
 public:
  SeededFuzzer(std::uint64_t seed, const Variant& variant, bool wide = false)
      : choices_(seed),
        fuzzer_(choices_, variant,
                Options{"seed " + std::to_string(seed) + (wide ? " (wide)" : ""),
                        [](const std::string& text) { ADD_FAILURE() << text; }, wide}) {}

  std::vector<std::string> run(int steps) { return fuzzer_.run(steps); }
  const Coverage& coverage() const { return fuzzer_.coverage(); }

 private:
  fake::SeededChoices choices_;
  Fuzzer fuzzer_;
};

constexpr int kSeeds = 200;
constexpr int kSteps = 300;

Coverage& total_coverage() {
  static Coverage coverage;
  return coverage;
}

class EngineFuzz : public testing::TestWithParam<std::tuple<int, int>> {
 public:
  static void TearDownTestSuite() {
    const Coverage& c = total_coverage();
    std::printf(
        "[ fuzz     ] %llu steps, %llu completions, %llu stale injected (%llu on reused slots)\n",
        static_cast<unsigned long long>(c.steps), static_cast<unsigned long long>(c.completions),
        static_cast<unsigned long long>(c.stale_injected),
        static_cast<unsigned long long>(c.stale_on_reused_slot));
    std::printf("[ fuzz     ] outcomes:");
    for (std::size_t i = 0; i < kOutcomeCount; ++i) {
      std::printf(" %s=%llu", std::string(to_string(static_cast<Outcome>(i))).c_str(),
                  static_cast<unsigned long long>(c.outcomes[i]));
    }
    std::printf("\n");
    std::printf(
        "[ fuzz     ] half-closes %llu (failed %llu, then closed %llu, sends refused %llu), "
        "on_send_drained %llu, deliveries while paused %llu, resumes restarting %llu, "
        "multishot drain parts %llu, unreported closes %llu\n",
        static_cast<unsigned long long>(c.half_closes),
        static_cast<unsigned long long>(c.half_close_failures),
        static_cast<unsigned long long>(c.close_after_half_close),
        static_cast<unsigned long long>(c.sends_after_half_close),
        static_cast<unsigned long long>(c.send_drained_calls),
        static_cast<unsigned long long>(c.deliveries_while_paused),
        static_cast<unsigned long long>(c.resumes_restarting),
        static_cast<unsigned long long>(c.recv_parts),
        static_cast<unsigned long long>(c.unreported_closes));
  }
};

TEST_P(EngineFuzz, InvariantsHoldAfterEveryEvent) {
  const auto [seed, variant] = GetParam();
  SeededFuzzer fuzzer(static_cast<std::uint64_t>(seed), kVariants[variant]);
  EXPECT_TRUE(fuzzer.run(kSteps).empty());  // each violation was reported as it happened
  total_coverage().add(fuzzer.coverage());
}

INSTANTIATE_TEST_SUITE_P(Seeds, EngineFuzz,
                         testing::Combine(testing::Range(1, kSeeds + 1), testing::Range(0, 8)),
                         [](const testing::TestParamInfo<std::tuple<int, int>>& param_info) {
                           return "seed" + std::to_string(std::get<0>(param_info.param)) + "_" +
                                  variant_name(kVariants[std::get<1>(param_info.param)]);
                         });

// A longer campaign on demand: RINGLINGER_FUZZ_SEEDS=5000 RINGLINGER_FUZZ_STEPS=1000 (the seeds
// start at RINGLINGER_FUZZ_FIRST_SEED, default 1'000'000, so they differ from the ones above);
// RINGLINGER_FUZZ_WIDE=1 runs them in the libFuzzer target's world (Options::wide).
TEST(EngineFuzzCampaign, ManySeedsOnDemand) {
  const char* seeds_text = std::getenv("RINGLINGER_FUZZ_SEEDS");
  if (seeds_text == nullptr) GTEST_SKIP() << "set RINGLINGER_FUZZ_SEEDS to run";
  const char* steps_text = std::getenv("RINGLINGER_FUZZ_STEPS");
  const char* first_text = std::getenv("RINGLINGER_FUZZ_FIRST_SEED");
  const char* wide_text = std::getenv("RINGLINGER_FUZZ_WIDE");
  const bool wide = wide_text != nullptr && std::string_view(wide_text) == "1";
  const std::uint64_t seeds = std::strtoull(seeds_text, nullptr, 10);
  const int steps = steps_text != nullptr ? std::atoi(steps_text) : kSteps;
  const std::uint64_t first =
      first_text != nullptr ? std::strtoull(first_text, nullptr, 10) : 1'000'000;
  Coverage coverage;
  int failures = 0;
  for (std::uint64_t seed = first; seed < first + seeds && failures < 3; ++seed) {
    for (int variant = 0; variant < 8; ++variant) {
      SeededFuzzer fuzzer(seed, kVariants[variant], wide);
      if (!fuzzer.run(steps).empty()) ++failures;
      coverage.add(fuzzer.coverage());
    }
  }
  std::printf("[ campaign ] %llu steps, %llu completions, %llu parts of multishot drains (%llu "
              "after the cancel, %llu byte caps after parts)\n",
              static_cast<unsigned long long>(coverage.steps),
              static_cast<unsigned long long>(coverage.completions),
              static_cast<unsigned long long>(coverage.recv_parts),
              static_cast<unsigned long long>(coverage.recv_parts_after_cancel),
              static_cast<unsigned long long>(coverage.byte_caps_after_parts));
}

// The libFuzzer target's world (Options::wide: every result class of every op, failing closes,
// TCP_INFO answers, one-slot tables) under the seeded source too, so that a plain g++ build
// checks the model's extra rules and the engine against them.
TEST(EngineFuzzWide, InvariantsHoldWithEveryResultClass) {
  for (int seed = 1; seed <= 100; ++seed) {
    for (int variant = 0; variant < 8; ++variant) {
      SeededFuzzer fuzzer(static_cast<std::uint64_t>(seed), kVariants[variant], /*wide=*/true);
      EXPECT_TRUE(fuzzer.run(kSteps).empty());
    }
  }
}

// The fuzzer reaches what it claims to check: every outcome, the reentrant paths, stale
// completions on reused slots, an fd number reused before the old close's completion, partial
// sends, buffer waits, exact deadline hits, graceful finishes, and the embedding calls:
// half-closes (succeeding, failing, then closed), sends refused after them, on_send_drained,
// deliveries of a receive in flight when paused, resumes that restart delivery; progress timers
// re-armed from an acknowledgement, abort_after_send() and its wait for the acknowledgement;
// parts of a multishot drain, also after its cancel, and drains with parts ended at the byte cap.
TEST(EngineFuzzCoverage, EveryOutcomeAndEveryTrickyPathIsExercised) {
  Coverage coverage;
  for (int seed = 1000; seed < 1040; ++seed) {
    for (int variant = 0; variant < 8; ++variant) {
      SeededFuzzer fuzzer(static_cast<std::uint64_t>(seed), kVariants[variant]);
      EXPECT_TRUE(fuzzer.run(kSteps).empty());
      coverage.add(fuzzer.coverage());
    }
  }
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    EXPECT_GT(coverage.outcomes[i], 0u)
        << "outcome never reached: " << to_string(static_cast<Outcome>(i));
  }
  EXPECT_GT(coverage.stale_on_reused_slot, 0u);
  EXPECT_GT(coverage.fd_reused_before_close_completion, 0u);
  EXPECT_GT(coverage.reentrant_close, 0u);
  EXPECT_GT(coverage.sends_and_closes, 0u);
  EXPECT_GT(coverage.unreported_closes, 0u);
  EXPECT_GT(coverage.reentrant_send, 0u);
  EXPECT_GT(coverage.reentrant_abort, 0u);
  EXPECT_GT(coverage.reentrant_adopt, 0u);
  EXPECT_GT(coverage.reentrant_all, 0u);
  EXPECT_GT(coverage.buffer_waits, 0u);
  EXPECT_GT(coverage.partial_sends, 0u);
  EXPECT_GT(coverage.adopt_refused_full, 0u);
  EXPECT_GT(coverage.exact_deadline_hits, 0u);
  EXPECT_GT(coverage.graceful_finishes, 0u);
  EXPECT_GT(coverage.half_closes, 0u);
  EXPECT_GT(coverage.half_close_failures, 0u);
  EXPECT_GT(coverage.close_after_half_close, 0u);
  EXPECT_GT(coverage.sends_after_half_close, 0u);
  EXPECT_GT(coverage.send_drained_calls, 0u);
  EXPECT_GT(coverage.deliveries_while_paused, 0u);
  EXPECT_GT(coverage.resumes_restarting, 0u);
  EXPECT_GT(coverage.reentrant_flow, 0u);
  EXPECT_GT(coverage.progress_extensions, 0u);
  EXPECT_GT(coverage.progress_rearms, 0u);
  EXPECT_GT(coverage.resets_after_send, 0u);
  EXPECT_GT(coverage.ack_waits, 0u);
  EXPECT_GT(coverage.recv_parts, 0u);
  EXPECT_GT(coverage.recv_parts_after_cancel, 0u);
  EXPECT_GT(coverage.byte_caps_after_parts, 0u);
  std::printf("[ coverage ] %llu progress extensions, %llu re-arms after input or a send, "
              "%llu abort_after_send (%llu waited), %llu multishot drain parts (%llu after "
              "the cancel, %llu byte caps after parts)\n",
              static_cast<unsigned long long>(coverage.progress_extensions),
              static_cast<unsigned long long>(coverage.progress_rearms),
              static_cast<unsigned long long>(coverage.resets_after_send),
              static_cast<unsigned long long>(coverage.ack_waits),
              static_cast<unsigned long long>(coverage.recv_parts),
              static_cast<unsigned long long>(coverage.recv_parts_after_cancel),
              static_cast<unsigned long long>(coverage.byte_caps_after_parts));
}

// ---------------------------------------------------------------------------------------------
// Directed scenarios: single paths the fuzzer reaches at random, pinned down step by step.

class Harness {
 public:
  explicit Harness(Config config, bool with_on_receive = false) : config_(config) {
    if (with_on_receive) {
      callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
        received.emplace_back(id, data.size());
        if (on_receive) on_receive(id, data);
      };
    }
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      closed.emplace_back(id, report);
      if (on_closed) on_closed(id, report);
    };
    engine = std::make_unique<Engine>(config_, io, callbacks, stats);
  }

  // The index of the outstanding request of `op` for `id`; -1 if none.
  int find(Op op, ConnectionId id) const {
    const auto& outstanding = io.outstanding();
    for (std::size_t i = 0; i < outstanding.size(); ++i) {
      const OpTag tag = outstanding[i].tag;
      if (tag.op == op && tag.slot == id.slot && tag.generation == id.generation)
        return static_cast<int>(i);
    }
    return -1;
  }
  bool outstanding(Op op, ConnectionId id) const { return find(op, id) >= 0; }

  // Completes the outstanding `op` of `id` with `result` (a delivering recv gets that many bytes).
  void complete(Op op, ConnectionId id, std::int32_t result) {
    const int index = find(op, id);
    ASSERT_GE(index, 0) << "no " << fake::op_name(op) << " outstanding for " << id_text(id);
    const Request request = io.take(static_cast<std::size_t>(index));
    Completion completion{request.tag, result, {}};
    if (op == Op::recv && request.mode == RecvMode::deliver && result > 0) {
      buffer.assign(static_cast<std::size_t>(result), std::byte{'d'});
      completion.data = buffer;
    }
    engine->on_completion(completion, now);
  }

  // A part of the outstanding discarding recv of `id` (a multishot drain): `bytes` with
  // Completion::more, the request staying outstanding (FakeIo::take_part()).
  void part(ConnectionId id, std::uint32_t bytes) {
    const int index = find(Op::recv, id);
    ASSERT_GE(index, 0) << "no recv outstanding for " << id_text(id);
    io.take_part(static_cast<std::size_t>(index), bytes);
    engine->on_completion(
        Completion{OpTag{Op::recv, id.generation, id.slot}, static_cast<std::int32_t>(bytes), {},
                   /*more=*/true},
        now);
  }

  // The outstanding request of `op` for `id`, which must exist.
  const Request& request(Op op, ConnectionId id) const {
    const int index = find(op, id);
    EXPECT_GE(index, 0) << "no " << fake::op_name(op) << " outstanding for " << id_text(id);
    return io.outstanding().at(static_cast<std::size_t>(index));
  }

  State state(ConnectionId id) const {
    const Connection* connection = engine->find(id);
    return connection == nullptr ? State::free : connection->state;
  }

  Config config_;
  FakeIo io;
  Stats stats;
  Callbacks callbacks;
  std::unique_ptr<Engine> engine;
  TimePoint now = kStart;
  std::vector<std::byte> buffer;
  std::vector<std::pair<ConnectionId, std::size_t>> received;
  std::vector<std::pair<ConnectionId, CloseReport>> closed;
  std::function<void(ConnectionId, std::span<const std::byte>)> on_receive;
  std::function<void(ConnectionId, const CloseReport&)> on_closed;
};

Config small_config(ShutdownMode mode = ShutdownMode::syscall, std::uint32_t max_connections = 4) {
  Config config;
  config.shutdown_mode = mode;
  config.max_connections = max_connections;
  return config;
}

TEST(EngineScenario, GracefulCloseIsCleanOnlyAfterFlushShutdownAndEof) {
  for (ShutdownMode mode : {ShutdownMode::syscall, ShutdownMode::ring}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    Harness h(small_config(mode));
    const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
    ASSERT_FALSE(h.engine->send(id, "hello", h.now));
    ASSERT_FALSE(h.engine->close(id, h.now));
    EXPECT_EQ(h.state(id), State::flushing);
    EXPECT_TRUE(h.outstanding(Op::send, id));
    EXPECT_TRUE(h.outstanding(Op::recv, id));  // discarding while the queue drains
    EXPECT_EQ(h.io.shutdown_calls(), 0u) << "no FIN before the data";
    EXPECT_FALSE(h.outstanding(Op::shutdown, id));

    h.complete(Op::send, id, 2);  // short send: the rest goes again
    EXPECT_EQ(h.state(id), State::flushing);
    EXPECT_EQ(h.io.shutdown_calls(), 0u);
    h.complete(Op::send, id, 3);
    if (mode == ShutdownMode::ring) {
      EXPECT_EQ(h.state(id), State::shutting_down);
      h.complete(Op::shutdown, id, 0);
    } else {
      EXPECT_EQ(h.io.shutdown_calls(), 1u);
    }
    EXPECT_EQ(h.state(id), State::draining);
    h.complete(Op::recv, id, 0);  // the peer's EOF
    EXPECT_EQ(h.state(id), State::closing);
    EXPECT_TRUE(h.closed.empty()) << "reported before the close completed";
    h.now += 3ms;
    h.complete(Op::close, id, 0);
    ASSERT_EQ(h.closed.size(), 1u);
    const CloseReport& report = h.closed[0].second;
    EXPECT_EQ(report.outcome, Outcome::clean);
    EXPECT_EQ(report.bytes_sent, 5u);
    EXPECT_FALSE(report.reset_sent);
    EXPECT_EQ(report.teardown_time, 3ms);
    h.engine->count_states(h.stats);
    EXPECT_EQ(h.stats.in_state(State::free), 4u);
    EXPECT_TRUE(h.io.violations().empty());
  }
}

TEST(EngineScenario, EofWithoutSuccessfulShutdownIsNotClean) {
  Harness h(small_config(ShutdownMode::ring));
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::recv, id, 0);  // EOF while our shutdown is in flight
  h.complete(Op::shutdown, id, -ENOTCONN);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::peer_reset);
  EXPECT_EQ(h.closed[0].second.first_error, ENOTCONN);
}

TEST(EngineScenario, StaleCompletionForAReusedSlotIsIgnored) {
  Harness h(small_config(ShutdownMode::syscall, 1));  // one slot: reuse is certain
  const ConnectionId old_id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(old_id, "abc", h.now));
  ASSERT_FALSE(h.engine->abort(old_id, h.now));
  EXPECT_EQ(h.state(old_id), State::cancelling);
  h.complete(Op::send, old_id, -ECANCELED);
  h.complete(Op::cancel, old_id, 1);
  h.complete(Op::close, old_id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.closed[0].second.reset_sent);

  const ConnectionId new_id = h.engine->adopt(h.io.open_fd(), h.now);
  EXPECT_EQ(new_id.slot, old_id.slot);
  EXPECT_EQ(new_id.generation, old_id.generation + 1);
  ASSERT_FALSE(h.engine->send(new_id, "xyz", h.now));
  ASSERT_TRUE(h.outstanding(Op::send, new_id));

  // The old connection's send "completes" again, as a late CQE would.
  const auto before = snapshot(*h.engine);
  h.engine->on_completion(Completion{OpTag{Op::send, old_id.generation, old_id.slot}, 3, {}},
                          h.now);
  EXPECT_EQ(h.stats.stale_completions, 1u);
  EXPECT_EQ(snapshot(*h.engine), before);
  EXPECT_TRUE(h.outstanding(Op::send, new_id));
  EXPECT_EQ(h.engine->find(new_id)->bytes_sent, 0u);
  EXPECT_EQ(h.engine->send(old_id, "x", h.now),
            std::make_error_code(std::errc::bad_file_descriptor));

  h.complete(Op::send, new_id, 3);  // the real one still works
  EXPECT_EQ(h.engine->find(new_id)->bytes_sent, 3u);
}

TEST(EngineScenario, OnReceiveMaySendAndCloseReentrantly) {
  Harness h(small_config(), /*with_on_receive=*/true);
  h.on_receive = [&h](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    EXPECT_FALSE(h.engine->send(id, "reply", h.now));
    EXPECT_FALSE(h.engine->close(id, h.now));
    EXPECT_EQ(h.engine->send(id, "too late", h.now), std::make_error_code(std::errc::broken_pipe));
  };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_TRUE(h.outstanding(Op::recv, id));
  EXPECT_EQ(h.io.outstanding()[static_cast<std::size_t>(h.find(Op::recv, id))].mode,
            RecvMode::deliver);
  h.complete(Op::recv, id, 10);
  ASSERT_EQ(h.received.size(), 1u);
  EXPECT_EQ(h.state(id), State::flushing);
  ASSERT_TRUE(h.outstanding(Op::recv, id));
  EXPECT_EQ(h.io.outstanding()[static_cast<std::size_t>(h.find(Op::recv, id))].mode,
            RecvMode::discard);
  h.complete(Op::recv, id, 7);  // discarded, not delivered
  EXPECT_EQ(h.received.size(), 1u);
  h.complete(Op::send, id, 5);
  EXPECT_EQ(h.state(id), State::draining);
  h.complete(Op::recv, id, 0);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_EQ(report.outcome, Outcome::clean);
  EXPECT_EQ(report.bytes_received, 10u);
  EXPECT_EQ(report.bytes_discarded, 7u);
  EXPECT_EQ(report.bytes_sent, 5u);
}

TEST(EngineScenario, OnReceiveMayAbortItsOwnConnection) {
  Harness h(small_config(), /*with_on_receive=*/true);
  h.on_receive = [&h](ConnectionId id, std::span<const std::byte>) {
    (void)h.engine->abort(id, h.now);
  };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  h.complete(Op::recv, id, 1);
  EXPECT_EQ(h.state(id), State::closing);  // nothing else was in flight
  EXPECT_FALSE(h.outstanding(Op::recv, id));
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.io.violations().empty());
}

TEST(EngineScenario, OnClosedMayAdoptIntoTheSlotJustFreed) {
  Harness h(small_config(ShutdownMode::syscall, 1), /*with_on_receive=*/true);
  ConnectionId successor;
  h.on_closed = [&](ConnectionId, const CloseReport&) {
    successor = h.engine->adopt(h.io.open_fd(), h.now);
  };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_TRUE(id.valid());
  EXPECT_FALSE(h.engine->adopt(h.io.open_fd(), h.now).valid()) << "the table is full";
  (void)h.engine->abort(id, h.now);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_TRUE(successor.valid());
  EXPECT_EQ(successor.slot, id.slot);
  EXPECT_NE(successor.generation, id.generation);
  EXPECT_EQ(h.state(successor), State::open);
  EXPECT_TRUE(h.outstanding(Op::recv, successor));
  h.engine->count_states(h.stats);
  EXPECT_EQ(h.stats.in_state(State::open), 1u);
  EXPECT_EQ(h.stats.in_state(State::free), 0u);
}

// outcome.hpp, for a connection ended without close() (here: abort at 10 ms, fd closed 5 ms
// later): close_latency() is 0 and close_requested is false; open_time is "adopt -> outcome
// decided" (10 ms) and teardown_time "outcome decided -> fd closed" (5 ms): the phases still add
// up to the whole lifetime.
TEST(EngineScenario, CloseReportTimesWithoutClose) {
  Harness h(small_config());
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abc", h.now));
  h.now += 10ms;
  (void)h.engine->abort(id, h.now);  // close() is never called
  h.now += 5ms;
  h.complete(Op::send, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_FALSE(report.close_requested);
  EXPECT_EQ(report.close_latency(), 0ns) << "documented: 0 when close() was never requested";
  EXPECT_EQ(report.teardown_time, 5ms) << "documented: outcome decided -> fd closed";
  EXPECT_EQ(report.open_time, 10ms) << "documented: adopt -> outcome decided without close()";
  EXPECT_EQ(report.open_time + report.flush_time + report.drain_time + report.teardown_time, 15ms)
      << "documented: the phases add up to the whole lifetime";
}

// With close(): the phases add up to the close latency and, with open_time, to the lifetime.
TEST(EngineScenario, CloseReportTimesWithClose) {
  Harness h(small_config());
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abc", h.now));
  h.now += 10ms;
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.now += 1ms;
  h.complete(Op::send, id, 3);  // flushed: shutdown(2) now
  h.now += 2ms;
  h.complete(Op::recv, id, 0);  // EOF: outcome decided
  h.now += 4ms;
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_TRUE(report.close_requested);
  EXPECT_EQ(report.open_time, 10ms);
  EXPECT_EQ(report.flush_time, 1ms);
  EXPECT_EQ(report.drain_time, 2ms);
  EXPECT_EQ(report.teardown_time, 4ms);
  EXPECT_EQ(report.close_latency(), 7ms);
}

TEST(EngineDeathTest, ACompletionForAnOpNotInFlightAborts) {
  EXPECT_DEATH(
      {
        Harness h(small_config());
        const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);  // no on_receive: idle
        h.engine->on_completion(Completion{OpTag{Op::send, id.generation, id.slot}, 1, {}}, h.now);
      },
      "assertion failed");
}

// ---------------------------------------------------------------------------------------------
// FakeIo's own checks fire: the rules it enforces for the fuzzer are not vacuous.

TEST(FakeIoChecks, FlagsACloseWithARequestInFlight) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_close({Op::close, 0, 0}, fd);
  ASSERT_FALSE(io.violations().empty());
  EXPECT_NE(io.violations()[0].find("other requests outstanding"), std::string::npos)
      << io.violations()[0];
}

TEST(FakeIoChecks, FlagsASecondRequestOfTheSameOp) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  ASSERT_EQ(io.violations().size(), 1u);
  EXPECT_NE(io.violations()[0].find("already outstanding"), std::string::npos);
}

TEST(FakeIoChecks, FlagsARequestAfterTheClose) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_close({Op::close, 0, 0}, fd);
  EXPECT_TRUE(io.violations().empty());
  io.submit_cancel({Op::cancel, 0, 0}, fd);
  EXPECT_FALSE(io.violations().empty());
}

TEST(FakeIoChecks, FlagsMixedGenerationsAndSyncCallsOnClosedFds) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_send({Op::send, 1, 0}, fd, std::as_bytes(std::span("x", 1)), false);
  EXPECT_EQ(io.violations().size(), 1u);
  io.clear_violations();
  const int other = io.open_fd();
  io.submit_close({Op::close, 0, 1}, other);
  (void)io.shutdown_now(other);
  io.set_reset_on_close(other);
  EXPECT_EQ(io.violations().size(), 2u);
}

TEST(FakeIoChecks, ReusesTheLowestFdOnlyOnceItsCloseRan) {
  FakeIo io;
  const int a = io.open_fd();
  const int b = io.open_fd();
  EXPECT_EQ(b, a + 1);
  io.submit_close({Op::close, 0, 0}, a);
  EXPECT_EQ(io.open_fd(), b + 1) << "reused while the close had not run";
  io.release_fd(0);  // the kernel runs the close; its completion is still due
  EXPECT_EQ(io.open_fd(), a);
  EXPECT_EQ(io.outstanding().size(), 1u);
  (void)io.take(0);
  EXPECT_TRUE(io.violations().empty());
}

}  // namespace
}  // namespace ringlinger::detail

namespace ringlinger::detail {
namespace {

// The progress rule (engine.cpp, expire_timers() and acknowledged_since()): the send and drain
// idle timers end a connection only after a whole period without progress. Acknowledgements are
// progress, and are only seen by asking the kernel when a timer expires; FakeIo answers what each
// test says. A timer re-armed from a past acknowledgement fires at the first lane deadline (a
// multiple of timeout / TimerQueue::kLanes from now, timer_queue.hpp) at or after that moment +
// timeout: lane_deadline() (engine_model/basics.hpp). These scenarios use 100 ms timeouts.
constexpr nanoseconds kTimeout = 100ms;

PeerAcks acks(std::uint64_t bytes_acked, TimePoint last_ack_by, bool all_acknowledged = false) {
  PeerAcks acks;
  acks.known = true;
  acks.bytes_acked = bytes_acked;
  acks.last_ack_by = last_ack_by;
  acks.all_acknowledged = all_acknowledged;
  return acks;
}

// A connection closed after an 8-byte response, draining from `h.now`.
ConnectionId draining_connection(Harness& h) {
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  EXPECT_FALSE(h.engine->send(id, "response", h.now));
  EXPECT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::send, id, 8);  // flushed; shutdown(2); draining with a recv outstanding
  EXPECT_EQ(h.state(id), State::draining);
  return id;
}

void finish_cancelled(Harness& h, ConnectionId id) {
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
}

// The draining connection's next deadline is `deadline`, and it ends it: it still drains just
// before, and is ended at it.
void expect_drain_ends_at(Harness& h, ConnectionId id, TimePoint deadline) {
  EXPECT_EQ(h.engine->next_deadline(), deadline);
  h.now = deadline - 1ns;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::draining);
  h.now = deadline;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::cancelling);
}

// The draining connection's timer was re-armed at h.now to the first lane deadline at or after
// `period_end` (less than a tick, timeout / 64, later); nothing more happens, so it still drains
// just before that deadline and is ended at it.
void expect_restarted_and_ended(Harness& h, ConnectionId id, TimePoint period_end,
                                nanoseconds timeout = kTimeout) {
  const TimePoint restarted = lane_deadline(h.now, period_end, timeout);
  EXPECT_LT(restarted - period_end, timeout / TimerQueue::kLanes);
  expect_drain_ends_at(h, id, restarted);
}

// The case the issue found: the peer acknowledged the rest of our data during the period, so at
// the check nothing is left unacknowledged. A snapshot of the queue sees nothing move; the
// counter does, and the period restarts at that acknowledgement.
TEST(EngineScenario, ProgressDuringAPeriodThatEndsWithNothingUnacknowledgedIsNotIdleness) {
  Config config = small_config();
  config.drain_idle_timeout_ms = 100;
  config.on_timeout = OnTimeout::reset;
  Harness h(config);
  const TimePoint start = h.now;
  PeerAcks answer = acks(5'000, start + 90ms, /*all_acknowledged=*/true);
  h.io.peer_acks_result = [&](int, TimePoint) { return answer; };
  const ConnectionId id = draining_connection(h);
  EXPECT_EQ(h.io.peer_acks_calls(), 0u) << "TCP_INFO asked before any timer expired";

  h.now = start + 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::draining) << "a peer that acknowledged 10 ms ago was called idle";
  EXPECT_EQ(h.stats.drain_idle_extensions, 1u);
  // 100 ms after the last acknowledgement, the counter has not moved.
  expect_restarted_and_ended(h, id, start + 190ms);
  EXPECT_EQ(h.io.peer_acks_calls(), 2u);
  finish_cancelled(h, id);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_idle_timeout);
  EXPECT_TRUE(h.closed[0].second.reset_sent);
}

// Never asked before, an acknowledgement that came before the period began is not progress;
// nor is anything when the kernel cannot say (not a TCP socket): the first expiry ends it.
TEST(EngineScenario, NoAcknowledgementInThePeriodEndsItAtTheFirstExpiry) {
  for (const bool known : {true, false}) {
    SCOPED_TRACE(known ? "acknowledged before the period" : "unknown");
    Config config = small_config();
    config.drain_idle_timeout_ms = 100;
    Harness h(config);
    PeerAcks answer = acks(5'000, h.now - 1ms, true);
    answer.known = known;
    h.io.peer_acks_result = [&](int, TimePoint) { return answer; };
    const ConnectionId id = draining_connection(h);
    h.now += 100ms;
    h.engine->expire_timers(h.now);
    EXPECT_EQ(h.state(id), State::cancelling);
    EXPECT_EQ(h.stats.drain_idle_extensions, 0u);
  }
}

// Input restarts the period, without asking the kernel. Lazily: the input only notes its time,
// the timer keeps its deadline, and when it expires it is armed again to the first lane deadline
// at or after the input + the timeout. With `timeout_after_input_ms` set by reconfigure() in
// between, the running period keeps its deadline and the one the input starts takes the new
// timeout (it starts at the expiry, as any timer armed after reconfigure() does).
void expect_input_restarts_the_period(std::uint32_t timeout_after_input_ms) {
  Config config = small_config();
  config.drain_idle_timeout_ms = 100;
  Harness h(config);
  const TimePoint start = h.now;
  const ConnectionId id = draining_connection(h);
  h.now = start + 60ms;
  h.complete(Op::recv, id, 500);  // discarded: progress
  config.drain_idle_timeout_ms = timeout_after_input_ms;
  h.engine->reconfigure(config);
  EXPECT_EQ(h.engine->next_deadline(), start + 100ms) << "the armed timer moved";
  h.now = start + 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::draining);
  EXPECT_EQ(h.io.peer_acks_calls(), 0u);
  // Then no input; FakeIo's default answer (acknowledgements unknown): idle.
  const nanoseconds timeout = milliseconds(timeout_after_input_ms);
  expect_restarted_and_ended(h, id, start + 60ms + timeout, timeout);
  EXPECT_EQ(h.io.peer_acks_calls(), 1u);
}

TEST(EngineScenario, InputRestartsTheDrainIdlePeriodWithoutAskingTheKernel) {
  expect_input_restarts_the_period(100);
}

TEST(EngineScenario, APeriodRestartedByInputAfterAReconfigureTakesTheNewTimeout) {
  expect_input_restarts_the_period(500);
}

// The send timer follows the same rule: a slow reader's acknowledgements keep restarting it from
// the last one; once the counter stops, it ends a period after the last acknowledgement.
TEST(EngineScenario, SendTimeoutRestartsAtEachAcknowledgementAndEndsAPeriodAfterTheLast) {
  Config config = small_config();
  config.send_timeout_ms = 100;
  Harness h(config);
  const TimePoint start = h.now;
  PeerAcks answer = acks(20'000, start + 60ms);
  h.io.peer_acks_result = [&](int, TimePoint) { return answer; };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, std::string(100'000, 'r'), h.now));
  h.complete(Op::send, id, 40'000);  // short: the socket is full; no system call for it
  EXPECT_EQ(h.io.peer_acks_calls(), 0u);

  h.now = start + 100ms;
  h.engine->expire_timers(h.now);  // acknowledged 40 ms ago
  EXPECT_EQ(h.state(id), State::open) << "a slow reader was cut off at the send timeout";
  const TimePoint first = lane_deadline(h.now, start + 160ms, kTimeout);
  EXPECT_EQ(h.engine->next_deadline(), first);

  answer = acks(30'000, first - 10ms);  // the counter moved again
  h.now = first;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::open);
  EXPECT_EQ(h.stats.send_timeout_extensions, 2u);
  const TimePoint second = lane_deadline(h.now, first + 90ms, kTimeout);
  EXPECT_EQ(h.engine->next_deadline(), second);

  answer.last_ack_by = second;  // a later acknowledgement that moved nothing (a window probe)
  h.now = second;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::cancelling) << "the counter stopped: it stopped reading";
  EXPECT_EQ(h.stats.send_timeout_extensions, 2u);
  h.complete(Op::send, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::send_timeout);
  EXPECT_FALSE(h.closed[0].second.reset_sent);  // on_timeout = close
}

// abort_after_send(): flush, no FIN, wait until the kernel says the peer acknowledged
// everything (asking every kAckWaitInterval), then reset.
TEST(EngineScenario, AbortAfterSendResetsOnlyOnceEverythingIsAcknowledged) {
  Harness h(small_config());
  PeerAcks answer = acks(3, h.now, /*all_acknowledged=*/false);
  h.io.peer_acks_result = [&](int, TimePoint) { return answer; };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abc", h.now));
  ASSERT_FALSE(h.engine->abort_after_send(id, h.now));
  EXPECT_EQ(h.state(id), State::flushing);
  EXPECT_EQ(h.engine->send(id, "more", h.now), std::make_error_code(std::errc::broken_pipe));
  h.complete(Op::send, id, 3);  // everything handed over; not yet acknowledged
  EXPECT_EQ(h.state(id), State::flushing);
  EXPECT_EQ(h.io.peer_acks_calls(), 1u);
  EXPECT_TRUE(h.outstanding(Op::recv, id));  // input is still read and discarded
  EXPECT_EQ(h.engine->next_deadline(), h.now + kAckWaitInterval);
  h.now += kAckWaitInterval;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::flushing);
  answer.all_acknowledged = true;
  h.now += kAckWaitInterval;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::cancelling);
  finish_cancelled(h, id);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.closed[0].second.reset_sent);
  EXPECT_EQ(h.closed[0].second.bytes_sent, 3u);
  EXPECT_EQ(h.io.shutdown_calls(), 0u) << "a FIN would make the truncation look complete";
}

// A peer that stops acknowledging while abort_after_send() waits: the send timeout ends the
// wait, with a reset even when timeouts close with FIN.
TEST(EngineScenario, AbortAfterSendEndsAtTheSendTimeoutWithAResetWhenAcknowledgementsStop) {
  Config config = small_config();
  config.send_timeout_ms = 100;
  config.on_timeout = OnTimeout::close;
  Harness h(config);
  h.io.peer_acks_result = [&](int, TimePoint) { return acks(7, kStart - 1s); };
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->abort_after_send(id, h.now));  // nothing queued: the wait starts now
  const TimePoint start = h.now;
  while (h.state(id) == State::flushing && h.now < start + 1s) {
    h.now = *h.engine->next_deadline();
    h.engine->expire_timers(h.now);
  }
  EXPECT_EQ(h.state(id), State::cancelling);
  EXPECT_EQ(h.now, start + 100ms);
  finish_cancelled(h, id);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::send_timeout);
  EXPECT_TRUE(h.closed[0].second.reset_sent);
}

// Once our FIN may be out, a reset comes too late to say the stream was cut: refused.
TEST(EngineScenario, AbortAfterSendIsRefusedOnceTheFinMayBeOut) {
  Harness h(small_config());
  const ConnectionId half = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->shutdown_write(half, h.now));  // nothing queued: SHUT_WR at once
  EXPECT_EQ(h.engine->abort_after_send(half, h.now), std::make_error_code(std::errc::broken_pipe));
  const ConnectionId drained = draining_connection(h);
  EXPECT_EQ(h.engine->abort_after_send(drained, h.now),
            std::make_error_code(std::errc::broken_pipe));
  EXPECT_EQ(h.engine->abort_after_send(ConnectionId{}, h.now),
            std::make_error_code(std::errc::bad_file_descriptor));
  EXPECT_EQ(h.io.peer_acks_calls(), 0u);
}

}  // namespace
}  // namespace ringlinger::detail

// ---------------------------------------------------------------------------------------------
// Issue 15: the close-latency histogram, bytes_unsent, reconfigure().

namespace ringlinger::detail {
namespace {

// The bucket of a latency is the first bound >= it; past the last bound, the last bucket.
TEST(CloseLatencyHistogram, BucketsAreUpperBoundsInclusive) {
  EXPECT_EQ(close_latency_bucket(0ns), 0u);
  EXPECT_EQ(close_latency_bucket(1ms), 0u);
  EXPECT_EQ(close_latency_bucket(1ms + 1ns), 1u);
  EXPECT_EQ(close_latency_bucket(2500us), 1u);
  EXPECT_EQ(close_latency_bucket(2500us + 1ns), 2u);
  EXPECT_EQ(close_latency_bucket(30s), kCloseLatencyBuckets - 2);
  EXPECT_EQ(close_latency_bucket(30s + 1ns), kCloseLatencyBuckets - 1);
  EXPECT_EQ(close_latency_bucket(std::chrono::hours(24)), kCloseLatencyBuckets - 1);
  for (std::size_t i = 1; i < kCloseLatencyBounds.size(); ++i) {
    EXPECT_LT(kCloseLatencyBounds[i - 1], kCloseLatencyBounds[i]) << "bounds must ascend";
  }
}

// The bucket taken from the bit width agrees with a search of the bounds, at each bound, each
// power of two, and one nanosecond either side of them.
TEST(CloseLatencyHistogram, BucketFromBitWidthMatchesSearch) {
  auto searched = [](std::chrono::nanoseconds latency) {
    return static_cast<std::size_t>(
        std::lower_bound(kCloseLatencyBounds.begin(), kCloseLatencyBounds.end(), latency) -
        kCloseLatencyBounds.begin());
  };
  std::vector<std::chrono::nanoseconds> latencies(kCloseLatencyBounds.begin(),
                                                  kCloseLatencyBounds.end());
  for (int bit = 0; bit < 63; ++bit) latencies.emplace_back(std::int64_t{1} << bit);
  for (const std::chrono::nanoseconds latency : latencies) {
    for (const auto near : {latency - 1ns, latency, latency + 1ns}) {
      if (near < 0ns) continue;
      EXPECT_EQ(close_latency_bucket(near), searched(near)) << near.count() << " ns";
    }
  }
  EXPECT_EQ(close_latency_bucket(std::chrono::nanoseconds::max()), kCloseLatencyBuckets - 1);
  EXPECT_EQ(close_latency_bucket(-1ns), 0u);
}

// A connection closed after `latency` (close() -> fd closed), clean.
void close_after(Harness& h, std::chrono::nanoseconds latency) {
  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->close(id, h.now));  // nothing queued: shutdown(2) at once, draining
  h.complete(Op::recv, id, 0);
  h.now += latency;
  h.complete(Op::close, id, 0);
}

// Counted once per requested close, in its own bucket (not cumulatively), with the sum; a
// connection ended without close() is not counted.
TEST(CloseLatencyHistogram, CountsRequestedClosesWhenReported) {
  Harness h(small_config());
  close_after(h, 1ms);          // bucket 0 (inclusive bound)
  close_after(h, 3ms);          // bucket 2 (2.5 ms < 3 ms <= 5 ms)
  close_after(h, 3ms);
  close_after(h, 40s);          // above the last bound
  const ConnectionId aborted = h.engine->adopt(h.io.open_fd(), h.now);
  (void)h.engine->abort(aborted, h.now);  // nothing in flight (no on_receive): closing at once
  h.now += 7ms;
  h.complete(Op::close, aborted, 0);
  ASSERT_EQ(h.closed.size(), 5u);
  std::array<std::uint64_t, kCloseLatencyBuckets> expected{};
  expected[0] = 1;
  expected[2] = 2;
  expected[kCloseLatencyBuckets - 1] = 1;
  EXPECT_EQ(h.stats.close_latency_counts, expected);
  EXPECT_EQ(h.stats.close_latency_sum_ns,
            static_cast<std::uint64_t>(std::chrono::nanoseconds(1ms + 3ms + 3ms + 40s).count()));
  Stats sum = h.stats;
  sum += h.stats;
  EXPECT_EQ(sum.close_latency_counts[2], 4u);
  EXPECT_EQ(sum.close_latency_sum_ns, 2 * h.stats.close_latency_sum_ns);
}

// bytes_unsent: what was queued and never handed to the kernel (partial sends count as sent);
// 0 after a clean close.
TEST(EngineScenario, BytesUnsentIsWhatWasQueuedAndNeverSent) {
  Harness h(small_config());
  close_after(h, 1ms);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.bytes_unsent, 0u);

  const ConnectionId id = h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abcdef", h.now));
  ASSERT_FALSE(h.engine->send_file(id, 99, 0, 1000, h.now));
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::send, id, 2);  // "ab" sent, "cdef" and the file range left
  (void)h.engine->abort(id, h.now);
  h.complete(Op::send, id, -ECANCELED);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 2);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 2u);
  EXPECT_EQ(h.closed[1].second.bytes_sent, 2u);
  EXPECT_EQ(h.closed[1].second.bytes_unsent, 4u + 1000u);
}

// A shorter, then a longer drain idle timeout: connections that start draining after each
// change get it; the one draining before keeps its deadline.
TEST(EngineScenario, ReconfiguredDrainIdleTimeoutAppliesToTimersArmedAfterIt) {
  Config config = small_config();
  config.drain_idle_timeout_ms = 100;
  Harness h(config);
  const TimePoint start = h.now;
  const ConnectionId before = draining_connection(h);  // deadline start + 100 ms
  config.drain_idle_timeout_ms = 30;
  h.engine->reconfigure(config);
  h.now = start + 10ms;
  const ConnectionId shorter = draining_connection(h);  // start + 40 ms
  config.drain_idle_timeout_ms = 500;
  h.engine->reconfigure(config);
  h.now = start + 20ms;
  const ConnectionId longer = draining_connection(h);  // start + 520 ms

  EXPECT_EQ(h.engine->next_deadline(), start + 40ms);
  h.now = start + 40ms - 1ns;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(shorter), State::draining);
  h.now = start + 40ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(shorter), State::cancelling) << "the new, shorter timeout was not used";
  EXPECT_EQ(h.state(before), State::draining);
  EXPECT_EQ(h.engine->next_deadline(), start + 100ms) << "an armed timer lost its deadline";
  h.now = start + 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(before), State::cancelling);
  EXPECT_EQ(h.state(longer), State::draining);
  EXPECT_EQ(h.engine->next_deadline(), start + 520ms) << "the new, longer timeout was not used";
  h.now = start + 520ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(longer), State::cancelling);
}

Config drain_config(std::uint32_t idle_ms, std::uint32_t total_ms) {
  Config config = small_config();
  config.drain_idle_timeout_ms = idle_ms;
  config.drain_timeout_ms = total_ms;
  return config;
}

// Keeps a draining connection busy: input at each of `inputs` after `start`, then the idle
// timer's expiry after it, which re-arms it; the drain never goes idle.
void feed_drain(Harness& h, ConnectionId id, TimePoint start,
                std::initializer_list<milliseconds> inputs) {
  for (const milliseconds input_at : inputs) {
    h.now = start + input_at;
    h.complete(Op::recv, id, 10);
    h.now = *h.engine->next_deadline();
    h.engine->expire_timers(h.now);
    EXPECT_EQ(h.state(id), State::draining) << "input " << input_at.count() << " ms";
  }
}

// The drain total timer of a drain whose SHUT_WR was done at once is armed only at the first
// idle expiry, yet it ends the drain exactly drain_timeout_ms after SHUT_WR, as if armed then,
// however the peer keeps it busy.
TEST(EngineScenario, DrainTotalTimeoutArmedAtTheFirstIdleExpiryEndsTheDrainOnTime) {
  Harness h(drain_config(100, 250));
  const TimePoint start = h.now;
  const ConnectionId id = draining_connection(h);
  EXPECT_EQ(h.engine->next_deadline(), start + 100ms);
  feed_drain(h, id, start, {50ms, 140ms, 230ms});
  expect_drain_ends_at(h, id, start + 250ms);
  finish_cancelled(h, id);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_timeout);
}

// A shorter drain timeout set while such a drain runs does not cut it short: the drain keeps the
// total it began under, as a timer armed at its start would.
TEST(EngineScenario, ReconfiguredDrainTimeoutDoesNotShortenADrainWhoseTimerWasNotArmedYet) {
  Config config = drain_config(100, 250);
  Harness h(config);
  const TimePoint start = h.now;
  const ConnectionId id = draining_connection(h);
  config.drain_timeout_ms = 120;
  h.engine->reconfigure(config);
  feed_drain(h, id, start, {50ms, 140ms, 230ms});
  expect_drain_ends_at(h, id, start + 250ms);
}

// A lowered drain_max_bytes applies at once to a connection already draining (documented in
// manager.hpp): its next discarded bytes over the cap end it.
TEST(EngineScenario, ReconfiguredByteCapAppliesToConnectionsAlreadyDraining) {
  Config config = small_config();
  config.drain_max_bytes = 1'000'000;
  Harness h(config);
  const ConnectionId id = draining_connection(h);
  h.complete(Op::recv, id, 600);
  EXPECT_EQ(h.state(id), State::draining);
  config.drain_max_bytes = 1'000;
  h.engine->reconfigure(config);
  h.complete(Op::recv, id, 500);
  EXPECT_EQ(h.state(id), State::closing);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_byte_cap);
}

// The io_uring backend's multishot drain (Completion::more): one receive for the whole drain, each
// part discarded and counted as input, the receive left in flight with no second one submitted,
// until a completion without `more` ends it: here the peer's FIN, which ends the drain cleanly.
// Without a byte cap, the receive may take UINT32_MAX bytes in all its parts.
TEST(EngineScenario, MultishotDrainPartsKeepItsReceiveInFlightUntilThePeersFin) {
  Config config = drain_config(100, 10'000);
  config.drain_max_bytes = 0;
  Harness h(config);
  const TimePoint start = h.now;
  const ConnectionId id = draining_connection(h);
  const Request drain = h.request(Op::recv, id);
  EXPECT_EQ(drain.mode, RecvMode::discard);
  EXPECT_EQ(drain.max_bytes, UINT32_MAX);
  const std::uint64_t submissions = h.io.submissions();
  std::uint64_t parts = 0;
  for (const std::uint32_t bytes : {kDiscardChunkBytes, 1u, 70'000u}) {
    h.now += 30ms;
    h.part(id, bytes);
    parts += bytes;
    EXPECT_EQ(h.state(id), State::draining);
    ASSERT_TRUE(h.outstanding(Op::recv, id)) << "a part ended the receive";
    EXPECT_EQ(h.request(Op::recv, id).serial, drain.serial);
    EXPECT_EQ(h.io.submissions(), submissions) << "a part started another request";
    EXPECT_TRUE(h.engine->find(id)->is_in_flight(Op::recv));
    EXPECT_EQ(h.engine->find(id)->bytes_discarded, parts);
  }
  EXPECT_EQ(h.request(Op::recv, id).max_bytes, UINT32_MAX - parts);
  // The idle period that began at `start` ends now; the last part, 10 ms ago, began another.
  h.now = start + 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::draining) << "a drain receiving parts was called idle";
  EXPECT_EQ(h.io.peer_acks_calls(), 0u) << "the parts were not seen as progress";
  h.complete(Op::recv, id, 0);  // the FIN: the receive's final completion
  EXPECT_EQ(h.state(id), State::closing);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::clean);
  EXPECT_EQ(h.closed[0].second.bytes_discarded, parts);
  EXPECT_EQ(h.stats.bytes_discarded, parts);
  EXPECT_TRUE(h.io.violations().empty()) << h.io.violations()[0];
}

// With a byte cap, the multishot receive may take one byte more than the cap leaves: parts that
// land exactly on the cap go on; the final completion's byte crosses it and ends the drain.
TEST(EngineScenario, MultishotDrainEndsAtTheByteCapWithItsFinalCompletion) {
  Config config = small_config();
  config.drain_max_bytes = 1'000;
  Harness h(config);
  const ConnectionId id = draining_connection(h);
  EXPECT_EQ(h.request(Op::recv, id).max_bytes, 1'001u);
  h.part(id, 600);
  h.part(id, 400);  // exactly the cap: not past it
  EXPECT_EQ(h.state(id), State::draining);
  EXPECT_EQ(h.request(Op::recv, id).max_bytes, 1u);
  h.complete(Op::recv, id, 1);  // the last byte the receive may take, past the cap
  EXPECT_EQ(h.state(id), State::closing) << "the cap was crossed, and nothing is in flight";
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_byte_cap);
  EXPECT_EQ(h.closed[0].second.bytes_discarded, 1'001u);
  EXPECT_TRUE(h.io.violations().empty()) << h.io.violations()[0];
}

// A drain ended while its multishot receive is in flight (abort(), the drain timeout, or a part
// that crosses a byte cap reconfigure() lowered): the receive is cancelled, parts that still
// arrive are counted, and the close waits for the receive's final completion (-ECANCELED), even
// when the cancel's own completion comes first.
TEST(EngineScenario, AMultishotDrainEndedMidwayIsClosedOnlyAfterItsFinalCompletion) {
  const std::pair<const char*, Outcome> ends[] = {{"abort", Outcome::aborted},
                                                   {"drain timeout", Outcome::drain_timeout},
                                                   {"lowered cap", Outcome::drain_byte_cap}};
  for (const auto& [end, outcome] : ends) {
    SCOPED_TRACE(end);
    Config config = drain_config(1'000, 50);  // the total timer is armed when the drain begins
    config.drain_max_bytes = 1'000'000;
    Harness h(config);
    const TimePoint start = h.now;
    const ConnectionId id = draining_connection(h);
    h.part(id, 500);
    std::uint64_t discarded = 500;
    if (outcome == Outcome::aborted) {
      ASSERT_FALSE(h.engine->abort(id, h.now));
    } else if (outcome == Outcome::drain_timeout) {
      h.now = start + 50ms;
      h.engine->expire_timers(h.now);
    } else {
      config.drain_max_bytes = 600;
      h.engine->reconfigure(config);
      h.part(id, 200);
      discarded += 200;
    }
    EXPECT_EQ(h.state(id), State::cancelling);
    EXPECT_TRUE(h.outstanding(Op::cancel, id));
    EXPECT_TRUE(h.outstanding(Op::recv, id)) << "the multishot receive is still in flight";
    h.part(id, 300);  // came before the cancel took effect
    discarded += 300;
    EXPECT_EQ(h.engine->find(id)->bytes_discarded, discarded);
    h.complete(Op::cancel, id, 1);
    EXPECT_EQ(h.state(id), State::cancelling) << "closed with the receive still in flight";
    EXPECT_FALSE(h.outstanding(Op::close, id));
    h.complete(Op::recv, id, -ECANCELED);  // the receive's final completion
    EXPECT_EQ(h.state(id), State::closing);
    h.complete(Op::close, id, 0);
    ASSERT_EQ(h.closed.size(), 1u);
    EXPECT_EQ(h.closed[0].second.outcome, outcome);
    EXPECT_EQ(h.closed[0].second.bytes_discarded, discarded);
    EXPECT_EQ(h.stats.bytes_discarded, discarded);
    EXPECT_TRUE(h.io.violations().empty()) << h.io.violations()[0];
  }
}

// FakeIo's parts: only of a discarding recv, 1 byte or more and less than what it may still
// take; the request stays outstanding with what is left.
TEST(FakeIoChecks, APartTakesLessThanWhatADiscardingRecvHasLeft) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.take_part(0, 9);
  EXPECT_TRUE(io.violations().empty());
  EXPECT_EQ(io.outstanding().size(), 1u);
  EXPECT_EQ(io.outstanding()[0].max_bytes, 1u);
  EXPECT_EQ(io.outstanding_ops(0), FakeIo::bit(Op::recv));
  io.take_part(0, 1);  // the last byte ends the request: a take(), not a part
  io.take_part(0, 0);
  EXPECT_EQ(io.violations().size(), 2u);
  io.clear_violations();
  io.submit_send({Op::send, 0, 0}, fd, std::as_bytes(std::span("x", 1)), false);
  io.take_part(1, 1);
  ASSERT_EQ(io.violations().size(), 1u);
  EXPECT_NE(io.violations()[0].find("not a discarding recv"), std::string::npos);
}

}  // namespace
}  // namespace ringlinger::detail
