// The invariants, checked after every event: each slot against the model and what the fake holds
// for it, what each state promises, and the engine's counters. Part of engine_model.hpp.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "engine_model/fuzzer.hpp"

namespace ringlinger::detail::engine_model {

// Every Stats field, for "nothing else changed" comparisons.
inline bool same_stats(const Stats& a, const Stats& b) {
  return a.connections_in_state == b.connections_in_state && a.outcomes == b.outcomes &&
         a.connections_adopted == b.connections_adopted &&
         a.connections_accepted == b.connections_accepted &&
         a.accepts_rejected == b.accepts_rejected && a.accept_errors == b.accept_errors &&
         a.bytes_sent == b.bytes_sent && a.bytes_received == b.bytes_received &&
         a.bytes_discarded == b.bytes_discarded && a.submissions == b.submissions &&
         a.completions == b.completions && a.enter_calls == b.enter_calls &&
         a.sq_full_submits == b.sq_full_submits && a.cq_overflows == b.cq_overflows &&
         a.shutdown_syscalls == b.shutdown_syscalls &&
         a.receive_buffer_waits == b.receive_buffer_waits &&
         a.stale_completions == b.stale_completions && a.write_shutdowns == b.write_shutdowns;
}

// One slot as seen from outside, for "nothing else changed" comparisons.
struct SlotSnapshot {
  int fd;
  std::uint32_t generation;
  State state;
  std::uint8_t in_flight;
  bool peer_eof;
  bool reset_on_close;
  bool waiting_for_buffer;
  WriteSide write_side;
  bool receive_paused;
  std::optional<Outcome> outcome;
  int first_error;
  std::uint64_t bytes_sent, bytes_received, bytes_discarded, queued_bytes;
  friend bool operator==(const SlotSnapshot&, const SlotSnapshot&) = default;
};

inline std::vector<SlotSnapshot> snapshot(const Engine& engine) {
  std::vector<SlotSnapshot> slots;
  for (const Connection& c : engine.slots()) {
    slots.push_back({c.fd, c.generation, c.state, c.in_flight, c.peer_eof, c.reset_on_close,
                     c.waiting_for_buffer, c.write_side, c.receive_paused, c.outcome,
                     c.first_error, c.bytes_sent, c.bytes_received, c.bytes_discarded,
                     c.send_queue.queued_bytes()});
  }
  return slots;
}

inline void Fuzzer::check_invariants() {
  for (const std::string& v : io_.violations()) violation("FakeIo: " + v);
  io_.clear_violations();

  const auto& slots = engine_->slots();
  if (slots.size() != config_.max_connections) violation("slots() size changed");
  // The states the model expects, counted: what Engine::count_states() must give.
  std::array<std::uint64_t, kStateCount> model_counts{};
  std::size_t live = 0;
  std::optional<TimePoint> earliest;
  for (std::uint32_t slot = 0; slot < slots.size(); ++slot) {
    const Connection& c = slots[slot];
    const std::uint8_t outstanding = io_.outstanding_ops(slot);
    const SlotWhere where{slot, c};
    if (c.slot != slot) violation(where + "holds slot index " + std::to_string(c.slot));
    if (c.state == State::free) {
      if (outstanding != 0) violation(where + "free slot with requests outstanding");
      if (c.in_flight != 0 || c.fd != -1) violation(where + "free slot with in_flight or an fd");
      if (c.generation != expected_generation_[slot])
        violation(where + "generation not advanced on release");
      ++model_counts[static_cast<std::size_t>(State::free)];
      continue;
    }
    ++live;
    Model* m = find_model(ConnectionId{slot, c.generation});
    if (m == nullptr || m->closed) {
      violation(where + "engine has a live connection the test does not know");
      ++model_counts[static_cast<std::size_t>(c.state)];  // reported: counted as it is
      continue;
    }
    if (c.fd != m->fd)
      violation(where + "fd " + std::to_string(c.fd) + ", adopted " + std::to_string(m->fd));
    if (c.in_flight != outstanding) {
      violation(where + "in_flight bits " + std::to_string(c.in_flight) + " but outstanding " +
                std::to_string(outstanding));
    }
    if (outstanding != 0 && io_.outstanding_generation(slot) != c.generation) {
      violation(where + "requests of another generation outstanding");
    }
    if (c.bytes_sent != m->sent || c.bytes_received != m->received ||
        c.bytes_discarded != m->discarded) {
      violation(where + "byte counters differ from what the fake delivered");
    }
    if (c.send_queue.queued_bytes() != m->unsent()) {
      violation(where + "send queue holds " + std::to_string(c.send_queue.queued_bytes()) +
                " bytes, " + std::to_string(m->unsent()) + " unsent");
    }
    if (engine_->queued_bytes(m->id) != m->unsent()) {
      violation(where + "queued_bytes() " + std::to_string(engine_->queued_bytes(m->id)) + ", " +
                std::to_string(m->unsent()) + " unsent");
    }
    if (c.write_side != m->write_side()) {
      violation(where + "write side " + std::string(to_string(c.write_side)) + ", the model's " +
                std::string(to_string(m->write_side())));
    }
    if (c.receive_paused != m->paused) violation(where + "receive_paused differs from the model");
    if (m->open() && m->write_shutdown_requested && m->unsent() == 0 &&
        !m->write_shutdown_issued) {
      violation(where + "shutdown_write() and every byte sent, but no SHUT_WR issued");
    }
    if (c.peer_eof != m->eof_seen) violation(where + "peer_eof differs from the EOFs delivered");
    if (c.reset_on_close != m->reset_requested)
      violation(where + "reset_on_close differs from set_reset_on_close calls");
    if (c.waiting_for_buffer != m->waiting)
      violation(where + "waiting_for_buffer differs from the model");
    if (c.waiting_for_buffer && (c.state != State::open || (outstanding & bit(Op::recv)) != 0)) {
      violation(where + "waiting for a buffer while not open or with a recv in flight");
    }
    if (m->terminated != c.outcome.has_value())
      violation(where + "outcome decided != terminated");
    if (c.outcome && m->expected_outcome && *c.outcome != *m->expected_outcome) {
      violation(where + "outcome " + std::string(to_string(*c.outcome)) + ", expected " +
                std::string(to_string(*m->expected_outcome)));
    }
    if (config_.drain_max_bytes != 0 && m->discarded > config_.drain_max_bytes &&
        !m->terminated) {
      violation(where + "byte cap passed but the connection goes on");
    }
    if (m->shutdown_ok && m->eof_seen && !m->terminated) {
      violation(where + "SHUT_WR done and EOF seen but not closed cleanly");
    }
    if (m->close_requested && !m->terminated && m->unsent() == 0 && !m->shutdown_issued &&
        !m->reset_after_send) {
      violation(where + "everything sent after close() but no SHUT_WR issued");
    }
    if (m->reset_after_send && !m->terminated && m->unsent() == 0 && !send_in_flight(*m) &&
        !m->ack_wait_armed) {
      violation(where + "abort_after_send(): everything sent but no acknowledgement awaited");
    }
    if (c.reset_after_send != m->reset_after_send)
      violation(where + "reset_after_send differs from the model");
    if (auto deadline = model_deadline(*m)) {
      if (*deadline <= now_)
        violation(where + "a deadline passed and expire_timers() did not act on it");
      if (!earliest || *deadline < *earliest) earliest = *deadline;
    }
    ++model_counts[static_cast<std::size_t>(check_state(*m, c, outstanding, where))];
  }
  if (live != live_keys_.size()) {
    violation(std::to_string(live) + " live slots, the test has " +
              std::to_string(live_keys_.size()) + " live connections");
  }
  if (engine_->live_connections() != live) violation("live_connections() differs from the slots");
  if (engine_->full() != (live == config_.max_connections)) violation("full() is wrong");
  if (engine_->next_deadline() != earliest)
    violation("next_deadline() differs from the model's timers");

  // The gauges are counted when asked (Engine::count_states()), as Manager::stats() does, and
  // must give the states the model expects: a count that missed a state, or counted a slot
  // twice, differs here whatever the slots hold.
  Stats counted = stats_;
  engine_->count_states(counted);
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < kStateCount; ++i) {
    sum += counted.connections_in_state[i];
    if (counted.connections_in_state[i] != model_counts[i]) {
      violation("gauge connections_in_state[" + std::string(to_string(static_cast<State>(i))) +
                "] = " + std::to_string(counted.connections_in_state[i]) + ", the model has " +
                std::to_string(model_counts[i]));
    }
  }
  if (sum != config_.max_connections) violation("state gauges do not sum to max_connections");
  if (stats_.outcomes != model_outcomes_) violation("outcome counters differ from the reports");
  if (stats_.bytes_sent != total_sent_)
    violation("Stats::bytes_sent differs from the fake's sends");
  if (stats_.bytes_received != total_callback_bytes_)
    violation("Stats::bytes_received differs from on_receive");
  if (stats_.bytes_discarded != total_discarded_)
    violation("Stats::bytes_discarded differs from the fake");
  if (stats_.write_shutdowns != model_write_shutdowns_) {
    violation("Stats::write_shutdowns = " + std::to_string(stats_.write_shutdowns) +
              ", half-close shutdown(2) calls " + std::to_string(model_write_shutdowns_));
  }
  if (stats_.shutdown_syscalls != io_.shutdown_calls() - model_write_shutdowns_)
    violation("Stats::shutdown_syscalls differs");
  if (stats_.drain_idle_extensions != model_idle_extensions_)
    violation("Stats::drain_idle_extensions differs");
  if (stats_.send_timeout_extensions != model_send_extensions_)
    violation("Stats::send_timeout_extensions differs");
  if (stats_.receive_buffer_waits != model_buffer_waits_)
    violation("Stats::receive_buffer_waits differs");
  if (stats_.stale_completions != injected_stale_) {
    violation("stale_completions = " + std::to_string(stats_.stale_completions) + ", injected " +
              std::to_string(injected_stale_) + ": a real completion was taken for stale");
  }
}

