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

}  // namespace

Parsed<std::uint64_t> parse_duration_us(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!split_number(text, number, unit)) {
    return "'" + std::string(text) + "' is not a duration (examples: 250ms, 5s, 2m)";
  }
  double microseconds = 0;
  if (unit == "us") {
    microseconds = number;
  } else if (unit == "ms") {
    microseconds = number * 1e3;
  } else if (unit == "s") {
    microseconds = number * 1e6;
  } else if (unit == "m" || unit == "min") {
    microseconds = number * 60e6;
  } else if (unit.empty() && number == 0) {
    microseconds = 0;
  } else if (unit.empty()) {
    return "'" + std::string(text) + "' needs a unit: " + std::string(text) + "ms or " +
           std::string(text) + "s?";
  } else {
    return "'" + std::string(text) + "': unknown unit '" + std::string(unit) +
           "' (use us, ms, s or m)";
  }
  if (microseconds != std::floor(microseconds) || microseconds > 1e15) {
    return "'" + std::string(text) + "' is not a whole number of microseconds in range";
  }
  return static_cast<std::uint64_t>(microseconds);
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
  double multiplier = 0;
  if (unit.empty() || unit == "B") {
    multiplier = 1;
  } else if (unit == "k" || unit == "K" || unit == "KiB" || unit == "KB") {
    multiplier = 1024.0;
  } else if (unit == "m" || unit == "M" || unit == "MiB" || unit == "MB") {
    multiplier = 1024.0 * 1024;
  } else if (unit == "g" || unit == "G" || unit == "GiB" || unit == "GB") {
    multiplier = 1024.0 * 1024 * 1024;
  } else {
    return "'" + std::string(text) + "': unknown unit '" + std::string(unit) +
           "' (use B, KiB, MiB or GiB)";
  }
  const double bytes = number * multiplier;
  if (bytes != std::floor(bytes) || bytes > 1e15) {
    return "'" + std::string(text) + "' is not a whole number of bytes in range";
  }
  return static_cast<std::uint64_t>(bytes);
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
