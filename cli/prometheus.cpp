#include "prometheus.hpp"

#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

namespace ringlinger::tools {
namespace {

bool is_name_start(char c, bool colon_allowed) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_allowed && c == ':');
}

// Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*; label names the same without the colon. A suffix is the
// tail of a name: any name character may start it.
bool is_name(std::string_view name, bool colon_allowed, bool tail = false) {
  if (name.empty()) return tail;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool digit_ok = tail || i > 0;
    if (!is_name_start(c, colon_allowed) && !(digit_ok && c >= '0' && c <= '9')) return false;
  }
  return true;
}

void require(bool condition, std::string_view what, std::string_view name) {
  if (!condition) throw std::logic_error(fmt::format("Prometheus text: {} \"{}\"", what, name));
}

// HELP text escapes the backslash and the line feed; label values the double quote as well.
void append_escaped(std::string& out, std::string_view text, bool quote) {
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

}  // namespace

std::string prometheus_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  constexpr double kExactIntegers = 9007199254740992.0;  // 2^53
  if (std::trunc(value) == value && std::fabs(value) <= kExactIntegers) {
    return fmt::format("{}", static_cast<std::int64_t>(value));
  }
  return fmt::format("{}", value);  // the shortest text that reads back as the same double
}

void PrometheusText::family(std::string_view name, std::string_view type, std::string_view help) {
  require(is_name(name, true), "bad metric name", name);
  require(type == "counter" || type == "gauge" || type == "histogram", "bad metric type", type);
  family_ = name;
  text_ += "# HELP ";
  text_ += name;
  text_ += ' ';
  append_escaped(text_, help, false);
  text_ += "\n# TYPE ";
  text_ += name;
  text_ += ' ';
  text_ += type;
  text_ += '\n';
}

void PrometheusText::sample(double value, Labels labels, std::string_view suffix) {
  require(!family_.empty(), "sample before family()", suffix);
  require(is_name(suffix, true, true), "bad metric name suffix", suffix);
  for (const auto& label : labels) require(is_name(label.first, false), "bad label name", label.first);
  text_ += family_;
  text_ += suffix;
  if (labels.size() > 0) {
    char separator = '{';
    for (const auto& [label, label_value] : labels) {
      text_ += separator;
      text_ += label;
      text_ += "=\"";
      append_escaped(text_, label_value, true);
      text_ += '"';
      separator = ',';
    }
    text_ += '}';
  }
  text_ += ' ';
  text_ += prometheus_number(value);
  text_ += '\n';
}

