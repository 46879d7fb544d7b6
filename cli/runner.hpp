// The threaded runner of `serve` and `proxy`: the flags they share, N threads each driving one
// Manager behind the same address (SO_REUSEPORT), the signals (SIGINT/SIGTERM stop, SIGUSR1
// prints the counters), a stop with a grace period, and the threads' counters added up, printed
// and written as JSON. A command brings only its per-connection logic (a ShardServer on each
// thread), its own counters and how it prints them.
#pragma once

#include <sys/resource.h>

#include <any>
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "ringlinger/ringlinger.hpp"

namespace ringlinger::tools {

// CPU time and context switches of the whole process (io-wq worker threads included) or of the
// calling thread.
struct CpuUsage {
  std::uint64_t user_us = 0;
  std::uint64_t system_us = 0;
  std::uint64_t voluntary_switches = 0;
  std::uint64_t involuntary_switches = 0;

  // RUSAGE_SELF: the whole process; RUSAGE_THREAD: the calling thread.
  static CpuUsage now(int who = RUSAGE_SELF);
  CpuUsage since(const CpuUsage& start) const;
};
nlohmann::json cpu_json(const CpuUsage& cpu);

// The deadlines of one timeout for many connections (serve's request heads, proxy's upstream
// connects): each starts when its connection does, so their order is the deadlines' order and a
// FIFO keeps them sorted.
class DeadlineFifo {
 public:
  // A timeout of 0 sets no deadline.
  explicit DeadlineFifo(std::chrono::milliseconds timeout) : timeout_(timeout) {}
  void add(ConnectionId id);
  // `longest`, or less: the time until the first deadline (at least 1 ms).
  std::chrono::milliseconds wait(std::chrono::milliseconds longest) const;
  // Takes out every deadline that passed by `now` and calls `expired` with its connection (which
  // may have ended, or its slot been reused, since: check its state).
  void expire(std::chrono::steady_clock::time_point now,
              const std::function<void(ConnectionId)>& expired);

 private:
  struct Deadline {
    ConnectionId id;
    std::chrono::steady_clock::time_point at;
  };
  const std::chrono::milliseconds timeout_;
  std::deque<Deadline> deadlines_;
};

// The flags every runner command shares, as typed.
struct RunnerFlags {
  std::string listen = "127.0.0.1:8080";
  std::string backend = "auto";
  std::string stop_grace = default_stop_grace_text();
  std::uint32_t threads = 1;
  std::string json_path;
  bool quiet = false;
  DrainFlags drain;

  // --stop-grace's default, spelled as the flag.
  static std::string default_stop_grace_text();
};
// Adds them to `command`. `more_backends` are the command's own --backend values besides auto,
// uring and epoll (the library's), `more_backends_help` says what they are.
void add_runner_flags(CLI::App& command, RunnerFlags& flags,
                      const std::vector<std::string>& more_backends = {},
                      std::string_view more_backends_help = {});

// The library's backend a --backend value names; nullopt for a command's own (serve's naive).
std::optional<IoBackend> library_backend(std::string_view flag);

// An address flag's value; throws UsageError naming the flag.
SocketAddress address_flag(std::string_view flag, const std::string& text);

// The shared flags checked and converted.
struct RunnerSettings {
  std::string command;  // "serve": what the program's messages begin with
  SocketAddress listen;
  std::uint32_t threads = 1;
  std::chrono::milliseconds stop_grace{0};
  Config config;  // the total --max-connections; backend from --backend
  std::string json_path;
  bool quiet = false;
};
// Throws UsageError naming the flag for a bad value.
RunnerSettings runner_settings(std::string_view command, const RunnerFlags& flags);

// What the first thread reports once it listens.
struct Listening {
  SocketAddress bound;
  IoBackend backend = IoBackend::automatic;  // the one in use: io_uring or epoll
  std::string backend_description;
};

// A command's per-connection logic around the Manager of one thread, created and driven on that
// thread (a ring belongs to the thread that drives it).
class ShardServer {
 public:
  virtual ~ShardServer() = default;
  virtual Manager& manager() noexcept = 0;
  // The connections waiting for a deadline, and what to do with one whose deadline passed.
  virtual DeadlineFifo& deadlines() noexcept = 0;
  virtual void on_deadline(ConnectionId id) = 0;
  // The command's own counters now, read on this thread (ThreadReport::counters).
  virtual std::any counters() const = 0;
};

// One thread's counters, read on that thread: on SIGUSR1 and once it is done.
struct ThreadReport {
  Stats stats;
  CpuUsage cpu;                       // this thread's, since it started serving
  std::uint32_t max_connections = 0;  // its share of --max-connections
  std::any counters;                  // ShardServer::counters()
};

// What the threads did, added up: on SIGUSR1 and at exit (final).
struct RunReport {
  std::vector<ThreadReport> threads;
  Stats stats;   // their sum (peak_live_connections: the sum of the peaks, an upper bound)
  CpuUsage cpu;  // the whole process's, since it listened
  bool final = false;
};

// What a command brings to the runner.
struct ShardedCommand {
  // One thread's server, made on that thread; config.max_connections is the thread's share.
  std::function<std::unique_ptr<ShardServer>(const Config& config)> make_server;
  // Prints the line saying where it listens (scripts and tests wait for it on stdout).
  std::function<void(const Listening& first)> announce;
  // Prints the counters to stdout (not called with --quiet).
  std::function<void(const RunReport& report)> print;
  // Adds the command's own figures to the --json document, and to one thread's entry of its
  // per_thread array.
  std::function<void(const RunReport& report, nlohmann::json& json)> add_json;
  std::function<void(const ThreadReport& thread, nlohmann::json& entry)> add_thread_json;
};

// Runs `settings.threads` threads until SIGINT or SIGTERM, then stops them with --stop-grace;
// counters on SIGUSR1 and at exit. Returns the exit code; throws what a thread threw.
int run_sharded(const RunnerSettings& settings, const ShardedCommand& command);

// The same signals for a command that runs a server of its own (serve's naive and blocking):
// block them before any thread starts (threads inherit the mask), then wait on the main thread.
void block_signals();
// Returns on SIGINT or SIGTERM, calling `print` on each SIGUSR1; also returns when `ended` says
// the servers ended by themselves (it is asked every 250 ms).
void wait_for_stop(const std::function<void()>& print, const std::function<bool()>& ended);

// "3 clean, 1 peer_reset": the outcomes that happened, or "none".
std::string outcomes_text(const std::array<std::uint64_t, kOutcomeCount>& counts);

// Writes `path` through a temporary file and a rename, so a reader never sees half of it
// (SIGUSR1 rewrites it while the command runs).
void write_json(std::string_view command, const std::string& path, const nlohmann::json& json);

}  // namespace ringlinger::tools
