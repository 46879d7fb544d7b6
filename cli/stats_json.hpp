// A Manager's Stats and Config as JSON, as `serve --json` and `proxy --json` write them.
#pragma once

#include <array>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "ringlinger/config.hpp"
#include "ringlinger/outcome.hpp"
#include "ringlinger/stats.hpp"

namespace ringlinger::tools {

// {"clean": N, "peer_reset": N, ...}: every outcome by name.
nlohmann::json outcomes_json(const std::array<std::uint64_t, kOutcomeCount>& counts);
// Every counter and gauge of `stats`, by the field's name.
nlohmann::json stats_json(const Stats& stats);
// What the command line sets in `config`, by the field's name (durations in their unit: _ms, _us).
nlohmann::json config_json(const Config& config);

}  // namespace ringlinger::tools
