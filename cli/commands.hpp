// The subcommands of the `ringlinger` program and what they share: flag conversion with clear
// errors (exit code 2) and the drain flags that map onto ringlinger::Config.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "ringlinger/config.hpp"

namespace ringlinger::tools {

// A bad flag value found after parsing; main() prints it and exits with 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Converts a flag's text, or throws UsageError naming the flag.
std::uint64_t duration_flag_ms(std::string_view flag, const std::string& text);
std::uint64_t duration_flag_us(std::string_view flag, const std::string& text);
std::uint64_t bytes_flag(std::string_view flag, const std::string& text);

// The drain and timeout flags of `serve` (and later `bench`), as typed.
struct DrainFlags {
  std::string drain_idle_timeout = "5s";
  std::string drain_timeout = "30s";
  std::string drain_max_bytes = "16MiB";
  std::string send_timeout = "60s";
  std::string orphan_timeout = "10s";
  std::string on_timeout = "close";
  std::string shutdown = "syscall";
  std::uint32_t max_connections = 16384;
  std::string batch_wait = "2ms";
};
void add_drain_flags(CLI::App& command, DrainFlags& flags);
// The Config these flags describe; throws UsageError naming the flag for a bad value.
Config to_config(const DrainFlags& flags);

// A subcommand: its CLI11 node and what to run when it was chosen (returns the exit code).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};
Command add_serve_command(CLI::App& program);
Command add_client_command(CLI::App& program);
Command add_demo_command(CLI::App& program);
Command add_probe_command(CLI::App& program);
Command add_bench_command(CLI::App& program);
Command add_proxy_command(CLI::App& program);

}  // namespace ringlinger::tools
