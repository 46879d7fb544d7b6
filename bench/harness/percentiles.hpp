// Percentiles of a sample of latencies (microseconds).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ringlinger::tools {

struct Percentiles {
  std::uint32_t p50 = 0;
  std::uint32_t p99 = 0;
  std::uint32_t max = 0;
  std::uint64_t count = 0;
};

// Sorts `samples` in place and reads the percentiles off it.
inline Percentiles percentiles_of(std::vector<std::uint32_t>& samples) {
  Percentiles result;
  result.count = samples.size();
  if (samples.empty()) return result;
  std::sort(samples.begin(), samples.end());
  auto at = [&](double fraction) {
    const auto index = static_cast<std::size_t>(fraction * static_cast<double>(samples.size() - 1));
    return samples[index];
  };
  result.p50 = at(0.50);
  result.p99 = at(0.99);
  result.max = samples.back();
  return result;
}

}  // namespace ringlinger::tools
