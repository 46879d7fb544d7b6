// `ringlinger client`: the verifying load generator. Every connection must get what its peer type
// should get (for all but reset peers: the exact response AND a clean EOF); anything else is
// counted as a failure with its reason.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <memory>
#include <variant>

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
  std::string peers = "cooperative=100";
  std::string never_fin_hold = "6s";
  std::string flood_limit = "35s";
  std::string reset_after = "4KiB";
  std::string slow_reader_bytes = "512";
  std::string slow_reader_interval = "10ms";
};

// Parses "127.0.0.2-127.0.0.9" or "127.0.0.2,127.0.0.3" (IPv4); throws UsageError.
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

// A flag value that LoadOptions keeps in 32 bits; throws UsageError naming the flag if larger.
std::uint32_t to_u32(std::string_view flag, std::uint64_t value, std::string_view unit) {
  if (value > std::numeric_limits<std::uint32_t>::max()) {
    throw UsageError(fmt::format("{}: at most {} {}", flag, std::numeric_limits<std::uint32_t>::max(),
                                 unit));
  }
  return static_cast<std::uint32_t>(value);
}
std::uint32_t duration_flag_ms_u32(std::string_view flag, const std::string& text) {
  return to_u32(flag, duration_flag_ms(flag, text), "ms");
}
std::uint32_t bytes_flag_u32(std::string_view flag, const std::string& text) {
  return to_u32(flag, bytes_flag(flag, text), "bytes");
}

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
  options.body_bytes = request_body_flag(flags.body_bytes);
  options.read_delay_ms = duration_flag_ms_u32("--read-delay", flags.read_delay);
  options.timeout_ms = duration_flag_ms_u32("--timeout", flags.timeout);
  options.duration_ms = duration_flag_ms_u32("--duration", flags.duration);
  if (options.timeout_ms == 0) throw UsageError("--timeout: must be more than 0");
  auto peers = parse_peer_mix(flags.peers);
  if (auto* error = std::get_if<std::string>(&peers)) throw UsageError("--peers: " + *error);
  options.peers = std::get<PeerMix>(peers);
  options.never_fin_hold_ms = duration_flag_ms_u32("--never-fin-hold", flags.never_fin_hold);
  options.flood_limit_ms = duration_flag_ms_u32("--flood-limit", flags.flood_limit);
  options.reset_after_bytes = bytes_flag_u32("--reset-after", flags.reset_after);
  options.slow_reader_bytes = bytes_flag_u32("--slow-reader-bytes", flags.slow_reader_bytes);
  options.slow_reader_interval_ms =
      duration_flag_ms_u32("--slow-reader-interval", flags.slow_reader_interval);
  if (options.slow_reader_bytes == 0) throw UsageError("--slow-reader-bytes: must be at least 1");
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
  if (peer_types_used(result) > 1) fmt::print("\n{}", peer_table(result));
  if (!flags.json_path.empty()) std::ofstream(flags.json_path) << to_json(result).dump(2) << "\n";
  // Complete means "got what its type should get", for every type.
  return result.failed() == 0 && result.complete == result.started ? 0 : 1;
}

}  // namespace

Command add_client_command(CLI::App& program) {
  auto flags = std::make_shared<ClientFlags>();
  CommandFlags app = add_subcommand(
      program, "client",
      "Verifying load generator: each connection sends a request (and an optional body the "
      "server need not read), reads the response, and must get every byte AND a clean EOF. "
      "With --peers, some connections behave as hostile or unusual peers (never-fin, flood, "
      "reset, slow-reader, half-close) and are judged by what their type should get. "
      "Exit code 0 when every connection got that, 1 otherwise.");
  app.add_option("--connect", flags->connect, "Server address").type_name("ADDRESS").capture_default_str();
  app.add_option("--connections", flags->connections, "Total connections")
      .check(whole_number(1, kMaxConnections)).type_name("N").capture_default_str();
  app.add_option("--concurrency", flags->concurrency, "Connections open at once")
      .check(whole_number(1, UINT32_MAX)).type_name("N").capture_default_str();
  app.add_option("--response-bytes", flags->response_bytes, "Expected response body size").type_name("SIZE")
      .capture_default_str();
  app.add_option("--body-bytes", flags->body_bytes, "Request body size (POST when > 0; at most 256MiB, built in memory)").type_name("SIZE")
      .capture_default_str();
  app.add_option("--read-delay", flags->read_delay, "Start reading this long after connecting").type_name("DURATION")
      .capture_default_str();
  app.add_option("--timeout", flags->timeout, "Per connection limit, connect to EOF").type_name("DURATION")
      .capture_default_str();
  app.add_option("--duration", flags->duration, "Stop starting connections after this long (0: no limit)").type_name("DURATION")
      .capture_default_str();
  app.add_option("--source-addrs", flags->source_addresses,
                  "Local addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9").type_name("ADDRESSES");
  app.add_option("--json", flags->json_path, "Write every figure to FILE").type_name("FILE");
  app.add_option("--peers", flags->peers,
                  "Peer types and weights: cooperative, never-fin, flood, reset, slow-reader, "
                  "half-close, e.g. cooperative=90,never-fin=2,flood=2,reset=2,slow-reader=2,half-close=2")
      .type_name("MIX").capture_default_str().group("Peer types");
  app.add_option("--never-fin-hold", flags->never_fin_hold,
                  "never-fin: keep the socket open this long after the EOF, then reset")
      .type_name("DURATION").capture_default_str().group("Peer types");
  app.add_option("--flood-limit", flags->flood_limit,
                  "flood: stop flooding this long after connecting at the latest")
      .type_name("DURATION").capture_default_str().group("Peer types");
  app.add_option("--reset-after", flags->reset_after,
                  "reset: payload bytes to read before closing with RST")
      .type_name("SIZE").capture_default_str().group("Peer types");
  app.add_option("--slow-reader-bytes", flags->slow_reader_bytes, "slow-reader: bytes per read")
      .type_name("SIZE").capture_default_str().group("Peer types");
  app.add_option("--slow-reader-interval", flags->slow_reader_interval,
                  "slow-reader: pause between two reads")
      .type_name("DURATION").capture_default_str().group("Peer types");
  return {&app.app(), [flags] { return run_client(*flags); }};
}

}  // namespace ringlinger::tools