namespace {

// The counters of Stats that are one number each, as ringlinger_<name>_total.
struct CounterField {
  std::string_view name;
  std::uint64_t Stats::*field;
  std::string_view help;
};

constexpr std::array kCounters{
    CounterField{"ringlinger_connections_accepted_total", &Stats::connections_accepted,
                 "Connections accepted by the listeners."},
    CounterField{"ringlinger_connections_adopted_total", &Stats::connections_adopted,
                 "Connections taken over with adopt()."},
    CounterField{"ringlinger_connections_handed_off_total", &Stats::connections_handed_off,
                 "Connections handed to a manager's thread with handoff()."},
    CounterField{"ringlinger_accepts_rejected_total", &Stats::accepts_rejected,
                 "Accepted connections closed unserved because the server was stopping."},
    CounterField{"ringlinger_accepts_queued_total", &Stats::accepts_queued,
                 "Connections accepted while the table was full, held until a slot freed up."},
    CounterField{"ringlinger_accept_errors_total", &Stats::accept_errors,
                 "Accept failures (EMFILE, ENFILE, ENOMEM, ...); accepting pauses after each."},
    CounterField{"ringlinger_bytes_sent_total", &Stats::bytes_sent,
                 "Bytes handed to the kernel by completed sends (and by the proxy's own writes)."},
    CounterField{"ringlinger_bytes_received_total", &Stats::bytes_received,
                 "Bytes delivered to the application."},
    CounterField{"ringlinger_bytes_discarded_total", &Stats::bytes_discarded,
                 "Bytes read and thrown away after close was requested (draining)."},
    CounterField{"ringlinger_syscalls_total", &Stats::syscalls,
                 "System calls made on the data path, whatever the backend."},
    CounterField{"ringlinger_io_uring_enter_calls_total", &Stats::enter_calls,
                 "io_uring_enter(2) calls."},
    CounterField{"ringlinger_submissions_total", &Stats::submissions,
                 "io_uring submission queue entries consumed by the kernel."},
    CounterField{"ringlinger_completions_total", &Stats::completions,
                 "Completions handled."},
    CounterField{"ringlinger_sq_full_submits_total", &Stats::sq_full_submits,
                 "io_uring_enter(2) calls made early because the submission queue was full."},
    CounterField{"ringlinger_cq_overflows_total", &Stats::cq_overflows,
                 "Times the kernel reported completion queue overflow."},
    CounterField{"ringlinger_shutdown_syscalls_total", &Stats::shutdown_syscalls,
                 "Direct shutdown(2) calls (shutdown mode syscall)."},
    CounterField{"ringlinger_write_shutdowns_total", &Stats::write_shutdowns,
                 "Half-closes done with shutdown_write()."},
    CounterField{"ringlinger_receive_buffer_waits_total", &Stats::receive_buffer_waits,
                 "Receives that found no free shared receive buffer and were retried."},
    CounterField{"ringlinger_handoff_wakes_total", &Stats::handoff_wakes,
                 "Times a manager's thread was woken by handoff() or stop()."},
    CounterField{"ringlinger_stale_completions_total", &Stats::stale_completions,
                 "Completions for a connection already closed (a bug worth reporting if not 0)."},
};

void add_connection_metrics(PrometheusText& out, const Stats& total) {
  out.family("ringlinger_closes_total", "counter", "Connections closed, by outcome.");
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    out.sample(static_cast<double>(total.outcomes[i]),
               {{"outcome", to_string(static_cast<Outcome>(i))}});
  }
  out.family("ringlinger_connections", "gauge", "Connections in each state now.");
  for (std::size_t i = 0; i < kStateCount; ++i) {
    if (static_cast<State>(i) == State::free) continue;
    out.sample(static_cast<double>(total.connections_in_state[i]),
               {{"state", to_string(static_cast<State>(i))}});
  }
  out.family("ringlinger_connection_slots_free", "gauge", "Unused connection slots.");
  out.sample(static_cast<double>(total.in_state(State::free)));
  out.family("ringlinger_connections_peak", "gauge",
             "The most connections live at once (the sum of the threads' peaks: an upper bound).");
  out.sample(static_cast<double>(total.peak_live_connections));
  out.family("ringlinger_timeout_extensions_total", "counter",
             "Timers that expired but restarted because the peer acknowledged data (slow, not "
             "idle), by timer.");
  out.sample(static_cast<double>(total.drain_idle_extensions), {{"timer", "drain_idle"}});
  out.sample(static_cast<double>(total.send_timeout_extensions), {{"timer", "send"}});
}

// Stats counts each bucket alone; Prometheus wants each bucket to count everything up to its le.
void add_close_latency_histogram(PrometheusText& out, const Stats& total) {
  out.family("ringlinger_close_duration_seconds", "histogram",
             "Close latency: close requested to socket closed (flush, shutdown, drain).");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kCloseLatencyBuckets; ++i) {
    cumulative += total.close_latency_counts[i];
    const std::string le =
        i < kCloseLatencyBounds.size()
            ? prometheus_number(std::chrono::duration<double>(kCloseLatencyBounds[i]).count())
            : "+Inf";
    out.sample(static_cast<double>(cumulative), {{"le", le}}, "_bucket");
  }
  out.sample(static_cast<double>(total.close_latency_sum_ns) / 1e9, {}, "_sum");
  out.sample(static_cast<double>(cumulative), {}, "_count");
}

}  // namespace

void add_library_metrics(PrometheusText& out, const Stats& total) {
  add_connection_metrics(out, total);
  add_close_latency_histogram(out, total);
  for (const CounterField& counter : kCounters) {
    out.family(counter.name, "counter", counter.help);
    out.sample(static_cast<double>(total.*counter.field));
  }
}

}  // namespace ringlinger::tools
