// `ringlinger probe`: what this machine offers ringlinger. Whether io_uring may be used (and if
// not, why), the setup flags, features and opcodes the manager relies on, the limits that bound
// how many connections one process can linger (fds, ephemeral ports, listen backlog, TCP
// buffers), and which backend `serve` and `bench` would pick. Everything is asked of the running
// kernel; nothing is inferred from its version.
#include <sched.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "ringlinger/probe.hpp"

namespace ringlinger::tools {
namespace {

// File descriptors a process needs besides its connections (stdio, ring, listener, logs...);
// the same margin `serve` warns about.
constexpr std::uint64_t kReservedFds = 32;
constexpr int kLabelWidth = 20;  // column of the values

// Up to three whitespace-separated numbers of a /proc/sys file; empty when it cannot be read.
std::vector<std::uint64_t> read_numbers(const char* path) {
  std::ifstream file(path);
  std::vector<std::uint64_t> numbers;
  std::uint64_t value = 0;
  while (numbers.size() < 3 && file >> value) numbers.push_back(value);
  return numbers;
}

std::optional<std::uint64_t> read_number(const char* path) {
  const std::vector<std::uint64_t> numbers = read_numbers(path);
  if (numbers.empty()) return std::nullopt;
  return numbers.front();
}

struct Limits {
  std::optional<rlimit> nofile;
  std::vector<std::uint64_t> port_range;  // first, last (inclusive)
  std::optional<std::uint64_t> somaxconn;
  std::optional<std::uint64_t> fin_timeout_s;
  std::vector<std::uint64_t> tcp_rmem;  // min, default, max
  std::vector<std::uint64_t> tcp_wmem;
  long cpus_online = 0;
  int cpus_usable = 0;  // in this process's affinity mask (containers, taskset)
  std::string kernel;   // sysname release machine

