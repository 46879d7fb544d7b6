// Flag conversion shared by the subcommands.
#include <charconv>
#include <limits>
#include <string>
#include <utility>

#include "cli_units.hpp"
#include "commands.hpp"

namespace ringlinger::tools {

std::uint64_t duration_flag_ms(std::string_view flag, const std::string& text) {
  auto parsed = parse_duration_ms(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    throw UsageError(std::string(flag) + ": " + *error);
  }
  return std::get<std::uint64_t>(parsed);
}

std::uint64_t duration_flag_us(std::string_view flag, const std::string& text) {
  auto parsed = parse_duration_us(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    throw UsageError(std::string(flag) + ": " + *error);
  }
  return std::get<std::uint64_t>(parsed);
}

std::uint64_t bytes_flag(std::string_view flag, const std::string& text) {
  auto parsed = parse_bytes(text);
  if (auto* error = std::get_if<std::string>(&parsed)) {
    throw UsageError(std::string(flag) + ": " + *error);
  }
  return std::get<std::uint64_t>(parsed);
}

std::uint64_t bytes_flag(std::string_view flag, const std::string& text, std::uint64_t max,
                         std::string_view why) {
  const std::uint64_t bytes = bytes_flag(flag, text);
  if (bytes > max) {
    throw UsageError(std::string(flag) + ": at most " + bytes_flag_text(max) + " " +
                     std::string(why) + " (got " + text + ")");
  }
  return bytes;
}

std::uint64_t response_bytes_flag(const std::string& text, bool sendfile) {
  if (sendfile) return bytes_flag("--response-bytes", text, kMaxBodyInFile, "with --sendfile (a file in $TMPDIR)");
  return bytes_flag("--response-bytes", text, kMaxBodyInMemory,
                    "in memory; --sendfile (uring, epoll) takes up to " + bytes_flag_text(kMaxBodyInFile));
}

std::uint64_t request_body_flag(const std::string& text) {
  return bytes_flag("--body-bytes", text, kMaxBodyInMemory, "(the request is built in memory)");
}

FlagCheck whole_number(std::uint64_t min, std::uint64_t max, std::string_view why) {
  const std::string range = std::to_string(min) + " to " + std::to_string(max);
  return FlagCheck{
      [min, max, range, why = std::string(why)](const std::string& text) -> std::string {
        std::uint64_t value = 0;
        const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
        const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
        const bool leading_zero = text.size() > 1 && text.front() == '0';  // CLI11: octal
        if (!digits || error != std::errc() || end != text.data() + text.size() || value < min ||
            value > max || leading_zero) {
          std::string notes = why;
          if (leading_zero) notes += (notes.empty() ? "" : "; ") + std::string("no leading zeros");
          return "'" + text + "' is not a whole number from " + range +
                 (notes.empty() ? "" : " (" + notes + ")");
        }
        return {};
      },
      "whole number"};
}

std::string duration_flag_text_ms(std::uint64_t milliseconds) {
  if (milliseconds != 0 && milliseconds % 1000 == 0) return std::to_string(milliseconds / 1000) + "s";
  return std::to_string(milliseconds) + "ms";
}

std::string duration_flag_text_us(std::uint64_t microseconds) {
  if (microseconds % 1000 == 0) return duration_flag_text_ms(microseconds / 1000);
  return std::to_string(microseconds) + "us";
}

std::string bytes_flag_text(std::uint64_t bytes) {
  static constexpr std::pair<std::uint64_t, std::string_view> kUnits[] = {
      {std::uint64_t{1} << 30, "GiB"}, {std::uint64_t{1} << 20, "MiB"}, {std::uint64_t{1} << 10, "KiB"}};
  for (const auto& [size, unit] : kUnits) {
    if (bytes != 0 && bytes % size == 0) return std::to_string(bytes / size) + std::string(unit);
  }
  return std::to_string(bytes);
}

void add_drain_flags(CommandFlags command, DrainFlags& flags) {
  command.add_option("--drain-idle-timeout", flags.drain_idle_timeout,
                     "Longest time the peer may be idle while draining: idle = no byte of ours "
                     "acknowledged and none of its bytes received for this long (nginx "
                     "lingering_timeout, which counts reads only)").type_name("DURATION")
      .capture_default_str().group("Graceful close");
  command.add_option("--drain-timeout", flags.drain_timeout,
                     "Longest time from shutdown(SHUT_WR) to close, progress or not (nginx "
                     "lingering_time)").type_name("DURATION")
      .capture_default_str().group("Graceful close");
  command.add_option("--drain-max-bytes", flags.drain_max_bytes,
                     "Most input discarded after the response before giving up; 0 = unlimited").type_name("SIZE")
      .capture_default_str().group("Graceful close");
  command.add_option("--send-timeout", flags.send_timeout,
                     "Longest time the peer may be idle while our bytes wait to be sent: idle = "
                     "no send completed, no byte acknowledged and none received for this long "
                     "(nginx send_timeout)").type_name("DURATION")
      .capture_default_str().group("Graceful close");
  command.add_option("--orphan-timeout", flags.orphan_timeout,
                     "After a timeout closes with FIN, how long the kernel may keep retrying what "
                     "is still queued (TCP_USER_TIMEOUT); 0 = the kernel's default (minutes)")
      .type_name("DURATION").capture_default_str().group("Graceful close");
  command.add_option("--on-timeout", flags.on_timeout,
                     "On a send or drain timeout: close (FIN, or RST if input is unread) or "
                     "reset (always RST, frees the socket at once)")
      .one_of({"close", "reset"}).capture_default_str().group("Graceful close");
  command.add_option("--shutdown", flags.shutdown,
                     "How SHUT_WR is issued: syscall (shutdown(2), inline) or ring "
                     "(IORING_OP_SHUTDOWN, runs on an io-wq worker thread)")
      .one_of({"syscall", "ring"}).capture_default_str().group("Graceful close");
  command.add_option("--max-connections", flags.max_connections,
                     "Most connections at once, in total: with --threads, divided among the "
                     "threads (RLIMIT_NOFILE bounds it too)")
      .check(whole_number(1, std::numeric_limits<std::uint32_t>::max())).type_name("N")
      .capture_default_str().group("Graceful close");
  command.add_option("--batch-wait", flags.batch_wait,
                     "Let the kernel gather completions this long before waking the loop "
                     "(fewer syscalls per close, at most this much added latency); 0 = off").type_name("DURATION")
      .capture_default_str().group("Ring");
}

Config to_config(const DrainFlags& flags) {
  Config config;
  auto to_ms = [](std::string_view flag, const std::string& text) {
    const std::uint64_t ms = duration_flag_ms(flag, text);
    if (ms == 0 || ms > 86'400'000) {
      throw UsageError(std::string(flag) + ": must be between 1ms and 24h (got " + text + ")");
    }
    return static_cast<std::uint32_t>(ms);
  };
  config.drain_idle_timeout_ms = to_ms("--drain-idle-timeout", flags.drain_idle_timeout);
  config.drain_timeout_ms = to_ms("--drain-timeout", flags.drain_timeout);
  config.send_timeout_ms = to_ms("--send-timeout", flags.send_timeout);
  const std::uint64_t orphan_ms = duration_flag_ms("--orphan-timeout", flags.orphan_timeout);
  if (orphan_ms > 86'400'000) {
    throw UsageError("--orphan-timeout: must be at most 24h, or 0 (got " + flags.orphan_timeout + ")");
  }
  config.orphan_timeout_ms = static_cast<std::uint32_t>(orphan_ms);
  config.drain_max_bytes = bytes_flag("--drain-max-bytes", flags.drain_max_bytes);
  config.on_timeout = flags.on_timeout == "reset" ? OnTimeout::reset : OnTimeout::close;
  config.shutdown_mode = flags.shutdown == "ring" ? ShutdownMode::ring : ShutdownMode::syscall;
  config.max_connections = flags.max_connections;
  const std::uint64_t batch_wait_us = duration_flag_us("--batch-wait", flags.batch_wait);
  if (batch_wait_us > 100'000) throw UsageError("--batch-wait: at most 100ms (got " + flags.batch_wait + ")");
  config.batch_wait_us = static_cast<std::uint32_t>(batch_wait_us);
  if (std::string error = config.validate(); !error.empty()) {
    // Name the flag, not the field.
    static const std::pair<std::string_view, std::string_view> kFlagOfField[] = {
        {"max_connections", "--max-connections"},
        {"drain_max_bytes", "--drain-max-bytes"},
    };
    for (const auto& [field, flag] : kFlagOfField) {
      if (error.starts_with(field)) throw UsageError(std::string(flag) + ": " + error);
    }
    throw UsageError(error);
  }
  return config;
}

}  // namespace ringlinger::tools
