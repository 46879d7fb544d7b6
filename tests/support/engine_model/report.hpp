// Reporting: the recent events, each violation as it is found, and every CloseReport checked
// against the model. Part of engine_model.hpp.
#pragma once

#include <string>
#include <utility>

#include "engine_model/fuzzer.hpp"

namespace ringlinger::detail::engine_model {

inline std::string Fuzzer::describe_run() const {
  return options_.label + " variant " + variant_name(variant_) +
         " max_connections " + std::to_string(config_.max_connections) + " drain_max_bytes " +
         std::to_string(config_.drain_max_bytes) + " timeouts send/idle/total " +
         std::to_string(config_.send_timeout_ms) + "/" +
         std::to_string(config_.drain_idle_timeout_ms) + "/" +
         std::to_string(config_.drain_timeout_ms) + " ms";
}

inline void Fuzzer::log(std::string event) {
  if (recent_.size() == 40) recent_.pop_front();
  recent_.push_back("step " + std::to_string(step_) + ": " + std::move(event));
}

inline void Fuzzer::check_result(std::error_code got, std::error_code want,
                                 const std::string& what) {
  if (got != want) {
    violation(what + " returned '" + got.message() + "', expected '" + want.message() + "'");
  }
}

// Records and reports at once (an engine RL_ASSERT that follows would end the process).
inline void Fuzzer::violation(const std::string& what) {
  if (violations_.size() >= 5) return;
  std::string text = describe_run() + ", step " + std::to_string(step_) + ": " + what;
  if (violations_.empty()) {
    text += "\n  recent events (oldest first):";
    for (const std::string& event : recent_) text += "\n    " + event;
  }
  if (options_.report) options_.report(text);
  violations_.push_back(std::move(text));
}

inline void Fuzzer::check_report(const Model& m, const CloseReport& report) {
  const std::string who = "report of " + id_text(m.id) + ": ";
  if (!m.expected_outcome) {
    violation(who + "closed but never terminated");
  } else if (report.outcome != *m.expected_outcome) {
    violation(who + "outcome " + std::string(to_string(report.outcome)) + ", expected " +
              std::string(to_string(*m.expected_outcome)));
  }
  if (report.outcome == Outcome::clean && !(m.shutdown_ok && m.eof_seen && m.first_error == 0)) {
    violation(who + "clean without (successful SHUT_WR and EOF and no error)");
  }
  // The close's own error is the first one seen when nothing failed before it.
  const int first_error = m.first_error != 0 ? m.first_error : close_error_;
  if (report.first_error != first_error) {
    violation(who + "first_error " + std::to_string(report.first_error) + ", expected " +
              std::to_string(first_error));
  }
  const bool reset_expected =
      report.outcome == Outcome::aborted || report.outcome == Outcome::stop_deadline ||
      (is_timeout(report.outcome) && config_.on_timeout == OnTimeout::reset) ||
      m.reset_expected_by_abort || m.reset_after_send;
  if (report.reset_sent != m.reset_requested) {
    violation(who + "reset_sent " + std::to_string(report.reset_sent) +
              " but set_reset_on_close called: " + std::to_string(m.reset_requested));
  }
  if (report.reset_sent != reset_expected) {
    violation(who + "reset_sent " + std::to_string(report.reset_sent) + " for outcome " +
              std::string(to_string(report.outcome)) + " with on_timeout " +
              std::string(to_string(config_.on_timeout)));
  }
  // config.hpp, orphan_timeout_ms: only when a timeout closes with FIN, and only if set.
  const bool orphan_limit_expected = is_timeout(report.outcome) &&
                                     config_.on_timeout == OnTimeout::close &&
                                     config_.orphan_timeout_ms > 0 && !m.reset_after_send;
  if (m.orphan_limited != orphan_limit_expected) {
    violation(who + "limit_orphan_time called: " + std::to_string(m.orphan_limited) +
              " for outcome " + std::string(to_string(report.outcome)) + " with on_timeout " +
              std::string(to_string(config_.on_timeout)));
  }
  if (report.bytes_sent != m.sent) {
    violation(who + "bytes_sent " + std::to_string(report.bytes_sent) + ", the fake accepted " +
              std::to_string(m.sent));
  }
  if (report.bytes_sent > m.queued.size()) violation(who + "bytes_sent exceeds what was queued");
  if (report.bytes_received != m.received || m.received != m.callback_bytes) {
    violation(who + "bytes_received " + std::to_string(report.bytes_received) +
              ", delivered while open " + std::to_string(m.received) + ", given to on_receive " +
              std::to_string(m.callback_bytes));
  }
  if (report.bytes_discarded != m.discarded) {
    violation(who + "bytes_discarded " + std::to_string(report.bytes_discarded) +
              ", delivered after close/termination " + std::to_string(m.discarded));
  }
  // Times (outcome.hpp): none negative; teardown is "outcome decided -> fd closed"; with
  // close() requested, open_time + close_latency() covers adopt -> closed exactly and each
  // phase is as documented; without, close_latency() is 0 and there was no flush or drain.
  // Without close(), open_time is adopt -> outcome decided.
  const nanoseconds phases[] = {report.open_time, report.flush_time, report.drain_time,
                                report.teardown_time};
  for (nanoseconds phase : phases) {
    if (phase < 0ns) violation(who + "a negative duration");
  }
  if (report.close_requested != m.close_requested) {
    violation(who + "close_requested " + std::to_string(report.close_requested) +
              ", close() while open: " + std::to_string(m.close_requested));
  }
  if (report.teardown_time != now_ - m.terminated_at) violation(who + "teardown_time");
  if (m.close_requested) {
    if (report.open_time + report.close_latency() != now_ - m.adopted_at) {
      violation(who + "open_time + close_latency() != adopt -> closed");
    }
    if (report.open_time != m.close_requested_at - m.adopted_at) violation(who + "open_time");
    const TimePoint flushed = m.shutdown_ok ? m.shutdown_ok_at : m.terminated_at;
    if (report.flush_time != flushed - m.close_requested_at) violation(who + "flush_time");
    const nanoseconds drain = m.shutdown_ok ? m.terminated_at - m.shutdown_ok_at : 0ns;
    if (report.drain_time != drain) violation(who + "drain_time");
  } else {
    if (report.open_time != m.terminated_at - m.adopted_at) violation(who + "open_time");
    if (report.close_latency() != 0ns) violation(who + "close_latency() not 0 without close()");
    if (report.flush_time != 0ns || report.drain_time != 0ns) {
      violation(who + "flush or drain time without close()");
    }
  }
}

}  // namespace ringlinger::detail::engine_model
