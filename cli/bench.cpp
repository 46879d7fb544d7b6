// `ringlinger bench`: the same workload against several server backends, runs alternating so the
// comparison holds on a noisy machine. Each run starts `ringlinger serve --backend X` in its own
// process on one CPU and `ringlinger client` in another process on the other CPU, over loopback,
// and collects what both saw: every connection verified by the client (exact bytes AND a clean
// EOF, judged per peer type), and the server's CPU, system calls, latency, outcomes and memory.
#include <signal.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "cli_units.hpp"
#include "commands.hpp"
#include "loadgen.hpp"
#include "nginx_server.hpp"

namespace ringlinger::tools {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct BenchFlags {
  std::string backends = "uring,epoll,blocking,naive";
  std::uint64_t connections = 20000;
  std::string concurrency = "1000";
  std::uint32_t runs = 3;
  std::string response_bytes = "16KiB";
  std::string body_bytes = "16KiB";
  std::string read_delay = "0";
  std::string timeout = "30s";
  std::string duration = "0";
  std::string source_addresses;
  std::string peers = "cooperative=100";
  std::string never_fin_hold;  // default: drain idle timeout + 1 s
  std::string json_path;
  std::string plot_path;
  bool no_perf = false;
  bool sendfile = false;
  std::string defer_accept = "on";  // as serve's
  DrainFlags drain;
};

const std::vector<std::string> kBackends = {"uring", "epoll", "blocking", "naive", "nginx", "uring-metrics"};

// uring-metrics: serve --backend uring with a --metrics page nobody scrapes, to show what the
// page costs the connections' thread (nothing it should: docs/PERFORMANCE.md).
constexpr std::string_view kWithMetrics = "-metrics";

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

std::string temporary_path(const char* what) {
  std::string path = std::string("/tmp/ringlinger-bench-") + what + "-XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd >= 0) ::close(fd);
  return path;
}

json read_json(const std::string& path) {
  std::ifstream file(path);
  json value = json::parse(file, nullptr, false);
  std::remove(path.c_str());
  return value.is_discarded() ? json::object() : value;
}

// /proc/net/sockstat's TCP line, sampled while a run goes on (system-wide: client and server).
struct SocketMemory {
  std::uint64_t peak_pages = 0;   // "mem": pages of socket buffers
  std::uint64_t peak_orphans = 0;
  std::uint64_t time_wait_at_end = 0;

  static std::map<std::string, std::uint64_t> read() {
    std::ifstream file("/proc/net/sockstat");
    std::string line;
    std::map<std::string, std::uint64_t> values;
    while (std::getline(file, line)) {
      if (line.rfind("TCP:", 0) != 0) continue;
      std::stringstream stream(line.substr(4));
      std::string key;
      std::uint64_t value = 0;
      while (stream >> key >> value) values[key] = value;
    }
    return values;
  }
};

// Samples /proc/net/sockstat every 50 ms until destroyed.
class SocketMemorySampler {
 public:
  SocketMemorySampler() : thread_([this] { sample(); }) {}
  ~SocketMemorySampler() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  SocketMemory result() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
    result_.time_wait_at_end = SocketMemory::read()["tw"];
    return result_;
  }

 private:
  void sample() {
    while (!done_) {
      auto values = SocketMemory::read();
      result_.peak_pages = std::max(result_.peak_pages, values["mem"]);
      result_.peak_orphans = std::max(result_.peak_orphans, values["orphan"]);
      std::this_thread::sleep_for(50ms);
    }
  }
  std::atomic<bool> done_{false};
  SocketMemory result_;
  std::thread thread_;
};

bool perf_usable() {
  static const bool usable = [] {
    ChildProcess probe({"/bin/sh",
                        {"-c", "perf stat -x, -e raw_syscalls:sys_enter -- true >/dev/null 2>&1"},
                        -1,
                        false});
    return probe.wait(10s) == 0;
  }();
  return usable;
}

// One run: one backend, one concurrency level.
struct RunResult {
  std::string backend;
  std::uint32_t concurrency = 0;
  std::uint32_t run = 0;
  json client;  // the client's report
  json server;  // the server's report
  std::map<std::string, double> perf;  // event -> count over the run
  SocketMemory sockets;
};

double number(const json& value, const char* key) {
  return value.contains(key) && value[key].is_number() ? value[key].get<double>() : 0.0;
}

// The figures of one run, per close.
struct Figures {
  double connections_per_second = 0;
  double user_us = 0;
  double system_us = 0;
  double syscalls = 0;           // perf raw_syscalls:sys_enter when available, else counted
  double syscalls_counted = -1;  // the library's own count (uring, epoll)
  double enter_calls = -1;
  double context_switches = 0;
  double punts = -1;
  double latency_p50_ms = 0, latency_p99_ms = 0, latency_max_ms = 0;
  double rss_peak_mib = 0;
  double rss_growth_mib = 0;          // peak RSS - RSS when the server started serving
  double peak_live_connections = 0;   // the most connections the server held at once
  double bytes_per_connection = -1;
  double socket_memory_mib = 0;
  std::uint64_t complete = 0, failed = 0, lost = 0, closed = 0;
};