  std::optional<std::uint64_t> connections_per_process() const {
    if (!nofile || nofile->rlim_cur == RLIM_INFINITY) return std::nullopt;
    return nofile->rlim_cur > kReservedFds ? nofile->rlim_cur - kReservedFds : 0;
  }
  std::optional<std::uint64_t> ports_per_destination() const {
    if (port_range.size() != 2 || port_range[1] < port_range[0]) return std::nullopt;
    return port_range[1] - port_range[0] + 1;
  }
};

Limits read_limits() {
  Limits limits;
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) limits.nofile = nofile;
  limits.port_range = read_numbers("/proc/sys/net/ipv4/ip_local_port_range");
  limits.somaxconn = read_number("/proc/sys/net/core/somaxconn");
  limits.fin_timeout_s = read_number("/proc/sys/net/ipv4/tcp_fin_timeout");
  limits.tcp_rmem = read_numbers("/proc/sys/net/ipv4/tcp_rmem");
  limits.tcp_wmem = read_numbers("/proc/sys/net/ipv4/tcp_wmem");
  limits.cpus_online = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t usable;
  CPU_ZERO(&usable);
  if (sched_getaffinity(0, sizeof(usable), &usable) == 0) limits.cpus_usable = CPU_COUNT(&usable);
  utsname name{};
  if (uname(&name) == 0) {
    limits.kernel = fmt::format("{} {} {}", name.sysname, name.release, name.machine);
  }
  return limits;
}

// "io_uring", or "epoll (fallback: <why>)".
std::string backend_of(const IoUringSupport& support) {
  if (support.sufficient) return "io_uring";
  return "epoll (fallback: " + (support.reason.empty() ? "io_uring unusable" : support.reason) +
         ")";
}

std::string rlimit_text(rlim_t value) {
  return value == RLIM_INFINITY ? "unlimited" : std::to_string(value);
}

template <class T>
std::string or_unknown(const std::optional<T>& value) {
  return value ? fmt::format("{}", *value) : "unknown";
}

std::string triple_text(const std::vector<std::uint64_t>& numbers) {
  if (numbers.size() != 3) return "unknown";
  return fmt::format("{} {} {}  (min default max, bytes)", numbers[0], numbers[1], numbers[2]);
}

constexpr std::size_t kLineWidth = 78;  // long values wrap onto indented lines

// "label   value", the value wrapped at word boundaries to kLineWidth.
void print_line(const std::string& label, const std::string& value) {
  const std::size_t room = kLineWidth - kLabelWidth;
  std::string_view rest = value;
  std::string_view first_label = label;
  do {
    std::size_t cut = rest.size();
    if (cut > room) {
      cut = rest.rfind(' ', room);
      if (cut == std::string_view::npos || cut == 0) cut = room;
    }
    fmt::print("{:<{}}{}\n", first_label, kLabelWidth, rest.substr(0, cut));
    first_label = "";
    rest.remove_prefix(cut);
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  } while (!rest.empty());
}

// Why a flag was tried together with another one (the kernel rejects it alone).
const char* companion_of(const std::string& flag) {
  if (flag == "TASKRUN_FLAG") return "  (tried with COOP_TASKRUN)";
  if (flag == "DEFER_TASKRUN") return "  (tried with SINGLE_ISSUER)";
  return "";
}

// `mark_required`: rows the io_uring backend cannot run without say so (io_uring_requires()).
void print_table(const char* title, const std::vector<std::pair<std::string, bool>>& rows,
                 bool mark_required) {
  fmt::print("{}\n", title);
  for (const auto& [name, supported] : rows) {
    const bool needed = mark_required && io_uring_requires(name);
    const std::string notes = fmt::format("{}{}", needed ? "  (required)" : "", companion_of(name));
    const char* answer = supported ? "yes" : "no";
    const std::string value = notes.empty() ? answer : fmt::format("{:<3}{}", answer, notes);
    fmt::print("  {:<{}}{}\n", name, kLabelWidth - 2, value);
  }
}

void print_report(const IoUringSupport& support, const Limits& limits) {
  print_line("kernel", limits.kernel.empty() ? "unknown" : limits.kernel);
  print_line("cpus", fmt::format("{} online, {} usable by this process", limits.cpus_online,
                                 limits.cpus_usable));
  if (!support.available) {
    const char* name = strerrorname_np(support.setup_error);
    const std::string error = name != nullptr ? name : std::to_string(support.setup_error);
    print_line("io_uring", "NOT available: io_uring_setup failed with " + error);
  } else if (support.sufficient) {
    print_line("io_uring", "enabled");
  } else {
    print_line("io_uring", "enabled, but lacks what ringlinger needs");
  }
  print_line("backend", backend_of(support) + "  (serve, bench)");
  fmt::print("\n");
  if (support.available) {
    print_table("io_uring setup flags (each tried alone)", support.setup_flags, false);
    print_table("io_uring features", support.features, true);
    print_table("io_uring opcodes", support.opcodes, true);
    fmt::print("{:<{}}{:<3}  (required)\n", "provided buffer ring", kLabelWidth + 2,
               support.provided_buffer_ring ? "yes" : "no");
    fmt::print("{:<{}}{:<3}  (the drain as one receive)\n\n", "multishot drain", kLabelWidth + 2,
               support.multishot_drain ? "yes" : "no");
  }

  fmt::print("limits\n");
  const auto row = [](const std::string& label, const std::string& value) {
    fmt::print("  {:<{}}{}\n", label, kLabelWidth + 6, value);
  };
  if (limits.nofile) {
    row("RLIMIT_NOFILE", fmt::format("soft {}, hard {}", rlimit_text(limits.nofile->rlim_cur),
                                     rlimit_text(limits.nofile->rlim_max)));
    const auto connections = limits.connections_per_process();
    row("", connections ? fmt::format("~{} connections per process", *connections)
                        : std::string("no fd limit on connections"));
  } else {
    row("RLIMIT_NOFILE", "unknown");
  }
  if (const auto ports = limits.ports_per_destination()) {
    row("ip_local_port_range", fmt::format("{}-{}", limits.port_range[0], limits.port_range[1]));
    row("", fmt::format("{} client ports per destination per source address", *ports));
  } else {
    row("ip_local_port_range", "unknown");
  }
  row("net.core.somaxconn", or_unknown(limits.somaxconn));
  row("tcp_fin_timeout",
      limits.fin_timeout_s ? fmt::format("{} s", *limits.fin_timeout_s) : "unknown");
  row("tcp_rmem", triple_text(limits.tcp_rmem));
  row("tcp_wmem", triple_text(limits.tcp_wmem));
}

nlohmann::json table_json(const std::vector<std::pair<std::string, bool>>& rows) {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& [name, supported] : rows) json[name] = supported;
  return json;
}

