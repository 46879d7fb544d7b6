// What the fuzzer reached, summed over runs. Part of engine_model.hpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "ringlinger/outcome.hpp"

namespace ringlinger::detail::engine_model {

// Things the fuzzer saw happen, summed over runs: a fuzzer that never reaches an outcome or a
// reentrant path proves nothing about it.
struct Coverage {
  std::array<std::uint64_t, kOutcomeCount> outcomes{};
  std::uint64_t steps = 0;
  std::uint64_t completions = 0;
  std::uint64_t stale_injected = 0;
  std::uint64_t stale_on_reused_slot = 0;
  std::uint64_t fd_reused_before_close_completion = 0;
  std::uint64_t reentrant_close = 0;
  std::uint64_t sends_and_closes = 0;  // send_view_and_close() accepted
  std::uint64_t reentrant_send = 0;
  std::uint64_t reentrant_abort = 0;
  std::uint64_t reentrant_adopt = 0;
  std::uint64_t reentrant_all = 0;  // close_all / abort_all from a callback
  std::uint64_t buffer_waits = 0;
  std::uint64_t partial_sends = 0;
  std::uint64_t adopt_refused_full = 0;
  std::uint64_t exact_deadline_hits = 0;
  std::uint64_t graceful_finishes = 0;
  std::uint64_t half_closes = 0;               // shutdown_write()'s shutdown(2) succeeded
  std::uint64_t half_close_failures = 0;       // ... failed: the connection ends
  std::uint64_t close_after_half_close = 0;    // close() went straight to draining
  std::uint64_t sends_after_half_close = 0;    // refused with broken_pipe
  std::uint64_t send_drained_calls = 0;        // on_send_drained
  std::uint64_t deliveries_while_paused = 0;   // a recv in flight from before the pause
  std::uint64_t resumes_restarting = 0;        // resume_receive() started a delivering recv
  std::uint64_t reentrant_flow = 0;            // shutdown_write/pause/resume from a callback
  std::uint64_t progress_extensions = 0;       // a progress timer re-armed from an acknowledgement
  std::uint64_t progress_rearms = 0;           // ... from input or a send the engine saw
  std::uint64_t resets_after_send = 0;         // abort_after_send() accepted
  std::uint64_t ack_waits = 0;                 // ... and it had to wait for the acknowledgement
  std::uint64_t recv_parts = 0;                // parts of a discarding recv (Completion::more)
  std::uint64_t recv_parts_after_cancel = 0;   // ... once the connection's cancel was submitted
  std::uint64_t byte_caps_after_parts = 0;     // drain_byte_cap for a connection that had parts
  std::uint64_t unreported_closes = 0;         // closes with no completion, reported at once

  void add(const Coverage& other) {
    for (std::size_t i = 0; i < kOutcomeCount; ++i) outcomes[i] += other.outcomes[i];
    steps += other.steps;
    completions += other.completions;
    stale_injected += other.stale_injected;
    stale_on_reused_slot += other.stale_on_reused_slot;
    fd_reused_before_close_completion += other.fd_reused_before_close_completion;
    reentrant_close += other.reentrant_close;
    sends_and_closes += other.sends_and_closes;
    reentrant_send += other.reentrant_send;
    reentrant_abort += other.reentrant_abort;
    reentrant_adopt += other.reentrant_adopt;
    reentrant_all += other.reentrant_all;
    buffer_waits += other.buffer_waits;
    partial_sends += other.partial_sends;
    adopt_refused_full += other.adopt_refused_full;
    exact_deadline_hits += other.exact_deadline_hits;
    graceful_finishes += other.graceful_finishes;
    half_closes += other.half_closes;
    half_close_failures += other.half_close_failures;
    close_after_half_close += other.close_after_half_close;
    sends_after_half_close += other.sends_after_half_close;
    send_drained_calls += other.send_drained_calls;
    deliveries_while_paused += other.deliveries_while_paused;
    resumes_restarting += other.resumes_restarting;
    reentrant_flow += other.reentrant_flow;
    progress_extensions += other.progress_extensions;
    progress_rearms += other.progress_rearms;
    resets_after_send += other.resets_after_send;
    ack_waits += other.ack_waits;
    recv_parts += other.recv_parts;
    recv_parts_after_cancel += other.recv_parts_after_cancel;
    byte_caps_after_parts += other.byte_caps_after_parts;
    unreported_closes += other.unreported_closes;
  }
};

}  // namespace ringlinger::detail::engine_model
