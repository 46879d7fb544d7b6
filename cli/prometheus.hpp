// The process's counters in the Prometheus text exposition format 0.0.4, as `--metrics` serves
// them (metrics_server.hpp): a writer that checks names and escapes values, and the library's
// families from a Stats.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "ringlinger/stats.hpp"

namespace ringlinger::tools {

// Writes the text exposition format 0.0.4: one family at a time (# HELP, # TYPE, its samples).
// A bad name, type or label name is a programming error: std::logic_error.
class PrometheusText {
 public:
  using Labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts a family; type is "counter", "gauge" or "histogram". Names: [a-zA-Z_:][a-zA-Z0-9_:]*.
  // Counters are named ..._total here (the family name carries the suffix).
  void family(std::string_view name, std::string_view type, std::string_view help);
  // A sample of the current family, named the family's name + `suffix` ("_bucket", "_sum",
  // "_count" for a histogram). Label names: [a-zA-Z_][a-zA-Z0-9_]*; values are escaped.
  void sample(double value, Labels labels = {}, std::string_view suffix = {});
  const std::string& text() const noexcept { return text_; }

 private:
  std::string text_;
  std::string family_;  // empty until family() is called
};

// A sample value as the format spells it: integers exactly ("12", up to 2^53), other finite
// values in the shortest form that reads back the same double ("0.0025"), "+Inf", "-Inf", "NaN".
std::string prometheus_number(double value);

// The library's families from a process's total (Stats summed over the threads), every outcome
// and every state but free present even at 0, so that a graph starts at the first scrape:
//   ringlinger_closes_total{outcome}, ringlinger_connections{state},
//   ringlinger_connection_slots_free, ringlinger_connections_peak (the sum of the threads' peaks),
//   ringlinger_close_duration_seconds (histogram), ringlinger_timeout_extensions_total{timer},
//   and a ringlinger_<counter>_total for each other counter of Stats.
void add_library_metrics(PrometheusText& out, const Stats& total);

}  // namespace ringlinger::tools
