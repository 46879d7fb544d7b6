#include "load_report.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "percentiles.hpp"

namespace ringlinger::tools {

namespace {

// "2 reset, 1 timeout" for the non-zero counts; empty when there are none.
std::string failure_reasons(const std::array<std::uint64_t, kFailureCount>& failures) {
  std::string reasons;
  for (std::size_t i = 0; i < kFailureCount; ++i) {
    if (failures[i] == 0) continue;
    reasons += fmt::format("{}{} {}", reasons.empty() ? "" : ", ", failures[i],
                           to_string(static_cast<Failure>(i)));
  }
  return reasons;
}

nlohmann::json failures_json(const std::array<std::uint64_t, kFailureCount>& failures) {
  nlohmann::json json = nlohmann::json::object();
  for (std::size_t i = 0; i < kFailureCount; ++i) {
    json[std::string(to_string(static_cast<Failure>(i)))] = failures[i];
  }
  return json;
}

}  // namespace

std::string summarize(const LoadResult& result) {
  std::string text = fmt::format("{} complete, {} failed", result.complete, result.failed());
  const std::string reasons = failure_reasons(result.failures);
  if (!reasons.empty()) text += " (" + reasons + ")";
  if (result.failed() == 0 || peer_types_used(result) < 2) return text;
  std::string by_peer;
  for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
    const PeerResult& peer = result.by_peer[i];
    if (peer.failed() == 0) continue;
    by_peer += fmt::format("{}{} {}", by_peer.empty() ? "" : "; ",
                           to_string(static_cast<PeerType>(i)), failure_reasons(peer.failures));
  }
  return text + "; by peer: " + by_peer;
}

nlohmann::json to_json(const LoadResult& result) {
  nlohmann::json peers = nlohmann::json::object();
  for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
    const PeerResult& peer = result.by_peer[i];
    if (peer.started == 0) continue;
    peers[std::string(to_string(static_cast<PeerType>(i)))] = {
        {"started", peer.started},
        {"complete", peer.complete},
        {"failed", peer.failed()},
        {"failures", failures_json(peer.failures)},
    };
  }
  std::vector<std::uint32_t> latencies = result.latencies_us;
  const Percentiles latency = percentiles_of(latencies);
  const double seconds = std::chrono::duration<double>(result.elapsed).count();
  return {
      {"started", result.started},
      {"complete", result.complete},
      {"failed", result.failed()},
      {"failures", failures_json(result.failures)},
      {"peers", peers},
      {"payload_bytes_expected", result.payload_bytes_expected},
      {"payload_bytes_received", result.payload_bytes_received},
      {"payload_bytes_lost", result.bytes_lost()},
      {"elapsed_seconds", seconds},
      {"connections_per_second", seconds > 0 ? static_cast<double>(result.finished()) / seconds : 0.0},
      {"latency_us", {{"p50", latency.p50}, {"p99", latency.p99}, {"max", latency.max}}},
  };
}

std::size_t peer_types_used(const LoadResult& result) {
  return static_cast<std::size_t>(std::count_if(result.by_peer.begin(), result.by_peer.end(),
                                                [](const PeerResult& peer) { return peer.started > 0; }));
}

std::string peer_table(const LoadResult& result) {
  const auto row = [](std::string_view name, std::uint64_t started, std::uint64_t complete,
                      std::uint64_t failed, const std::string& reasons) {
    return fmt::format("{:<12} {:>9} {:>9} {:>7}{}\n", name, started, complete, failed,
                       reasons.empty() ? "" : " (" + reasons + ")");
  };
  std::string table = fmt::format("{:<12} {:>9} {:>9} {:>7}\n", "peer type", "started",
                                  "complete", "failed");
  for (std::size_t i = 0; i < kPeerTypeCount; ++i) {
    const PeerResult& peer = result.by_peer[i];
    if (peer.started == 0) continue;
    table += row(to_string(static_cast<PeerType>(i)), peer.started, peer.complete, peer.failed(),
                 failure_reasons(peer.failures));
  }
  return table + row("total", result.started, result.complete, result.failed(),
                     failure_reasons(result.failures));
}

std::string progress_line(const LoadResult& result, std::uint64_t total) {
  return fmt::format("\r{}/{} connections finished: {}   ", result.finished(), total,
                     summarize(result));
}


}  // namespace ringlinger::tools
