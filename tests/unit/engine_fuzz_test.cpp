// What this proves: detail::Engine, driven through FakeIo by a seeded fuzzer (random API calls,
// completions of outstanding requests in any order with any plausible result, time jumps,
// expired timers, buffer retries, stale completions, and callbacks that call back into the
// engine), keeps every rule of the connection lifecycle after EVERY event:
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
#include "engine.hpp"
#include "engine_model.hpp"
#include "fake_io.hpp"
#include "state_machine.hpp"

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
        "on_send_drained %llu, deliveries while paused %llu, resumes restarting %llu\n",
        static_cast<unsigned long long>(c.half_closes),
        static_cast<unsigned long long>(c.half_close_failures),
        static_cast<unsigned long long>(c.close_after_half_close),
        static_cast<unsigned long long>(c.sends_after_half_close),
        static_cast<unsigned long long>(c.send_drained_calls),
        static_cast<unsigned long long>(c.deliveries_while_paused),
        static_cast<unsigned long long>(c.resumes_restarting));
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
  std::printf("[ campaign ] %llu steps, %llu completions\n",
              static_cast<unsigned long long>(coverage.steps),
              static_cast<unsigned long long>(coverage.completions));
}

// The libFuzzer target's world (Options::wide: every result class of every op, failing closes,
// SIOCOUTQ answers, one-slot tables) under the seeded source too, so that a plain g++ build
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
// deliveries of a receive in flight when paused, resumes that restart delivery.
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
    const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
    EXPECT_EQ(h.stats.in_state(State::free), 4u);
    EXPECT_TRUE(h.io.violations().empty());
  }
}

TEST(EngineScenario, EofWithoutSuccessfulShutdownIsNotClean) {
  Harness h(small_config(ShutdownMode::ring));
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
  const ConnectionId old_id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(old_id, "abc", h.now));
  ASSERT_FALSE(h.engine->abort(old_id, h.now));
  EXPECT_EQ(h.state(old_id), State::cancelling);
  h.complete(Op::send, old_id, -ECANCELED);
  h.complete(Op::cancel, old_id, 1);
  h.complete(Op::close, old_id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.closed[0].second.reset_sent);

  const ConnectionId new_id = *h.engine->adopt(h.io.open_fd(), h.now);
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
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
  std::optional<ConnectionId> successor;
  h.on_closed = [&](ConnectionId, const CloseReport&) {
    successor = h.engine->adopt(h.io.open_fd(), h.now);
  };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  EXPECT_FALSE(h.engine->adopt(h.io.open_fd(), h.now)) << "the table is full";
  (void)h.engine->abort(id, h.now);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_TRUE(successor.has_value());
  EXPECT_EQ(successor->slot, id.slot);
  EXPECT_NE(successor->generation, id.generation);
  EXPECT_EQ(h.state(*successor), State::open);
  EXPECT_TRUE(h.outstanding(Op::recv, *successor));
  EXPECT_EQ(h.stats.in_state(State::open), 1u);
  EXPECT_EQ(h.stats.in_state(State::free), 0u);
}

// outcome.hpp, for a connection ended without close() (here: abort at 10 ms, fd closed 5 ms
// later): close_latency() is 0 and close_requested is false; open_time is "adopt -> outcome
// decided" (10 ms) and teardown_time "outcome decided -> fd closed" (5 ms): the phases still add
// up to the whole lifetime.
TEST(EngineScenario, CloseReportTimesWithoutClose) {
  Harness h(small_config());
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
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
        const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);  // no on_receive: idle
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

// engine.cpp, peer_still_reading(): a drain idle timer that fires while the peer is still
// acknowledging our data is put off (the peer is reading, not idle); once its acknowledgements
// stall, the next expiry ends the drain; a lone unacknowledged FIN does not count as data.
TEST(EngineScenario, DrainIdleTimeoutWaitsForAPeerStillAcknowledgingOurData) {
  Config config = small_config();
  config.drain_idle_timeout_ms = 100;
  Harness h(config);
  std::uint32_t unacknowledged = 50'000;
  h.io.unacknowledged_result = [&](int) { return unacknowledged; };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "response", h.now));
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::send, id, 8);  // flushed; shutdown(2); draining with a recv outstanding
  ASSERT_EQ(h.state(id), State::draining);

  h.now += 100ms;
  h.engine->expire_timers(h.now);  // first expiry: data in flight, one more idle period
  EXPECT_EQ(h.state(id), State::draining);
  unacknowledged = 20'000;
  h.now += 100ms;
  h.engine->expire_timers(h.now);  // progress: 50000 -> 20000
  EXPECT_EQ(h.state(id), State::draining);
  EXPECT_EQ(h.stats.drain_idle_extensions, 2u);
  h.now += 100ms;
  h.engine->expire_timers(h.now);  // no progress: 20000 -> 20000, idle for real
  EXPECT_EQ(h.state(id), State::cancelling);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_idle_timeout);

  // Only our FIN unacknowledged: the peer has everything, the first expiry ends the drain.
  unacknowledged = 1;
  const ConnectionId second = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->close(second, h.now));
  ASSERT_EQ(h.state(second), State::draining);
  h.now += 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(second), State::cancelling);
  EXPECT_EQ(h.stats.drain_idle_extensions, 2u);
}

// engine.cpp, handle_send() and expire_timers(): a short send notes the socket's send queue; when
// the send timer fires, a queue that shrank since (a slow reader) runs the timer once more, one
// that did not (a peer that stopped reading) ends the connection at the first expiry, and a
// send that completes in full forgets the figure.
TEST(EngineScenario, SendTimeoutWaitsForASlowReaderAndNotForAStalledOne) {
  Config config = small_config();
  config.send_timeout_ms = 100;
  Harness h(config);
  std::uint32_t queued = 60'000;
  h.io.unacknowledged_result = [&](int) { return queued; };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, std::string(100'000, 'r'), h.now));
  h.complete(Op::send, id, 40'000);  // short: the socket is full; 60000 queued noted
  queued = 30'000;                    // the reader takes some, no send completes
  h.now += 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(id), State::open) << "a slow reader was cut off at the send timeout";
  EXPECT_EQ(h.stats.send_timeout_extensions, 1u);
  h.now += 100ms;
  h.engine->expire_timers(h.now);  // 30000 -> 30000: it stopped reading
  EXPECT_EQ(h.state(id), State::cancelling);
  EXPECT_EQ(h.stats.send_timeout_extensions, 1u);
  h.complete(Op::send, id, -ECANCELED);  // an open connection without on_receive reads nothing
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::send_timeout);

  // A peer that never takes anything after the short send: ends at the first expiry.
  queued = 60'000;
  const ConnectionId second = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(second, std::string(100'000, 'r'), h.now));
  h.complete(Op::send, second, 40'000);
  h.now += 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(second), State::cancelling) << "a stalled peer got an extra send timeout";
  EXPECT_EQ(h.stats.send_timeout_extensions, 1u);
}

}  // namespace
}  // namespace ringlinger::detail