template <class T>
nlohmann::json optional_json(const std::optional<T>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json numbers_json(const std::vector<std::uint64_t>& numbers, std::size_t count) {
  return numbers.size() == count ? nlohmann::json(numbers) : nlohmann::json(nullptr);
}

nlohmann::json report_json(const IoUringSupport& support, const Limits& limits) {
  nlohmann::json nofile = nullptr;
  if (limits.nofile) {
    const auto limit_json = [](rlim_t value) {
      return value == RLIM_INFINITY ? nlohmann::json("unlimited") : nlohmann::json(value);
    };
    nofile = {{"soft", limit_json(limits.nofile->rlim_cur)},
              {"hard", limit_json(limits.nofile->rlim_max)},
              {"connections_per_process", optional_json(limits.connections_per_process())}};
  }
  return {
      {"kernel", limits.kernel},
      {"cpus_online", limits.cpus_online},
      {"cpus_usable", limits.cpus_usable},
      {"io_uring",
       {{"available", support.available},
        {"setup_error", support.setup_error},
        {"reason", support.reason},
        {"setup_flags", table_json(support.setup_flags)},
        {"features", table_json(support.features)},
        {"opcodes", table_json(support.opcodes)},
        {"provided_buffer_ring", support.provided_buffer_ring},
        {"multishot_drain", support.multishot_drain},
        {"sufficient", support.sufficient}}},
      {"backend", support.sufficient ? "io_uring" : "epoll"},
      {"backend_text", backend_of(support)},
      {"rlimit_nofile", nofile},
      {"ip_local_port_range", numbers_json(limits.port_range, 2)},
      {"ports_per_destination", optional_json(limits.ports_per_destination())},
      {"somaxconn", optional_json(limits.somaxconn)},
      {"tcp_fin_timeout_s", optional_json(limits.fin_timeout_s)},
      {"tcp_rmem", numbers_json(limits.tcp_rmem, 3)},
      {"tcp_wmem", numbers_json(limits.tcp_wmem, 3)},
  };
}

int run_probe(const std::string& json_path) {
  const IoUringSupport support = probe_io_uring();
  const Limits limits = read_limits();
  print_report(support, limits);
  if (!json_path.empty()) {
    std::ofstream file(json_path);
    file << report_json(support, limits).dump(2) << "\n";
    file.close();
    if (!file) throw std::runtime_error("cannot write " + json_path);
  }
  return 0;
}

}  // namespace

Command add_probe_command(CLI::App& program) {
  auto json_path = std::make_shared<std::string>();
  CommandFlags app = add_subcommand(
      program, "probe",
      "What this machine supports: io_uring (and why not), its setup flags, features and "
      "opcodes, the fd, port and TCP limits, and which backend serve and bench would use.");
  app.add_option("--json", *json_path, "Also write the report to FILE as JSON")
      .type_name("FILE");
  return {&app.app(), [json_path] { return run_probe(*json_path); }};
}

}  // namespace ringlinger::tools
