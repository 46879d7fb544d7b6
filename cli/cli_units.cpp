#include "cli_units.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace ringlinger::tools {
namespace {

// Splits "12.5KiB" into 12.5 and "KiB".
bool split_number(std::string_view text, double& number, std::string_view& unit) {
  std::size_t digits = 0;
  while (digits < text.size() && ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return false;
  const std::string number_text(text.substr(0, digits));
  char* end = nullptr;
  number = std::strtod(number_text.c_str(), &end);
  if (end != number_text.c_str() + number_text.size() || !std::isfinite(number)) return false;
  unit = text.substr(digits);
  return true;
}

// A unit and how many of the base unit (microseconds, bytes) it is.
struct Unit {
  std::string_view name;
  double scale;
};

constexpr Unit kDurationUnits[] = {{"us", 1},    {"ms", 1e3},   {"s", 1e6},
                                   {"m", 60e6},  {"min", 60e6}, {"h", 3600e6}};
constexpr double kKiB = 1024.0, kMiB = kKiB * 1024, kGiB = kMiB * 1024;
constexpr Unit kByteUnits[] = {{"", 1},
                               {"B", 1},
                               {"k", kKiB}, {"K", kKiB}, {"KiB", kKiB}, {"KB", kKiB},
                               {"m", kMiB}, {"M", kMiB}, {"MiB", kMiB}, {"MB", kMiB},
                               {"g", kGiB}, {"G", kGiB}, {"GiB", kGiB}, {"GB", kGiB}};

// How many of the base unit `unit` is, or nullptr if it is none of `units`.
template <std::size_t N>
const double* scale_of(const Unit (&units)[N], std::string_view unit) {
  for (const Unit& known : units) {
    if (known.name == unit) return &known.scale;
  }
  return nullptr;
}

// `value` (of `text`, in the base unit `what`) if it is whole and in range.
Parsed<std::uint64_t> whole(std::string_view text, double value, const char* what) {
  if (value != std::floor(value) || value > 1e15) {
    return "'" + std::string(text) + "' is not a whole number of " + what + " in range";
  }
  return static_cast<std::uint64_t>(value);
}

}  // namespace

Parsed<std::uint64_t> parse_duration_us(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!split_number(text, number, unit)) {
    return "'" + std::string(text) + "' is not a duration (examples: 250ms, 5s, 2m, 1h)";
  }
  if (const double* scale = scale_of(kDurationUnits, unit)) {
    return whole(text, number * *scale, "microseconds");
  }
  if (unit.empty() && number == 0) return std::uint64_t{0};
  if (unit.empty()) {
    return "'" + std::string(text) + "' needs a unit: " + std::string(text) + "ms or " +
           std::string(text) + "s?";
  }
  return "'" + std::string(text) + "': unknown unit '" + std::string(unit) +
         "' (use us, ms, s, m or h)";
}

Parsed<std::uint64_t> parse_duration_ms(std::string_view text) {
  auto parsed = parse_duration_us(text);
  if (auto* error = std::get_if<std::string>(&parsed)) return *error;
  const std::uint64_t microseconds = std::get<std::uint64_t>(parsed);
  if (microseconds % 1000 != 0) {
    return "'" + std::string(text) + "' is not a whole number of milliseconds";
  }
  return microseconds / 1000;
}

Parsed<std::uint64_t> parse_bytes(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!split_number(text, number, unit)) {
    return "'" + std::string(text) + "' is not a size (examples: 16384, 16KiB, 1MiB)";
  }
  if (const double* scale = scale_of(kByteUnits, unit)) return whole(text, number * *scale, "bytes");
  return "'" + std::string(text) + "': unknown unit '" + std::string(unit) +
         "' (use B, KiB, MiB or GiB)";
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof(text), value == std::floor(value) ? "%.0f %s" : "%.1f %s", value,
                  kUnits[unit]);
  }
  return text;
}

std::string format_ms(std::uint64_t milliseconds) {
  char text[32];
  if (milliseconds < 1000) {
    std::snprintf(text, sizeof(text), "%llu ms", static_cast<unsigned long long>(milliseconds));
  } else {
    std::snprintf(text, sizeof(text), "%g s", static_cast<double>(milliseconds) / 1000);
  }
  return text;
}

}  // namespace ringlinger::tools
