// Microbenchmarks of the per-connection user-space work, no kernel involved: the user_data
// encoding, the transition table, the timer queue at 1000 and 20000 slots, the send queue, a
// whole graceful close cycle (adopt -> send -> close -> completions -> on_closed) through the
// engine over FakeIo, and the walk of the slots that counts the state gauges for a stats read. Everything is reported as items per second; setup stays outside the timed
// loop (PauseTiming is amortised over a whole sweep of slots). Baselines measured in the same
// run, to read the results as ratios:
//   - BM_Baseline_StringAlloc: making and freeing the 64-byte std::string an owned send costs;
//   - BM_Baseline_FakeIoCycle: the same FakeIo submissions and completions as one close cycle,
//     without the engine (the fake's own share of BM_Engine_GracefulClose).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "core/engine.hpp"
#include "fake_io.hpp"
#include "core/send_queue.hpp"
#include "core/state_machine.hpp"
#include "core/timer_queue.hpp"
#include "core/user_data.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;
using TimePoint = TimerQueue::TimePoint;

const TimePoint kT0 = TimePoint{} + 1000h;

std::vector<std::uint32_t> shuffled_slots(std::uint32_t count, std::uint64_t seed) {
  std::vector<std::uint32_t> slots(count);
  std::iota(slots.begin(), slots.end(), 0u);
  std::shuffle(slots.begin(), slots.end(), std::mt19937_64(seed));
  return slots;
}

// --- user_data -------------------------------------------------------------------------------