Figures figures_of(const RunResult& run) {
  Figures figures;
  const json& client = run.client;
  const json& server = run.server;
  const json stats = server.value("stats", json::object());
  const json cpu = server.value("cpu", json::object());
  const double closed = std::max(1.0, number(stats, "connections_closed"));
  figures.closed = static_cast<std::uint64_t>(number(stats, "connections_closed"));
  figures.connections_per_second = number(client, "connections_per_second");
  figures.user_us = number(cpu, "user_us") / closed;
  figures.system_us = number(cpu, "system_us") / closed;
  figures.context_switches =
      (number(cpu, "voluntary_context_switches") + number(cpu, "involuntary_context_switches")) /
      closed;
  if (stats.contains("syscalls")) figures.syscalls_counted = number(stats, "syscalls") / closed;
  if (stats.contains("enter_calls") && run.backend.starts_with("uring")) {
    figures.enter_calls = number(stats, "enter_calls") / closed;
  }
  if (auto it = run.perf.find("raw_syscalls:sys_enter"); it != run.perf.end()) {
    figures.syscalls = it->second / closed;
  } else {
    figures.syscalls = figures.syscalls_counted;
  }
  if (auto it = run.perf.find("io_uring:io_uring_queue_async_work"); it != run.perf.end()) {
    figures.punts = it->second / closed;
  }
  if (server.contains("close_latency_us")) {
    const json& latency = server["close_latency_us"];
    figures.latency_p50_ms = number(latency, "p50") / 1000;
    figures.latency_p99_ms = number(latency, "p99") / 1000;
    figures.latency_max_ms = number(latency, "max") / 1000;
  } else {  // nginx: not observable from outside
    figures.latency_p50_ms = figures.latency_p99_ms = figures.latency_max_ms = -1;
  }
  const json memory = server.value("memory", json::object());
  figures.rss_peak_mib = number(memory, "rss_peak_kib") / 1024;
  figures.rss_growth_mib =
      std::max(0.0, number(memory, "rss_peak_kib") - number(memory, "rss_start_kib")) / 1024;
  const double peak_live = number(memory, "peak_live_connections");
  figures.peak_live_connections = peak_live;
  if (peak_live > 0 && memory.contains("rss_before_manager_kib")) {
    // Everything the Manager added to the resident set (its slot table, timers, rings, receive
    // buffers, queued sends), at the peak, per connection held then. Fixed costs are spread over
    // the connections, so this is meaningful when many are held at once (--read-delay).
    figures.bytes_per_connection = std::max(
        0.0,
        (number(memory, "rss_peak_kib") - number(memory, "rss_before_manager_kib")) * 1024 /
            peak_live);
  }
  figures.socket_memory_mib =
      static_cast<double>(run.sockets.peak_pages) * static_cast<double>(sysconf(_SC_PAGESIZE)) /
      (1024.0 * 1024.0);
  figures.complete = static_cast<std::uint64_t>(number(client, "complete"));
  figures.failed = static_cast<std::uint64_t>(number(client, "failed"));
  figures.lost = static_cast<std::uint64_t>(number(client, "payload_bytes_lost"));
  return figures;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

// Medians over the runs of one backend at one concurrency level (failures summed).
Figures summarize(const std::vector<Figures>& runs) {
  Figures summary;
  auto med = [&](double Figures::*field) {
    std::vector<double> values;
    for (const Figures& run : runs) values.push_back(run.*field);
    return median(values);
  };
  for (double Figures::*field :
       {&Figures::connections_per_second, &Figures::user_us, &Figures::system_us,
        &Figures::syscalls, &Figures::syscalls_counted, &Figures::enter_calls,
        &Figures::context_switches, &Figures::punts, &Figures::latency_p50_ms,
        &Figures::latency_p99_ms, &Figures::latency_max_ms, &Figures::rss_peak_mib,
        &Figures::rss_growth_mib, &Figures::peak_live_connections,
        &Figures::bytes_per_connection, &Figures::socket_memory_mib}) {
    summary.*field = med(field);
  }
  for (const Figures& run : runs) {
    summary.complete += run.complete;
    summary.failed += run.failed;
    summary.lost += run.lost;
    summary.closed += run.closed;
  }
  return summary;
}

json figures_json(const Figures& figures) {
  auto optional = [](double value) { return value < 0 ? json(nullptr) : json(value); };
  return {{"connections_per_second", figures.connections_per_second},
          {"cpu_user_us_per_close", figures.user_us},
          {"cpu_system_us_per_close", figures.system_us},
          {"cpu_us_per_close", figures.user_us + figures.system_us},
          {"syscalls_per_close", optional(figures.syscalls)},
          {"syscalls_per_close_counted_by_the_library", optional(figures.syscalls_counted)},
          {"io_uring_enter_per_close", optional(figures.enter_calls)},
          {"context_switches_per_close", figures.context_switches},
          {"io_wq_punts_per_close", optional(figures.punts)},
          {"close_latency_ms", figures.latency_p50_ms < 0
                                   ? json(nullptr)
                                   : json{{"p50", figures.latency_p50_ms},
                                          {"p99", figures.latency_p99_ms},
                                          {"max", figures.latency_max_ms}}},
          {"server_peak_rss_mib", figures.rss_peak_mib},
          {"server_rss_growth_mib", figures.rss_growth_mib},
          {"server_peak_live_connections", figures.peak_live_connections},
          // Growth per connection at the peak: includes pools touched once (receive buffers,
          // rings), so it means something only when the peak is large.
          {"manager_bytes_per_peak_connection", optional(figures.bytes_per_connection)},
          {"tcp_socket_memory_peak_mib", figures.socket_memory_mib},
          {"complete", figures.complete},
          {"failed", figures.failed},
          {"payload_bytes_lost", figures.lost}};
}

class Bench {
 public:
  explicit Bench(const BenchFlags& flags) : flags_(flags) { parse(); }

  int run() {
    const bool progress = isatty(STDERR_FILENO) != 0;
    std::size_t done = 0;
    const std::size_t total = concurrency_levels_.size() * flags_.runs * backends_.size();
    for (std::uint32_t concurrency : concurrency_levels_) {
      for (std::uint32_t run = 1; run <= flags_.runs; ++run) {
        for (const std::string& backend : backends_) {  // alternating: one run of each in turn
          if (progress) {
            fmt::print(stderr, "\r[{}/{}] concurrency {}, run {}/{}: {} ...{:20}\n", done + 1,
                       total, concurrency, run, flags_.runs, backend, "");
          }
          results_.push_back(run_one(backend, concurrency, run));
          ++done;
        }
      }
    }
    print_tables();
    if (!flags_.json_path.empty()) write_json();
    if (!flags_.plot_path.empty()) plot();
    return verdict();
  }

 private:
  void parse() {
    backends_ = split(flags_.backends);
    if (backends_.empty()) throw UsageError("--backend: name at least one backend");
    for (const std::string& backend : backends_) {
      if (std::find(kBackends.begin(), kBackends.end(), backend) == kBackends.end()) {
        throw UsageError("--backend: unknown backend '" + backend +
                         "' (choose from uring, epoll, blocking, naive, nginx)");
      }
      if (backend == "nginx" && NginxServer::find_binary().empty()) {
        throw UsageError("--backend nginx: nginx is not installed (apt-get install nginx-light)");
      }
    }
    rlimit limit{};
    getrlimit(RLIMIT_NOFILE, &limit);
    for (const std::string& item : split(flags_.concurrency)) {
      std::uint64_t level = 0;
      try {
        level = std::stoull(item);
      } catch (...) {
        throw UsageError("--concurrency: '" + item + "' is not a number");
      }
      if (level == 0 || level + 100 > limit.rlim_cur) {
        throw UsageError("--concurrency: " + item + " must be between 1 and " +
                         std::to_string(limit.rlim_cur - 100) + " (RLIMIT_NOFILE is " +
                         std::to_string(limit.rlim_cur) + ")");
      }
      concurrency_levels_.push_back(static_cast<std::uint32_t>(level));
    }
    if (concurrency_levels_.empty()) throw UsageError("--concurrency: give at least one level");
    if (flags_.connections == 0) throw UsageError("--connections: must be at least 1");
    if (flags_.runs == 0 || flags_.runs > 100) throw UsageError("--runs: must be between 1 and 100");
    fd_limit_ = limit.rlim_cur;
    // Validate everything the children will be given, so a mistake is reported once, up front.
    config_ = to_config(flags_.drain);
    response_bytes_ = response_bytes_flag(flags_.response_bytes, flags_.sendfile);
    (void)request_body_flag(flags_.body_bytes);
    (void)duration_flag_ms("--read-delay", flags_.read_delay);
    (void)duration_flag_ms("--timeout", flags_.timeout);
    (void)duration_flag_ms("--duration", flags_.duration);
    if (auto* error = std::get_if<std::string>(&(mix_ = parse_peer_mix(flags_.peers)))) {
      throw UsageError("--peers: " + *error);
    }
    never_fin_hold_ = flags_.never_fin_hold.empty()
                          ? std::to_string(config_.drain_idle_timeout_ms + 1000) + "ms"
                          : flags_.never_fin_hold;
    (void)duration_flag_ms("--never-fin-hold", never_fin_hold_);
    if (!flags_.plot_path.empty() && !flags_.plot_path.ends_with(".png") &&
        !flags_.plot_path.ends_with(".svg")) {
      throw UsageError("--plot: '" + flags_.plot_path + "' must end in .png or .svg");
    }
    use_perf_ = !flags_.no_perf && perf_usable();
  }

  std::vector<std::string> server_arguments(const std::string& backend, std::uint32_t concurrency,
                                            const std::string& json_path) const {
    const DrainFlags& drain = flags_.drain;
    const bool metrics = backend.ends_with(kWithMetrics);
    const std::string serve_backend = metrics ? backend.substr(0, backend.size() - kWithMetrics.size()) : backend;
    std::vector<std::string> arguments = {"serve", "--listen", "127.0.0.1:0", "--backend", serve_backend, "--quiet", "--json", json_path,
            "--response-bytes", flags_.response_bytes, "--drain-idle-timeout",
            drain.drain_idle_timeout, "--drain-timeout", drain.drain_timeout, "--drain-max-bytes",
            drain.drain_max_bytes, "--send-timeout", drain.send_timeout, "--orphan-timeout",
            drain.orphan_timeout, "--on-timeout",
            drain.on_timeout, "--shutdown", drain.shutdown, "--batch-wait", drain.batch_wait,
            "--max-connections", std::to_string(max_connections(concurrency)), "--stop-grace", "2s",
            "--defer-accept", flags_.defer_accept};
    // The library's backends can send the body from a file; blocking and naive always copy.
    if (flags_.sendfile && (serve_backend == "uring" || serve_backend == "epoll")) arguments.push_back("--sendfile");
    if (metrics) arguments.insert(arguments.end(), {"--metrics", "127.0.0.1:0"});
    return arguments;
  }

  std::vector<std::string> client_arguments(const SocketAddress& address,
                                            std::uint32_t concurrency,
                                            const std::string& json_path) const {
    std::vector<std::string> arguments = {
        "client", "--connect", address.to_string(), "--connections",
        std::to_string(flags_.connections), "--concurrency", std::to_string(concurrency),
        "--response-bytes", flags_.response_bytes, "--body-bytes", flags_.body_bytes,
        "--read-delay", flags_.read_delay, "--timeout", flags_.timeout, "--duration",
        flags_.duration, "--peers", flags_.peers, "--never-fin-hold", never_fin_hold_, "--json",
        json_path};
    if (!flags_.source_addresses.empty()) {
      arguments.push_back("--source-addrs");
      arguments.push_back(flags_.source_addresses);
    }
    return arguments;
  }

  std::uint64_t max_connections(std::uint32_t concurrency) const {
    return std::min<std::uint64_t>(fd_limit_ - 64, std::max<std::uint64_t>(concurrency + 1024, 4096));
  }

  // Counts the server's system calls, io-wq punts and context switches while the load runs.
  std::unique_ptr<ChildProcess> start_perf(pid_t pid, const std::string& output) const {
    if (!use_perf_) return nullptr;
    auto perf = std::make_unique<ChildProcess>(ChildProcess::Options{
        "/usr/bin/perf",
        {"stat", "-x,", "-e",
         "raw_syscalls:sys_enter,io_uring:io_uring_queue_async_work,context-switches", "-p",
         std::to_string(pid), "-o", output},
        -1,
        true});
    std::this_thread::sleep_for(300ms);  // perf attaches to the server before the load starts
    return perf;
  }

  void stop_perf(std::unique_ptr<ChildProcess>& perf, const std::string& output,
                 RunResult& result) const {
    if (perf) {
      ::kill(perf->pid(), SIGINT);
      perf->wait(10s);
      result.perf = read_perf(output);
    }
    std::remove(output.c_str());
  }

  // Runs the client against `address` (on CPU 1), sampling kernel socket memory meanwhile.
  void run_client(const SocketAddress& address, std::uint32_t concurrency,
                  const std::string& client_json, RunResult& result) const {
    SocketMemorySampler sampler;
    ChildProcess client({"/proc/self/exe", client_arguments(address, concurrency, client_json),
                         1, true});
    const int code = client.wait(std::chrono::hours(1));
    if (code != 0 && code != 1) {
      throw std::runtime_error("`ringlinger client` failed with exit code " + std::to_string(code));
    }
    result.sockets = sampler.result();
  }

  // nginx reports nothing itself: its worker's CPU, context switches and memory come from /proc
  // (CPU in clock ticks, 10 ms, against the ~1 s of CPU a run takes), shaped like serve's JSON.
  RunResult run_nginx(std::uint32_t concurrency, std::uint32_t run) {
    RunResult result{"nginx", concurrency, run, json::object(), json::object(), {}, {}};
    const std::string client_json = temporary_path("client");
    const std::string perf_output = temporary_path("perf");
    NginxOptions options;
    options.response_bytes = response_bytes_;
    options.drain_idle_timeout_ms = config_.drain_idle_timeout_ms;
    options.drain_timeout_ms = config_.drain_timeout_ms;
    options.send_timeout_ms = config_.send_timeout_ms;
    options.worker_connections = static_cast<std::uint32_t>(max_connections(concurrency));
    options.cpu = 0;
    options.deferred = flags_.defer_accept == "on";
    NginxServer nginx(options);
    const ProcessSample before = nginx.sample();
    auto perf = start_perf(nginx.worker_pid(), perf_output);
    run_client(nginx.address(), concurrency, client_json, result);
    stop_perf(perf, perf_output, result);
    const ProcessSample after = nginx.sample();
    result.client = read_json(client_json);
    const double closed = number(result.client, "started");
    result.server = {
        {"backend", "nginx"},
        {"backend_description", "nginx-light, 1 worker, lingering_close on, sendfile on"},
        {"stats", {{"connections_closed", closed}}},
        {"cpu",
         {{"user_us", after.user_us - before.user_us},
          {"system_us", after.system_us - before.system_us},
          {"voluntary_context_switches",
           after.voluntary_context_switches - before.voluntary_context_switches},
          {"involuntary_context_switches",
           after.involuntary_context_switches - before.involuntary_context_switches},
          {"source", "/proc/PID/stat of the worker, clock ticks"}}},
        {"memory", {{"rss_start_kib", before.rss_kib}, {"rss_peak_kib", after.rss_peak_kib}}}};
    return result;
  }

  RunResult run_one(const std::string& backend, std::uint32_t concurrency, std::uint32_t run) {
    if (backend == "nginx") return run_nginx(concurrency, run);
    RunResult result{backend, concurrency, run, json::object(), json::object(), {}, {}};
    const std::string server_json = temporary_path("server");
    const std::string client_json = temporary_path("client");
    const std::string perf_output = temporary_path("perf");
    ChildProcess server({"/proc/self/exe", server_arguments(backend, concurrency, server_json), 0, true});
    const auto address = server.read_listening_address(10s);
    if (!address) {
      throw std::runtime_error("`ringlinger serve --backend " + backend + "` did not start");
    }
    auto perf = start_perf(server.pid(), perf_output);
    run_client(*address, concurrency, client_json, result);
    stop_perf(perf, perf_output, result);
    server.terminate(60s);
    result.client = read_json(client_json);
    result.server = read_json(server_json);
    return result;
  }

  static std::map<std::string, double> read_perf(const std::string& path) {
    // perf stat -x, lines: value,unit,event,...
    std::map<std::string, double> counts;
    std::ifstream file(path);
    std::string line;
    while (std::getline(file, line)) {
      const auto fields = split_fields(line);
      if (fields.size() < 3 || fields[0].empty() || fields[0][0] == '<') continue;
      try {
        counts[fields[2]] = std::stod(fields[0]);
      } catch (...) {
      }
    }
    return counts;
  }
  static std::vector<std::string> split_fields(const std::string& line) {
    std::vector<std::string> fields;
    std::string field;
    std::stringstream stream(line);
    while (std::getline(stream, field, ',')) fields.push_back(field);
    return fields;
  }

  Figures summary(const std::string& backend, std::uint32_t concurrency) const {
    std::vector<Figures> runs;
    for (const RunResult& result : results_) {
      if (result.backend == backend && result.concurrency == concurrency) runs.push_back(figures_of(result));
    }
    return summarize(runs);
  }

  static std::string optional_text(double value, const char* format) {
    return value < 0 ? std::string("-") : fmt::format(fmt::runtime(format), value);
  }

  void print_tables() const {
    fmt::print("\nringlinger bench: {} connections per run, {} run{} per backend (medians), "
               "{} responses, {} unread request body{}, peers {}\n",
               flags_.connections, flags_.runs, flags_.runs == 1 ? "" : "s",
               format_bytes(response_bytes_), format_bytes(bytes_flag("--body-bytes", flags_.body_bytes)),
               flags_.read_delay == "0" ? "" : ", clients read " + flags_.read_delay + " late",
               flags_.peers);
    fmt::print("server on CPU 0, client on CPU 1; CPU = the server process (io-wq threads "
               "included); syscalls{}\n",
               use_perf_ ? " counted with perf (raw_syscalls:sys_enter)" : " counted by the backends");
    for (std::uint32_t concurrency : concurrency_levels_) {
      fmt::print("\nconcurrency {}\n", concurrency);
      fmt::print("{:<13} {:>8} {:>22} {:>9} {:>8} {:>7} {:>6} {:>22} {:>9} {:>9}\n", "backend",
                 "conn/s", "CPU us/close usr+sys", "syscalls", "enters", "ctxsw", "punts",
                 "close ms p50/p99/max", "failed", "lost");
      for (const std::string& backend : backends_) {
        const Figures f = summary(backend, concurrency);
        fmt::print("{:<13} {:>8.0f} {:>22} {:>9} {:>8} {:>7.3f} {:>6} {:>22} {:>9} {:>9}\n",
                   backend, f.connections_per_second,
                   fmt::format("{:.1f} + {:.1f} = {:.1f}", f.user_us, f.system_us,
                               f.user_us + f.system_us),
                   optional_text(f.syscalls, "{:.2f}"), optional_text(f.enter_calls, "{:.3f}"),
                   f.context_switches, optional_text(f.punts, "{:.2f}"),
                   f.latency_p50_ms < 0 ? std::string("-")
                                        : fmt::format("{:.1f}/{:.1f}/{:.1f}", f.latency_p50_ms,
                                                      f.latency_p99_ms, f.latency_max_ms),
                   f.failed, format_bytes(f.lost));
      }
      fmt::print("{:<13} {:>10} {:>11} {:>10} {:>11} {:>9}   {}\n", "", "RSS MiB", "RSS growth",
                 "peak conns", "mgr B/conn", "TCP MiB", "outcomes (all runs)");
      for (const std::string& backend : backends_) {
        const Figures f = summary(backend, concurrency);
        fmt::print("{:<13} {:>10.1f} {:>11.1f} {:>10} {:>11} {:>9.1f}   {}\n", backend,
                   f.rss_peak_mib, f.rss_growth_mib,
                   f.peak_live_connections > 0 ? fmt::format("{:.0f}", f.peak_live_connections)
                                               : std::string("-"),
                   optional_text(f.bytes_per_connection, "{:.0f}"),
                   f.socket_memory_mib, outcomes_text(backend, concurrency));
      }
      print_peer_failures(concurrency);
    }
  }

  std::string outcomes_text(const std::string& backend, std::uint32_t concurrency) const {
    std::map<std::string, std::uint64_t> totals;
    for (const RunResult& result : results_) {
      if (result.backend != backend || result.concurrency != concurrency) continue;
      const json outcomes = result.server.value("stats", json::object()).value("outcomes", json::object());
      for (const auto& [name, count] : outcomes.items()) totals[name] += count.get<std::uint64_t>();
    }
    std::string text;
    for (const auto& [name, count] : totals) {
      if (count > 0) text += fmt::format("{}{} {}", text.empty() ? "" : ", ", count, name);
    }
    if (text.empty()) text = backend == "naive" ? "(plain close(): no outcomes)" : "-";
    return text;
  }

  void print_peer_failures(std::uint32_t concurrency) const {
    bool header = false;
    for (const std::string& backend : backends_) {
      std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> per_peer;  // started, failed
      std::map<std::string, std::map<std::string, std::uint64_t>> reasons;
      for (const RunResult& result : results_) {
        if (result.backend != backend || result.concurrency != concurrency) continue;
        // Named copies: items() of a temporary would dangle.
        const json peers = result.client.value("peers", json::object());
        for (const auto& [peer, counts] : peers.items()) {
          per_peer[peer].first += counts.value("started", std::uint64_t{0});
          per_peer[peer].second += counts.value("failed", std::uint64_t{0});
          const json failures = counts.value("failures", json::object());
          for (const auto& [reason, count] : failures.items()) {
            reasons[peer][reason] += count.get<std::uint64_t>();
          }
        }
      }
      if (per_peer.size() <= 1 && backend != "naive") continue;
      if (!header) {
        fmt::print("failures per peer type (failed/started, all runs):\n");
        header = true;
      }
      std::string line;
      for (const auto& [peer, counts] : per_peer) {
        std::string why;
        for (const auto& [reason, count] : reasons[peer]) {
          if (count > 0) why += fmt::format("{}{} {}", why.empty() ? "" : ", ", count, reason);
        }
        line += fmt::format("  {} {}/{}{}", peer, counts.second, counts.first,
                            why.empty() ? "" : " (" + why + ")");
      }
      fmt::print("{:<13}{}\n", backend, line);
    }
  }

  // 0 when every backend but naive lost nothing (and naive, if run with an unread body, lost).
  int verdict() const {
    bool ok = true;
    for (const std::string& backend : backends_) {
      for (std::uint32_t concurrency : concurrency_levels_) {
        const Figures f = summary(backend, concurrency);
        if (backend != "naive" && f.failed > 0) {
          fmt::print("\nverdict: {} had {} failed connections at concurrency {}\n", backend,
                     f.failed, concurrency);
          ok = false;
        }
      }
    }
    if (ok) {
      fmt::print("\nverdict: every connection of every backend but naive got what its peer type "
                 "should get{}\n",
                 std::find(backends_.begin(), backends_.end(), "naive") != backends_.end()
                     ? "; naive: see its failures above"
                     : "");
    }
    return ok ? 0 : 1;
  }

  json machine_json() const {
    utsname names{};
    uname(&names);
    return {{"kernel", names.release},
            {"machine", names.machine},
            {"cpus", std::thread::hardware_concurrency()},
            {"rlimit_nofile", fd_limit_},
            {"perf", use_perf_}};
  }

  void write_json() const {
    json runs = json::array();
    for (const RunResult& result : results_) {
      runs.push_back({{"backend", result.backend},
                      {"concurrency", result.concurrency},
                      {"run", result.run},
                      {"figures", figures_json(figures_of(result))},
                      {"client", result.client},
                      {"server", result.server},
                      {"perf", result.perf}});
    }
    json summary_json = json::array();
    for (std::uint32_t concurrency : concurrency_levels_) {
      for (const std::string& backend : backends_) {
        summary_json.push_back({{"backend", backend},
                                {"concurrency", concurrency},
                                {"medians", figures_json(summary(backend, concurrency))}});
      }
    }
    const DrainFlags& drain = flags_.drain;
    json configuration = {
        {"backends", backends_}, {"connections", flags_.connections},
        {"concurrency", concurrency_levels_}, {"runs", flags_.runs},
        {"response_bytes", flags_.response_bytes}, {"body_bytes", flags_.body_bytes},
        {"read_delay", flags_.read_delay}, {"timeout", flags_.timeout}, {"sendfile", flags_.sendfile},
        {"defer_accept", flags_.defer_accept},
        {"duration", flags_.duration}, {"source_addresses", flags_.source_addresses},
        {"peers", flags_.peers}, {"never_fin_hold", never_fin_hold_},
        {"drain_idle_timeout", drain.drain_idle_timeout}, {"drain_timeout", drain.drain_timeout},
        {"drain_max_bytes", drain.drain_max_bytes}, {"send_timeout", drain.send_timeout},
        {"orphan_timeout", drain.orphan_timeout},
        {"on_timeout", drain.on_timeout}, {"shutdown", drain.shutdown},
        {"batch_wait", drain.batch_wait}};
    std::ofstream(flags_.json_path)
        << json{{"machine", machine_json()}, {"configuration", configuration},
                {"summary", summary_json}, {"runs", runs}}
               .dump(2)
        << "\n";
  }

  // Closes per second and CPU per close, per backend (and per concurrency level when several).
  void plot() const {
    const std::string data_path = temporary_path("plot-data");
    const std::string script_path = temporary_path("plot-script");
    write_plot_data(data_path);
    {
      std::ofstream script(script_path);
      write_plot_header(script);
      if (concurrency_levels_.size() > 1) {
        plot_by_concurrency(script, data_path);
      } else {
        plot_bars(script, data_path + ".bars");
      }
      script << "unset multiplot\n";
    }
    ChildProcess gnuplot({"/bin/sh", {"-c", "gnuplot \"$0\"", script_path}, -1, false});
    const int code = gnuplot.wait(60s);
    std::remove(script_path.c_str());
    std::remove(data_path.c_str());
    std::remove((data_path + ".bars").c_str());
    if (code != 0) {
      fmt::print(stderr, "ringlinger bench: gnuplot failed (exit code {}); install gnuplot-nox\n",
                 code);
    } else {
      fmt::print("plot: {}\n", flags_.plot_path);
    }
  }

  // gnuplot's data: one block per backend, one row per concurrency level.
  void write_plot_data(const std::string& path) const {
    std::ofstream data(path);
    for (const std::string& backend : backends_) {
      data << "# " << backend << "\n";
      for (std::uint32_t concurrency : concurrency_levels_) {
        const Figures f = summary(backend, concurrency);
        data << concurrency << " " << f.connections_per_second << " " << f.user_us << " "
             << f.system_us << " " << (f.user_us + f.system_us) << "\n";
      }
      data << "\n\n";
    }
  }

  // The output file and the title the two plots share.
  void write_plot_header(std::ofstream& script) const {
    const bool svg = flags_.plot_path.ends_with(".svg");
    script << (svg ? "set terminal svg size 1100,480 dynamic background '#ffffff'\n"
                   : "set terminal pngcairo size 1100,480\n");
    script << "set output '" << flags_.plot_path << "'\n"
           << "set multiplot layout 1,2 title 'ringlinger bench: " << flags_.connections
           << " connections, " << format_bytes(response_bytes_) << " responses, "
           << format_bytes(bytes_flag("--body-bytes", flags_.body_bytes)) << " unread body ("
           << flags_.runs << (flags_.runs == 1 ? " run)'\n" : " runs, medians)'\n")
           << "set grid\nset key outside bottom center horizontal\n";
  }

  // Several concurrency levels: one line per backend over the levels.
  void plot_by_concurrency(std::ofstream& script, const std::string& data_path) const {
    script << "set logscale x\nset xlabel 'concurrent connections'\n";
    auto lines = [&](int column) {
      std::string text = "plot ";
      for (std::size_t i = 0; i < backends_.size(); ++i) {
        text += fmt::format("{}'{}' index {} using 1:{} with linespoints lw 2 title '{}'",
                            i == 0 ? "" : ", ", data_path, i, column, backends_[i]);
      }
      return text + "\n";
    };
    script << "set title 'closes per second'\nset ylabel 'closes/s'\nset yrange [0:*]\n"
           << lines(2);
    script << "set title 'server CPU per close (user + system)'\nset ylabel 'us'\n" << lines(5);
  }

  // One concurrency level: one bar per backend, from the data rewritten as one row per backend
  // (to `bars_path`) for histograms.
  void plot_bars(std::ofstream& script, const std::string& bars_path) const {
    script << "set style data histogram\nset style histogram rowstacked\n"
           << "set style fill solid 0.8 border -1\nset boxwidth 0.6\nset yrange [0:*]\n"
           << "set xtics nomirror\n";
    {
      std::ofstream bars(bars_path);
      for (const std::string& backend : backends_) {
        const Figures f = summary(backend, concurrency_levels_.front());
        bars << backend << " " << f.connections_per_second << " " << f.user_us << " "
             << f.system_us << "\n";
      }
    }
    script << "set title 'closes per second (concurrency " << concurrency_levels_.front()
           << ")'\nset ylabel 'closes/s'\nunset key\n"
           << "plot '" << bars_path << "' using 2:xtic(1) lc rgb '#4472c4'\n"
           << "set title 'server CPU per close'\nset ylabel 'us per close'\nset key\n"
           << "plot '" << bars_path << "' using 3:xtic(1) title 'user' lc rgb '#ed7d31', '' "
           << "using 4 title 'system' lc rgb '#a5a5a5'\n";
  }

  const BenchFlags& flags_;
  std::vector<std::string> backends_;
  std::vector<std::uint32_t> concurrency_levels_;
  std::uint64_t fd_limit_ = 0;
  Config config_;
  std::uint64_t response_bytes_ = 0;
  std::variant<PeerMix, std::string> mix_;
  std::string never_fin_hold_;
  bool use_perf_ = false;
  std::vector<RunResult> results_;
};

}  // namespace

