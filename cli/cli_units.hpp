// Command line values with units: durations ("250ms", "5s", "2m", "1h") and sizes ("16384", "16KiB",
// "1MiB", "16k"). Each parser returns the value or an error message for the user.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace ringlinger::tools {

// A value, or a message saying what is wrong with the text.
template <class T>
using Parsed = std::variant<T, std::string>;

// "250ms", "5s", "1.5s", "2m", "1h", "0": milliseconds. A bare number other than 0 is refused, because
// "30" could mean seconds (nginx) or milliseconds.
Parsed<std::uint64_t> parse_duration_ms(std::string_view text);
// The same in microseconds, also accepting "us": "200us", "1.5ms", "2s".
Parsed<std::uint64_t> parse_duration_us(std::string_view text);
// "16384", "16k", "16KiB", "1M", "1MiB", "1G": bytes (k/M/G are binary: 1024-based).
Parsed<std::uint64_t> parse_bytes(std::string_view text);

// 1536 -> "1.5 KiB"; 512 -> "512 B".
std::string format_bytes(std::uint64_t bytes);
// 1500 -> "1.5 s"; 250 -> "250 ms".
std::string format_ms(std::uint64_t milliseconds);

}  // namespace ringlinger::tools
