// SQE batching against the real kernel: N NOP requests submitted and reaped through the Ring with
// one io_uring_enter (what the manager does each loop step, whatever the number of connections
// ready), against the same N with one enter each (what a loop that submits per connection would
// pay). Items per second = requests per second; the ratio of the two is what batching saves.
#include <benchmark/benchmark.h>

#include "kernel/ring.hpp"

namespace ringlinger::detail {
namespace {

void prepare_nops(Ring& ring, unsigned count) {
  for (unsigned i = 0; i < count; ++i) {
    io_uring_sqe* sqe = ring.get_sqe();
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, i);
  }
}

void reap_all(Ring& ring, unsigned expected) {
  unsigned seen = 0;
  while (seen < expected) {
    ring.submit_and_wait(std::chrono::milliseconds(100));
    const Ring::Ready ready = ring.ready();
    const auto count = static_cast<unsigned>(ready.first.size() + ready.second.size());
    benchmark::DoNotOptimize(count);
    ring.release(ready);
    seen += count;
  }
}

// Runs `submit(ring, count)` once per iteration, count = state.range(0) NOPs, and reports
// them as items with the io_uring_enter calls each took.
template <typename Submit>
void run_nops(benchmark::State& state, Submit submit) {
  Stats stats;
  Ring ring({4096, 16384, true, 0}, stats);
  const auto count = static_cast<unsigned>(state.range(0));
  for (auto _ : state) submit(ring, count);
  state.SetItemsProcessed(state.iterations() * count);
  state.counters["enter_per_request"] =
      static_cast<double>(stats.enter_calls) / static_cast<double>(state.iterations() * count);
}

// state.range(0) NOPs, one io_uring_enter for all of them.
void BM_Ring_BatchedNops(benchmark::State& state) {
  run_nops(state, [](Ring& ring, unsigned count) {
    prepare_nops(ring, count);
    reap_all(ring, count);
  });
}
BENCHMARK(BM_Ring_BatchedNops)->Arg(1)->Arg(16)->Arg(256)->Arg(2048);

// The same NOPs, one io_uring_enter each.
void BM_Ring_OneEnterPerNop(benchmark::State& state) {
  run_nops(state, [](Ring& ring, unsigned count) {
    for (unsigned i = 0; i < count; ++i) {
      prepare_nops(ring, 1);
      reap_all(ring, 1);
    }
  });
}
BENCHMARK(BM_Ring_OneEnterPerNop)->Arg(256);

}  // namespace
}  // namespace ringlinger::detail

BENCHMARK_MAIN();
