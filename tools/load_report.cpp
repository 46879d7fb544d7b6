#include "load_report.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <fmt/format.h>

#include "cli_units.hpp"
#include "commands.hpp"
#include "percentiles.hpp"

namespace ringlinger::tools {

std::string summarize(const LoadResult& result) {
  std::string text = fmt::format("{} complete, {} failed", result.complete, result.failed());
  std::string reasons;
  for (std::size_t i = 0; i < kFailureCount; ++i) {
    if (result.failures[i] == 0) continue;
    reasons += fmt::format("{}{} {}", reasons.empty() ? "" : ", ", result.failures[i],
                           to_string(static_cast<Failure>(i)));
  }
  if (!reasons.empty()) text += " (" + reasons + ")";
  return text;
}

nlohmann::json to_json(const LoadResult& result) {
  nlohmann::json failures = nlohmann::json::object();
  for (std::size_t i = 0; i < kFailureCount; ++i) {
    failures[std::string(to_string(static_cast<Failure>(i)))] = result.failures[i];
  }
  std::vector<std::uint32_t> latencies = result.latencies_us;
  const Percentiles latency = percentiles_of(latencies);
  const double seconds = std::chrono::duration<double>(result.elapsed).count();
  return {
      {"started", result.started},
      {"complete", result.complete},
      {"failed", result.failed()},
      {"failures", failures},
      {"payload_bytes_expected", result.payload_bytes_expected},
      {"payload_bytes_received", result.payload_bytes_received},
      {"payload_bytes_lost", result.bytes_lost()},
      {"elapsed_seconds", seconds},
      {"connections_per_second", seconds > 0 ? static_cast<double>(result.finished()) / seconds : 0.0},
      {"latency_us", {{"p50", latency.p50}, {"p99", latency.p99}, {"max", latency.max}}},
  };
}

std::string progress_line(const LoadResult& result, std::uint64_t total) {
  return fmt::format("\r{}/{} connections finished: {}   ", result.finished(), total,
                     summarize(result));
}

std::vector<SocketAddress> parse_source_addresses(const std::string& flag, const std::string& text) {
  std::vector<SocketAddress> addresses;
  auto parse_one = [&](const std::string& host) {
    in_addr address{};
    if (inet_pton(AF_INET, host.c_str(), &address) != 1) {
      throw UsageError(flag + ": '" + host + "' is not an IPv4 address");
    }
    return ntohl(address.s_addr);
  };
  auto add = [&](std::uint32_t host_order) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(host_order);
    addresses.emplace_back(reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  };
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const std::size_t dash = item.find('-');
    if (dash == std::string::npos) {
      add(parse_one(item));
    } else {
      const std::uint32_t first = parse_one(item.substr(0, dash));
      const std::uint32_t last = parse_one(item.substr(dash + 1));
      if (last < first || last - first > 4096) {
        throw UsageError(flag + ": '" + item + "' is not a range of at most 4096 addresses");
      }
      for (std::uint32_t host = first; host <= last; ++host) add(host);
    }
    start = comma + 1;
  }
  return addresses;
}

}  // namespace ringlinger::tools