// What each state promises (state.hpp), and that the state is the one the model predicts.
// Returns the model's state.
inline State Fuzzer::check_state(const Model& m, const Connection& c, std::uint8_t outstanding,
                                 const SlotWhere& where) {
  const bool recv = (outstanding & bit(Op::recv)) != 0;
  const bool send = (outstanding & bit(Op::send)) != 0;
  State expected = State::open;
  if (m.terminated) {
    expected = m.close_submitted ? State::closing : State::cancelling;
  } else if (m.close_requested) {
    expected = !m.shutdown_issued ? State::flushing
               : m.shutdown_ok    ? State::draining
                                  : State::shutting_down;
  }
  if (c.state != expected) {
    violation(where + "state " + std::string(to_string(c.state)) + ", the model expects " +
              std::string(to_string(expected)));
  }
  if (!m.terminated && !send && m.unsent() != 0)
    violation(where + "bytes unsent but no send in flight");
  if (send && m.unsent() == 0) violation(where + "a send in flight with nothing unsent");
  switch (c.state) {
    case State::open:
      if (variant_.with_on_receive && !m.eof_seen && !m.waiting && !m.paused && !recv) {
        violation(where +
                  "open with on_receive, no EOF, not waiting, not paused, but no recv in flight");
      }
      if (!variant_.with_on_receive && recv)
        violation(where + "open without on_receive but a recv in flight");
      break;
    case State::flushing:
    case State::draining:
      if (!m.eof_seen && !recv) violation(where + "reading to EOF but no recv in flight");
      break;
    case State::shutting_down:
      if ((outstanding & bit(Op::shutdown)) == 0)
        violation(where + "shutting_down without a shutdown in flight");
      if (!m.eof_seen && !recv) violation(where + "reading to EOF but no recv in flight");
      break;
    case State::cancelling:
      if (c.in_flight == 0)
        violation(where + "cancelling with nothing in flight (close not submitted)");
      if (!m.cancel_submitted) violation(where + "cancelling without a cancel submitted");
      break;
    case State::closing:
      if (c.in_flight != bit(Op::close))
        violation(where + "closing with other requests in flight");
      break;
    case State::free:
      break;
  }
  return expected;
}

}  // namespace ringlinger::detail::engine_model
