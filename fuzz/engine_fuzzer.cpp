// libFuzzer target: detail::Engine behind FakeIo, every event chosen by the input's bytes.
//
// The driver, the model and the checks are the seeded gtest fuzzer's (tests/support/engine_model.hpp):
// only the source of the decisions differs (InputChoices). The first byte picks the variant
// (shutdown mode x on_timeout x with/without on_receive), the next ones the configuration, then
// one event after another: adopt, send, send_view, close, abort, close_all, abort_all,
// shutdown_write (half-close), pause_receive, resume_receive, queued_bytes; a
// completion of any request in flight, in any order, with any result class (partial sends, short
// reads, EOF, resets, ECANCELED after a cancel, transient and other errors, failing shutdowns and
// closes: Options::wide), and parts of a drain's multishot receive that leave it in flight; time
// jumps that expire timers (TCP_INFO answers too); buffer retries;
// completions of connections already gone. Every invariant is checked after every event; the
// first violation is printed with the events that led to it and aborts, so libFuzzer keeps the
// input. When the input runs out, every connection is driven to its close and each must be
// reported exactly once.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "engine_model.hpp"
#include "input_choices.hpp"

namespace {

using namespace ringlinger::detail::engine_model;

// More than any input of libFuzzer's default -max_len (4096 bytes) can choose: the input, not
// this bound, ends the run.
constexpr int kMaxSteps = 10'000;

[[noreturn]] void report_and_abort(const std::string& violation) {
  std::fprintf(stderr, "engine_fuzzer: invariant violated: %s\n", violation.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ringlinger::fuzz::InputChoices choices(data, size);
  const Variant& variant = kVariants[choices.below(std::size(kVariants))];
  Fuzzer fuzzer(choices, variant, Options{"libFuzzer input", report_and_abort, /*wide=*/true});
  fuzzer.run(kMaxSteps);
  return 0;
}
