#include "stats_json.hpp"

#include <string>

namespace ringlinger::tools {

nlohmann::json outcomes_json(const std::array<std::uint64_t, kOutcomeCount>& counts) {
  nlohmann::json outcomes = nlohmann::json::object();
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    outcomes[std::string(to_string(static_cast<Outcome>(i)))] = counts[i];
  }
  return outcomes;
}

nlohmann::json stats_json(const Stats& stats) {
  nlohmann::json states = nlohmann::json::object();
  for (std::size_t i = 0; i < kStateCount; ++i) {
    states[std::string(to_string(static_cast<State>(i)))] = stats.connections_in_state[i];
  }
  return {
      {"live_connections", stats.live_connections()},
      {"peak_live_connections", stats.peak_live_connections},
      {"connections_accepted", stats.connections_accepted},
      {"connections_adopted", stats.connections_adopted},
      {"connections_handed_off", stats.connections_handed_off},
      {"connections_closed", stats.closed_connections()},
      {"accepts_rejected", stats.accepts_rejected},
      {"accepts_queued", stats.accepts_queued},
      {"accept_errors", stats.accept_errors},
      {"outcomes", outcomes_json(stats.outcomes)},
      {"connections_in_state", states},
      {"bytes_sent", stats.bytes_sent},
      {"bytes_received", stats.bytes_received},
      {"bytes_discarded", stats.bytes_discarded},
      {"submissions", stats.submissions},
      {"completions", stats.completions},
      {"enter_calls", stats.enter_calls},
      {"syscalls", stats.syscalls},
      {"write_shutdowns", stats.write_shutdowns},
      {"handoff_wakes", stats.handoff_wakes},
      {"sq_full_submits", stats.sq_full_submits},
      {"cq_overflows", stats.cq_overflows},
      {"shutdown_syscalls", stats.shutdown_syscalls},
      {"receive_buffer_waits", stats.receive_buffer_waits},
      {"drain_idle_extensions", stats.drain_idle_extensions},
      {"send_timeout_extensions", stats.send_timeout_extensions},
      {"stale_completions", stats.stale_completions},
      {"close_latency_counts", stats.close_latency_counts},
      {"close_latency_sum_ns", stats.close_latency_sum_ns},
  };
}

nlohmann::json config_json(const Config& config) {
  return {
      {"drain_idle_timeout_ms", config.drain_idle_timeout_ms},
      {"drain_timeout_ms", config.drain_timeout_ms},
      {"drain_max_bytes", config.drain_max_bytes},
      {"send_timeout_ms", config.send_timeout_ms},
      {"orphan_timeout_ms", config.orphan_timeout_ms},
      {"on_timeout", to_string(config.on_timeout)},
      {"shutdown", to_string(config.shutdown_mode)},
      {"max_connections", config.max_connections},
      {"batch_wait_us", config.batch_wait_us},
      {"receive_buffer_bytes", config.receive_buffer_bytes},
      {"receive_buffer_count", config.receive_buffer_count},
  };
}

}  // namespace ringlinger::tools