Command add_bench_command(CLI::App& program) {
  auto flags = std::make_shared<BenchFlags>();
  CommandFlags app = add_subcommand(
      program, "bench",
      "Runs the same workload against several server backends, alternating, each server in its "
      "own process on CPU 0 and the verifying client in another on CPU 1; prints throughput, "
      "server CPU, system calls, context switches and io-wq punts per close, close latency, "
      "outcomes, failures per peer type and memory. Exit code 0 when no backend but naive failed "
      "a connection.");
  app.add_option("--backend", flags->backends,
                  "Comma-separated: uring, epoll (the library's backends), blocking (one "
                  "connection at a time, blocking calls), naive (plain close()), nginx (Debian's "
                  "nginx-light, one worker, lingering_close on), uring-metrics (uring with a "
                  "--metrics page nobody scrapes)")
      .type_name("LIST").capture_default_str();
  app.add_option("--connections", flags->connections, "Connections per run")
      .check(whole_number(1, kMaxConnections)).type_name("N").capture_default_str();
  app.add_option("--concurrency", flags->concurrency,
                  "Connections open at once; a list (100,1000,10000) runs each level")
      .type_name("LIST").capture_default_str();
  app.add_option("--runs", flags->runs, "Runs per backend and level (medians are reported)")
      .check(whole_number(1, 100)).type_name("N")
      .capture_default_str();
  app.add_option("--response-bytes", flags->response_bytes,
                  "Response body size (as serve: at most 256MiB in memory, 16GiB with --sendfile)")
      .type_name("SIZE").capture_default_str();
  app.add_option("--body-bytes", flags->body_bytes,
                  "Request body the server does not read (what makes a plain close() reset)")
      .type_name("SIZE").capture_default_str();
  app.add_option("--read-delay", flags->read_delay, "Clients start reading this long after connecting")
      .type_name("DURATION").capture_default_str();
  app.add_option("--timeout", flags->timeout, "Per connection limit in the client")
      .type_name("DURATION").capture_default_str();
  app.add_option("--duration", flags->duration, "Stop starting connections after this long (0: no limit)")
      .type_name("DURATION").capture_default_str();
  app.add_option("--source-addrs", flags->source_addresses,
                  "Client source addresses, e.g. 127.0.0.2-127.0.0.9 (past 28k ports per destination)")
      .type_name("ADDRESSES");
  app.add_option("--peers", flags->peers,
                  "Peer mix, e.g. cooperative=90,never-fin=2,flood=2,reset=2,slow-reader=2,half-close=2")
      .type_name("MIX").capture_default_str();
  app.add_option("--never-fin-hold", flags->never_fin_hold,
                  "How long never-fin peers keep their socket (default: drain idle timeout + 1s)")
      .type_name("DURATION");
  app.add_option("--json", flags->json_path, "Write every figure and the configuration to FILE")
      .type_name("FILE");
  app.add_option("--plot", flags->plot_path, "Draw closes/s and CPU per close to FILE.png or FILE.svg (gnuplot)")
      .type_name("FILE");
  app.add_flag("--no-perf", flags->no_perf, "Do not count system calls and io-wq punts with perf");
  app.add_flag("--sendfile", flags->sendfile,
                "uring and epoll send the response body from a file with Manager::send_file "
                "(sendfile(2), no copy), as nginx does");
  app.add_option("--defer-accept", flags->defer_accept,
                  "on: every server's listener hands a connection over only once its request "
                  "has arrived (TCP_DEFER_ACCEPT, one second; nginx's `listen ... deferred`), as "
                  "serve does by default")
      .one_of({"on", "off"}).capture_default_str();
  add_drain_flags(app, flags->drain);
  return {&app.app(), [flags] { return Bench(*flags).run(); }};
}

}  // namespace ringlinger::tools
