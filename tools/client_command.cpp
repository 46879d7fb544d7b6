// `ringlinger client`: the verifying load generator. Every connection must deliver the exact
// response AND a clean EOF; anything else is counted as a failure with its reason.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include <fmt/format.h>

#include "cli_units.hpp"
#include "commands.hpp"
#include "load_report.hpp"
#include "loadgen.hpp"
#include "percentiles.hpp"

namespace ringlinger::tools {
namespace {

struct ClientFlags {
  std::string connect = "127.0.0.1:8080";
  std::uint64_t connections = 1000;
  std::uint32_t concurrency = 100;
  std::string response_bytes = "16KiB";
  std::string body_bytes = "0";
  std::string read_delay = "0";
  std::string timeout = "30s";
  std::string duration = "0";
  std::string source_addresses;
  std::string json_path;
};

int run_client(const ClientFlags& flags) {
  LoadOptions options;
  auto target = SocketAddress::parse(flags.connect);
  if (!target) throw UsageError("--connect: '" + flags.connect + "' is not an address like 127.0.0.1:8080");
  options.target = *target;
  if (!flags.source_addresses.empty()) {
    options.sources = parse_source_addresses("--source-addrs", flags.source_addresses);
  }
  if (flags.connections == 0) throw UsageError("--connections: must be at least 1");
  if (flags.concurrency == 0) throw UsageError("--concurrency: must be at least 1");
  options.connections = flags.connections;
  options.concurrency = flags.concurrency;
  options.response_bytes = bytes_flag("--response-bytes", flags.response_bytes);
  options.body_bytes = bytes_flag("--body-bytes", flags.body_bytes);
  options.read_delay_ms = static_cast<std::uint32_t>(duration_flag_ms("--read-delay", flags.read_delay));
  options.timeout_ms = static_cast<std::uint32_t>(duration_flag_ms("--timeout", flags.timeout));
  options.duration_ms = static_cast<std::uint32_t>(duration_flag_ms("--duration", flags.duration));
  if (options.timeout_ms == 0) throw UsageError("--timeout: must be more than 0");
  if (isatty(STDERR_FILENO)) {
    options.progress = [total = options.connections](const LoadResult& result) {
      fmt::print(stderr, "{}", progress_line(result, total));
    };
  }
  const LoadResult result = run_load(options);
  if (options.progress) fmt::print(stderr, "\n");

  std::vector<std::uint32_t> latencies = result.latencies_us;
  const Percentiles latency = percentiles_of(latencies);
  const double seconds = std::chrono::duration<double>(result.elapsed).count();
  fmt::print("{} connections to {} in {:.2f} s ({:.0f}/s): {}\n", result.finished(),
             options.target.to_string(), seconds,
             seconds > 0 ? static_cast<double>(result.finished()) / seconds : 0.0, summarize(result));
  fmt::print("response payload: {} expected, {} received intact, {} lost\n",
             format_bytes(result.payload_bytes_expected), format_bytes(result.payload_bytes_received),
             format_bytes(result.bytes_lost()));
  if (latency.count > 0) {
    fmt::print("latency (connect -> EOF): p50 {} us, p99 {} us, max {} us\n", latency.p50,
               latency.p99, latency.max);
  }
  if (!flags.json_path.empty()) std::ofstream(flags.json_path) << to_json(result).dump(2) << "\n";
  return result.failed() == 0 ? 0 : 1;
}

}  // namespace

Command add_client_command(CLI::App& program) {
  auto flags = std::make_shared<ClientFlags>();
  CLI::App* app = program.add_subcommand(
      "client",
      "Verifying load generator: each connection sends a request (and an optional body the "
      "server need not read), reads the response, and must get every byte AND a clean EOF. "
      "Exit code 0 when every connection was complete, 1 otherwise.");
  app->add_option("--connect", flags->connect, "Server address")->type_name("ADDRESS")->capture_default_str();
  app->add_option("--connections", flags->connections, "Total connections")->capture_default_str();
  app->add_option("--concurrency", flags->concurrency, "Connections open at once")->capture_default_str();
  app->add_option("--response-bytes", flags->response_bytes, "Expected response body size")->type_name("SIZE")
      ->capture_default_str();
  app->add_option("--body-bytes", flags->body_bytes, "Request body size (POST when > 0)")->type_name("SIZE")
      ->capture_default_str();
  app->add_option("--read-delay", flags->read_delay, "Start reading this long after connecting")->type_name("DURATION")
      ->capture_default_str();
  app->add_option("--timeout", flags->timeout, "Per connection limit, connect to EOF")->type_name("DURATION")
      ->capture_default_str();
  app->add_option("--duration", flags->duration, "Stop starting connections after this long (0: no limit)")->type_name("DURATION")
      ->capture_default_str();
  app->add_option("--source-addrs", flags->source_addresses,
                  "Local addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9")->type_name("ADDRESSES");
  app->add_option("--json", flags->json_path, "Write every figure to FILE")->type_name("FILE");
  return {app, [flags] { return run_client(*flags); }};
}

}  // namespace ringlinger::tools
