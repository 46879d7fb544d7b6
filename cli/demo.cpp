// `ringlinger demo`: the seed scenario, side by side. Starts `ringlinger serve` in a child
// process (pinned to CPU 0), drives it from this process (CPU 1) with clients that post a body
// the server never reads and read the response late, then does the same against a plain close()
// server, and prints what each lost.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "cli_units.hpp"
#include "commands.hpp"
#include "load_report.hpp"
#include "loadgen.hpp"

namespace ringlinger::tools {
namespace {

struct DemoFlags {
  std::uint64_t connections = 5000;
  std::uint32_t concurrency = 5000;
  std::string response_bytes = "256KiB";
  std::string body_bytes = "64KiB";
  std::string read_delay = "50ms";
  std::string json_path;
};

std::string temporary_path() {
  char path[] = "/tmp/ringlinger-demo-XXXXXX";
  const int fd = mkstemp(path);
  if (fd >= 0) ::close(fd);
  return path;
}

struct Run {
  std::string label;
  LoadResult load;
  nlohmann::json server;
};

Run run_against(const std::string& label, const std::string& backend, const LoadOptions& base,
                const std::string& response_bytes_text) {
  const std::string json_path = temporary_path();
  Run run{label, {}, {}};
  {
    ChildProcess server({"/proc/self/exe",
                         {"serve", "--listen", "127.0.0.1:0", "--backend", backend,
                          "--response-bytes", response_bytes_text, "--quiet", "--json", json_path,
                          "--max-connections", "16384"},
                         0, true});
    const auto address = server.read_listening_address(std::chrono::seconds(10));
    if (!address) throw std::runtime_error("`ringlinger serve --backend " + backend + "` did not start");
    LoadOptions options = base;
    options.target = *address;
    fmt::print(stderr, "  {}: {} connections to {} ...\n", label, options.connections,
               options.target.to_string());
    run.load = run_load(options);
    server.terminate(std::chrono::seconds(30));
  }
  std::ifstream json_file(json_path);
  if (json_file) run.server = nlohmann::json::parse(json_file, nullptr, false);
  std::remove(json_path.c_str());
  return run;
}

std::string loss_text(const LoadResult& result) {
  const double share = result.payload_bytes_expected == 0
                           ? 0.0
                           : 100.0 * static_cast<double>(result.bytes_lost()) /
                                 static_cast<double>(result.payload_bytes_expected);
  return fmt::format("{} of {} ({:.1f}%)", format_bytes(result.bytes_lost()),
                     format_bytes(result.payload_bytes_expected), share);
}

int run_demo(const DemoFlags& flags) {
  LoadOptions options;
  options.connections = flags.connections;
  options.concurrency = flags.concurrency;
  options.response_bytes = response_bytes_flag(flags.response_bytes, false);
  options.body_bytes = request_body_flag(flags.body_bytes);
  options.read_delay_ms = static_cast<std::uint32_t>(duration_flag_ms("--read-delay", flags.read_delay));
  options.timeout_ms = 60'000;
  if (options.connections == 0 || options.concurrency == 0) {
    throw UsageError("--connections and --concurrency must be at least 1");
  }
  if (options.concurrency > 9000) {
    throw UsageError("--concurrency: at most 9000 (RLIMIT_NOFILE is shared by the two servers' "
                     "clients in this process)");
  }
  pin_to_cpu(1);

  fmt::print("ringlinger demo: the early-response case\n");
  fmt::print("  {} connections, {} at a time, over loopback. Each client posts a {} body the "
             "server never reads,\n  starts reading {} ms after connecting, and must receive "
             "the whole {} response AND a clean EOF.\n\n",
             options.connections, options.concurrency, format_bytes(options.body_bytes),
             options.read_delay_ms, format_bytes(options.response_bytes));
  std::fflush(stdout);
  const Run graceful =
      run_against("ringlinger serve (graceful close)", "uring", options, flags.response_bytes);
  const Run naive = run_against("plain close() server", "naive", options, flags.response_bytes);

  fmt::print("\n{:<36} {:>13} {:>8}   {}\n", "server", "complete", "failed", "response bytes lost");
  for (const Run* run : {&graceful, &naive}) {
    fmt::print("{:<36} {:>13} {:>8}   {}\n", run->label,
               fmt::format("{}/{}", run->load.complete, run->load.finished()), run->load.failed(),
               loss_text(run->load));
  }
  fmt::print("\nplain close(): {}\n", summarize(naive.load));
  if (graceful.server.is_object() && graceful.server.contains("stats")) {
    const auto& stats = graceful.server["stats"];
    const double closed = stats.value("connections_closed", 0.0);
    std::string outcomes;
    for (const auto& [name, count] : stats["outcomes"].items()) {
      if (count.get<std::uint64_t>() == 0) continue;
      outcomes += fmt::format("{}{} {}", outcomes.empty() ? "" : ", ", count.get<std::uint64_t>(), name);
    }
    fmt::print("ringlinger: outcomes {}; {} of unread request bodies discarded; {} io_uring_enter "
               "calls for {} closes ({:.3f} per close)\n",
               outcomes, format_bytes(stats.value("bytes_discarded", std::uint64_t{0})),
               stats.value("enter_calls", 0), stats.value("connections_closed", 0),
               closed > 0 ? stats.value("enter_calls", 0.0) / closed : 0.0);
    const auto& latency = graceful.server["close_latency_us"];
    fmt::print("ringlinger close latency (close requested -> fd closed): p50 {} us, p99 {} us, "
               "max {} us\n",
               latency.value("p50", 0), latency.value("p99", 0), latency.value("max", 0));
  }
  if (!flags.json_path.empty()) {
    std::ofstream(flags.json_path)
        << nlohmann::json{{"graceful", {{"client", to_json(graceful.load)}, {"server", graceful.server}}},
                          {"plain_close", {{"client", to_json(naive.load)}, {"server", naive.server}}}}
               .dump(2)
        << "\n";
  }
  // The demo succeeds when the graceful server lost nothing.
  return graceful.load.failed() == 0 && graceful.load.complete == options.connections ? 0 : 1;
}

}  // namespace

Command add_demo_command(CLI::App& program) {
  auto flags = std::make_shared<DemoFlags>();
  CommandFlags app = add_subcommand(
      program, "demo",
      "Runs `serve` against clients that post a body it never reads and read late, then a plain "
      "close() server on the same workload, and shows what each lost.");
  app.add_option("--connections", flags->connections, "Total connections per server")
      .check(whole_number(1, kMaxConnections)).type_name("N").capture_default_str();
  app.add_option("--concurrency", flags->concurrency, "Connections open at once")
      .check(whole_number(1, UINT32_MAX)).type_name("N").capture_default_str();
  app.add_option("--response-bytes", flags->response_bytes, "Response body size (at most 256MiB, built in memory)").type_name("SIZE").capture_default_str();
  app.add_option("--body-bytes", flags->body_bytes, "Unread request body size (at most 256MiB)").type_name("SIZE").capture_default_str();
  app.add_option("--read-delay", flags->read_delay, "How late clients start reading").type_name("DURATION").capture_default_str();
  app.add_option("--json", flags->json_path, "Write both runs' figures to FILE").type_name("FILE");
  return {&app.app(), [flags] { return run_demo(*flags); }};
}

}  // namespace ringlinger::tools