void BM_UserData_EncodeDecode(benchmark::State& state) {
  std::mt19937_64 rng(1);
  std::vector<OpTag> tags(1024);
  for (OpTag& tag : tags) {
    tag = OpTag{static_cast<Op>(rng() % kOpCount),
                static_cast<std::uint32_t>(rng()) & kGenerationMask,
                static_cast<std::uint32_t>(rng())};
  }
  for (auto _ : state) {
    for (const OpTag& tag : tags) {
      std::uint64_t user_data = encode(tag);
      benchmark::DoNotOptimize(user_data);  // the compiler must not fold encode into decode
      OpTag decoded = decode(user_data);
      benchmark::DoNotOptimize(decoded);
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(tags.size()));
}
BENCHMARK(BM_UserData_EncodeDecode);

// --- state machine ---------------------------------------------------------------------------

void BM_IsLegalTransition(benchmark::State& state) {
  std::vector<std::pair<State, State>> pairs;
  for (std::size_t from = 0; from < kStateCount; ++from) {
    for (std::size_t to = 0; to < kStateCount; ++to) {
      pairs.emplace_back(static_cast<State>(from), static_cast<State>(to));
    }
  }
  std::shuffle(pairs.begin(), pairs.end(), std::mt19937_64(2));
  for (auto _ : state) {
    int legal = 0;
    for (auto [from, to] : pairs) {
      benchmark::DoNotOptimize(from);
      legal += is_legal_transition(from, to) ? 1 : 0;
    }
    benchmark::DoNotOptimize(legal);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(pairs.size()));
}
BENCHMARK(BM_IsLegalTransition);

// --- timer queue -------------------------------------------------------------------------------
// Each iteration sweeps every slot once, in a random order; items = slots touched.

void BM_TimerQueue_Arm(benchmark::State& state) {
  const auto count = static_cast<std::uint32_t>(state.range(0));
  const auto order = shuffled_slots(count, 3);
  TimerQueue queue(count, 5s);
  TimePoint now = kT0;
  for (auto _ : state) {
    state.PauseTiming();
    for (std::uint32_t slot : order) queue.disarm(slot);
    state.ResumeTiming();
    for (std::uint32_t slot : order) queue.arm(slot, now);
    now += 1us;
  }
  state.SetItemsProcessed(state.iterations() * count);
}
BENCHMARK(BM_TimerQueue_Arm)->Arg(1000)->Arg(20000);

void BM_TimerQueue_Rearm(benchmark::State& state) {
  const auto count = static_cast<std::uint32_t>(state.range(0));
  const auto order = shuffled_slots(count, 4);
  TimerQueue queue(count, 5s);
  TimePoint now = kT0;
  for (std::uint32_t slot : order) queue.arm(slot, now);
  for (auto _ : state) {
    now += 1us;
    for (std::uint32_t slot : order) queue.arm(slot, now);  // armed: unlink, move to the tail
  }
  state.SetItemsProcessed(state.iterations() * count);
}
BENCHMARK(BM_TimerQueue_Rearm)->Arg(1000)->Arg(20000);

void BM_TimerQueue_Disarm(benchmark::State& state) {
  const auto count = static_cast<std::uint32_t>(state.range(0));
  const auto arm_order = shuffled_slots(count, 5);
  const auto disarm_order = shuffled_slots(count, 6);
  TimerQueue queue(count, 5s);
  TimePoint now = kT0;
  for (auto _ : state) {
    state.PauseTiming();
    for (std::uint32_t slot : arm_order) queue.arm(slot, now);
    now += 1us;
    state.ResumeTiming();
    for (std::uint32_t slot : disarm_order) queue.disarm(slot);
  }
  state.SetItemsProcessed(state.iterations() * count);
}
BENCHMARK(BM_TimerQueue_Disarm)->Arg(1000)->Arg(20000);

// Arms every slot with `arm(queue, slot, now)` (timed only with `time_arming`), lets every
// deadline pass and pops them all; items = slots.
template <class Arm>
void arm_all_then_pop_all(benchmark::State& state, std::uint64_t seed, bool time_arming, Arm arm) {
  const auto count = static_cast<std::uint32_t>(state.range(0));
  const auto order = shuffled_slots(count, seed);
  TimerQueue queue(count, 5s);
  TimePoint now = kT0;
  std::uint64_t popped = 0;
  for (auto _ : state) {
    if (!time_arming) state.PauseTiming();
    for (std::uint32_t slot : order) arm(queue, slot, now);
    now += 10s;  // every deadline has passed
    if (!time_arming) state.ResumeTiming();
    while (auto slot = queue.pop_expired(now)) {
      benchmark::DoNotOptimize(*slot);
      ++popped;
    }
  }
  if (popped != static_cast<std::uint64_t>(state.iterations()) * count) {
    state.SkipWithError("not every timer expired");
  }
  state.SetItemsProcessed(state.iterations() * count);
}

void BM_TimerQueue_PopExpired(benchmark::State& state) {
  arm_all_then_pop_all(state, 7, false,
                       [](TimerQueue& queue, std::uint32_t slot, TimePoint now) { queue.arm(slot, now); });
}
BENCHMARK(BM_TimerQueue_PopExpired)->Arg(1000)->Arg(20000);

// The worst case of the lanes: every slot re-armed from a past acknowledgement into one of the
// 64 lanes (all lanes in use), then every deadline popped.
void BM_TimerQueue_ArmAtEveryLaneThenPop(benchmark::State& state) {
  arm_all_then_pop_all(state, 8, true, [](TimerQueue& queue, std::uint32_t slot, TimePoint now) {
    queue.arm_at(slot, now, now + 1ms + std::chrono::milliseconds(slot % 5000));
  });
}
BENCHMARK(BM_TimerQueue_ArmAtEveryLaneThenPop)->Arg(1000)->Arg(20000);

// --- send queue --------------------------------------------------------------------------------

void BM_Baseline_StringAlloc(benchmark::State& state) {
  for (auto _ : state) {
    std::string bytes(64, 'x');
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Baseline_StringAlloc);

// One owned 64-byte piece: build the string, push it, send it in one consume.
void BM_SendQueue_PushConsumeOwned(benchmark::State& state) {
  SendQueue queue;
  for (auto _ : state) {
    queue.push(std::string(64, 'x'));
    benchmark::DoNotOptimize(queue.front().data());
    queue.consume(queue.front().size());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SendQueue_PushConsumeOwned);

// One borrowed piece: no copy, only the queue's node.
void BM_SendQueue_PushConsumeBorrowed(benchmark::State& state) {
  const std::vector<std::byte> body(64 * 1024);
  SendQueue queue;
  for (auto _ : state) {
    queue.push_view(body);
    benchmark::DoNotOptimize(queue.front().data());
    queue.consume(queue.front().size());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SendQueue_PushConsumeBorrowed);

// Eight borrowed pieces queued at once, each sent in three short sends; items = pieces.
void BM_SendQueue_PartialSends(benchmark::State& state) {
  const std::vector<std::byte> body(3000);
  SendQueue queue;
  for (auto _ : state) {
    for (int piece = 0; piece < 8; ++piece) queue.push_view(body);
    while (!queue.empty()) {
      const std::size_t chunk = std::min<std::size_t>(queue.front().size(), 1000);
      benchmark::DoNotOptimize(queue.front().data());
      queue.consume(chunk);
    }
  }
  state.SetItemsProcessed(state.iterations() * 8);
}
BENCHMARK(BM_SendQueue_PartialSends);

// --- a whole graceful close through the engine -------------------------------------------------

// Completes what is outstanding the way a cooperative peer would: sends in full, EOF on every
// receive, SHUT_WR succeeds. Newest first (a stack), which interleaves connections.
void complete_cooperatively(fake::FakeIo& io, Engine& engine, Engine::TimePoint now) {
  while (!io.outstanding().empty()) {
    const fake::Request request = io.take(io.outstanding().size() - 1);
    std::int32_t result = 0;
    if (request.tag.op == Op::send) result = static_cast<std::int32_t>(request.bytes.size());
    engine.on_completion(Completion{request.tag, result, {}}, now);
  }
}

// range(0): connections per batch; range(1): 0 = shutdown(2), 1 = IORING_OP_SHUTDOWN;
// range(2): 1 = with an on_receive callback (a delivering receive from adopt on).
void BM_Engine_GracefulClose(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  Config config;
  config.max_connections = batch;
  config.shutdown_mode = state.range(1) == 0 ? ShutdownMode::syscall : ShutdownMode::ring;
  fake::FakeIo io;
  Stats stats;
  Callbacks callbacks;
  std::uint64_t closed = 0;
  std::uint64_t clean = 0;
  callbacks.on_closed = [&](ConnectionId, const CloseReport& report) {
    ++closed;
    clean += report.outcome == Outcome::clean ? 1 : 0;
  };
  if (state.range(2) == 1) callbacks.on_receive = [](ConnectionId, std::span<const std::byte>) {};
  Engine engine(config, io, callbacks, stats);
  const std::vector<std::byte> response(64, std::byte{'r'});
  std::vector<ConnectionId> ids(batch);
  const Engine::TimePoint now = Engine::Clock::now();

  for (auto _ : state) {
    for (std::uint32_t i = 0; i < batch; ++i) {
      ids[i] = engine.adopt(io.open_fd(), now);
      (void)engine.send_view(ids[i], response, now);
      (void)engine.close(ids[i], now);
    }
    complete_cooperatively(io, engine, now);
  }
  const auto cycles = static_cast<std::uint64_t>(state.iterations()) * batch;
  if (closed != cycles || clean != cycles || !io.violations().empty() ||
      engine.live_connections() != 0) {
    state.SkipWithError("not every connection closed cleanly");
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(cycles));
  state.counters["submissions_per_close"] =
      benchmark::Counter(static_cast<double>(io.submissions()) /
                         static_cast<double>(std::max<std::uint64_t>(cycles, 1)));
}
BENCHMARK(BM_Engine_GracefulClose)
    ->ArgNames({"conns", "ring_shutdown", "on_receive"})
    ->Args({1, 0, 0})
    ->Args({64, 0, 0})
    ->Args({1024, 0, 0})
    ->Args({1024, 1, 0})
    ->Args({1024, 0, 1});

// What a stats read adds since the per-state gauges are counted when asked: Engine::count_states()
// walks every slot, free or not (Manager::stats() and snapshot() call it). range(0): slots;
// range(1): 1 = the slots evicted from the caches before each walk (a metrics scrape comes
// seconds after the loop last touched most slots), 0 = warm.
void BM_Engine_CountStates(benchmark::State& state) {
  Config config;
  config.max_connections = static_cast<std::uint32_t>(state.range(0));
  fake::FakeIo io;
  Stats stats;
  Engine engine(config, io, Callbacks{}, stats);
  std::vector<std::uint64_t> evictor(64 << 20 >> 3);  // 64 MiB: more than any cache here
  std::uint64_t free = 0;
  for (auto _ : state) {
    if (state.range(1) == 1) {
      state.PauseTiming();
      for (std::uint64_t& word : evictor) word += 1;
      benchmark::ClobberMemory();
      state.ResumeTiming();
    }
    engine.count_states(stats);
    free = stats.connections_in_state[static_cast<std::size_t>(State::free)];
    benchmark::DoNotOptimize(free);
  }
  if (free != config.max_connections) state.SkipWithError("count_states() missed a slot");
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_Engine_CountStates)
    ->ArgNames({"slots", "cold"})
    ->Args({20000, 0})
    ->Args({20000, 1})
    ->Args({100000, 0})
    ->Args({100000, 1})
    ->Unit(benchmark::kMicrosecond);

// The fake's share of one cycle: the submissions and completions of a syscall-mode close
// without on_receive (send, discarding recv, shutdown(2), close), minus the engine.
void BM_Baseline_FakeIoCycle(benchmark::State& state) {
  const auto batch = static_cast<std::uint32_t>(state.range(0));
  fake::FakeIo io;
  const std::vector<std::byte> response(64, std::byte{'r'});
  std::vector<int> fds(batch);
  for (auto _ : state) {
    for (std::uint32_t i = 0; i < batch; ++i) {
      fds[i] = io.open_fd();
      io.submit_send(OpTag{Op::send, 0, i}, fds[i], response, false);
      io.submit_recv(OpTag{Op::recv, 0, i}, fds[i], RecvMode::discard, 1024);
    }
    for (std::uint32_t i = batch; i-- > 0;) {
      benchmark::DoNotOptimize(io.take(io.outstanding().size() - 1));  // recv
      benchmark::DoNotOptimize(io.take(io.outstanding().size() - 1));  // send
      benchmark::DoNotOptimize(io.shutdown_now(fds[i]));
      io.submit_close(OpTag{Op::close, 0, i}, fds[i]);
      benchmark::DoNotOptimize(io.take(io.outstanding().size() - 1));
    }
  }
  if (!io.violations().empty()) state.SkipWithError(io.violations().front().c_str());
  state.SetItemsProcessed(state.iterations() * batch);
}
BENCHMARK(BM_Baseline_FakeIoCycle)->Arg(1)->Arg(64)->Arg(1024);

}  // namespace
}  // namespace ringlinger::detail

BENCHMARK_MAIN();
