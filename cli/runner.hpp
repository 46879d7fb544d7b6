// The threaded runner of `serve` and `proxy`: the flags they share (and --config, the file that
// holds them), N threads each driving one Manager behind the same addresses (SO_REUSEPORT), the
// signals (SIGINT/SIGTERM stop, SIGHUP reloads the configuration, SIGUSR1 prints the counters
// and reopens the log), a stop with a grace period, the threads' counters added up, printed,
// written as JSON and served as Prometheus metrics, and the log. A command brings only its
// per-connection logic (a ShardServer on each thread), its own counters and how it shows them.
#pragma once

#include <sys/resource.h>

#include <any>
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "deadline_fifo.hpp"
#include "event_log.hpp"
#include "prometheus.hpp"
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

// The flags every runner command shares, as typed.
struct RunnerFlags {
  std::vector<std::string> listen = {"127.0.0.1:8080"};
  std::string backend = "auto";
  // "on" or "off"; a command sets its default before add_runner_flags.
  std::string defer_accept = "off";
  std::string stop_grace = default_stop_grace_text();
  std::uint32_t threads = 1;
  std::string json_path;
  bool quiet = false;
  std::string config_path;
  bool check = false;
  std::vector<std::string> metrics;
  std::string log_path;
  std::string log_format = "text";
  DrainFlags drain;

  // Set by add_runner_flags: the command the flags belong to (--config gives its options values).
  CLI::App* command = nullptr;
  // The command line's values, kept for a reload (SIGHUP): they still win over the file.
  std::map<std::string, std::vector<std::string>> typed;
  // What --config said, or why it could not be read (reported by runner_settings).
  std::map<std::string, std::vector<std::string>> from_file;
  std::map<std::string, std::string> file_lines;  // name -> "--config PATH:LINE", if given there
  std::string config_error;

  // --stop-grace's default, spelled as the flag.
  static std::string default_stop_grace_text();
};
// Adds them to `command`. `more_backends` are the command's own --backend values besides auto,
// uring and epoll (the library's), `more_backends_help` says what they are.
void add_runner_flags(CommandFlags command, RunnerFlags& flags,
                      const std::vector<std::string>& more_backends = {},
                      std::string_view more_backends_help = {});

// The library's backend a --backend value names; nullopt for a command's own (serve's naive).
std::optional<IoBackend> library_backend(std::string_view flag);

// The shared flags checked and converted.
struct RunnerSettings {
  std::string command;  // "serve": what the program's messages begin with
  std::vector<SocketAddress> listen_all;  // every --listen address, hostnames resolved
  SocketAddress listen;                   // the first of them
  bool defer_accept = false;              // --defer-accept on: TCP_DEFER_ACCEPT on each listener
  std::uint32_t threads = 1;
  std::chrono::milliseconds stop_grace{0};
  Config config;  // the total --max-connections; backend from --backend
  std::string json_path;  // "-": standard output
  bool quiet = false;
  bool check = false;  // --check: everything is valid; start nothing
  std::vector<SocketAddress> metrics;
  std::shared_ptr<EventLog> log;  // disabled without --log
  const RunnerFlags* flags = nullptr;  // for a reload
};
// Throws UsageError naming the flag for a bad value (or the --config file's line). Resolves
// hostnames and checks that the files it will write can be written.
RunnerSettings runner_settings(std::string_view command, const RunnerFlags& flags);

// Runs a command's body; a UsageError about a flag whose value came from the --config file
// gets the file's line in front ("--config /etc/x.conf:3: --drain-timeout: ...").
int with_config_context(const RunnerFlags& flags, const std::function<int()>& body);

// With --check: says the configuration is valid and returns true (the command exits 0).
bool checked_only(const RunnerSettings& settings);

// A line for the operator: to the --log when there is one, otherwise to standard error.
void notice(const RunnerSettings& settings, std::string_view message, bool error = false) noexcept;

// What the first thread reports once it listens.
struct Listening {
  std::vector<SocketAddress> bound_all;  // port 0 resolved; as many as --listen addresses
  SocketAddress bound;                   // the first of them
  IoBackend backend = IoBackend::automatic;  // the one in use: io_uring or epoll
  std::string backend_description;

  // "127.0.0.1:8080" or "127.0.0.1:8080 and [::1]:8080".
  std::string bound_text() const;
};

// A command's per-connection logic around the Manager of one thread, created and driven on that
// thread (a ring belongs to the thread that drives it).
class ShardServer {
 public:
  virtual ~ShardServer() = default;
  // The log of connections that did not end clean; set by the runner before the first accept.
  void set_log(EventLog& log, std::uint32_t max_connections);
  virtual Manager& manager() noexcept = 0;
  // The connections waiting for a deadline, and what to do with one whose deadline passed.
  virtual DeadlineFifo& deadlines() noexcept = 0;
  virtual void on_deadline(ConnectionId id) = 0;
  // The command's own counters now, read on this thread (ThreadReport::counters).
  virtual std::any counters() const = 0;
  // The library's counters now, with what the command does on the data path beside the library
  // (the proxy writes what a socket takes at once itself): read on this thread.
  virtual Stats stats() { return manager().stats(); }

 protected:
  // For the command's callbacks: remember a new connection's peer (only when the log is on:
  // one getpeername(2)), and log one that ended other than clean.
  void log_accepted(ConnectionId id) {
    if (peers_) remember_peer(id);  // inline, as log_closed(): the log is usually off
  }
  // `peer`: for a connection the command made itself (the proxy's upstream legs), whose peer
  // was not remembered at accept. Inline: with the log off (the usual case) a close pays one
  // test, not a call; a pointer, not a std::optional, so the caller builds no argument for it.
  void log_closed(ConnectionId id, std::string_view role, const CloseReport& report,
                  const SocketAddress* peer = nullptr) {
    if (peers_) log_closed_now(id, role, report, peer);
  }
  // The proxy's upstream connect to `upstream` for `client` failed (error 0: timed out).
  void log_upstream_error(ConnectionId client, const SocketAddress& upstream, int error);
  EventLog& log() noexcept { return *log_; }

 private:
  [[gnu::noinline]] void remember_peer(ConnectionId id);
  void log_closed_now(ConnectionId id, std::string_view role, const CloseReport& report,
                      const SocketAddress* peer);

  EventLog disabled_log_;
  EventLog* log_ = &disabled_log_;
  std::optional<PeerBook> peers_;
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
  // Adds the command's own families to the --metrics page.
  std::function<void(const RunReport& report, PrometheusText& out)> add_metrics;
};

// Runs `settings.threads` threads until SIGINT or SIGTERM, then stops them with --stop-grace;
// counters on SIGUSR1 and at exit, the configuration file read again on SIGHUP, metrics on
// --metrics. Returns the exit code; throws what a thread threw.
int run_sharded(const RunnerSettings& settings, const ShardedCommand& command);

// The same signals for a command that runs a server of its own (serve's naive and blocking):
// block them before any thread starts (threads inherit the mask), then wait on the main thread.
void block_signals();
// What the main thread does on each signal but SIGINT and SIGTERM.
struct SignalActions {
  std::function<void()> usr1;  // counters, and reopen the log
  std::function<void()> hup;   // read the configuration again
  std::function<void()> tick;  // after each signal, and at least every 250 ms
};
// Returns on SIGINT or SIGTERM, running `actions` on SIGUSR1 and SIGHUP; also returns when
// `ended` says the servers ended by themselves (it is asked every 250 ms).
void wait_for_stop(const SignalActions& actions, const std::function<bool()>& ended);
// The same with only SIGUSR1's action.
void wait_for_stop(const std::function<void()>& usr1, const std::function<bool()>& ended);

// "3 clean, 1 peer_reset": the outcomes that happened, or "none".
std::string outcomes_text(const std::array<std::uint64_t, kOutcomeCount>& counts);

// Writes `path` through a temporary file and a rename, so a reader never sees half of it
// (SIGUSR1 rewrites it while the command runs); "-" writes to standard output.
void write_json(std::string_view command, const std::string& path, const nlohmann::json& json);

}  // namespace ringlinger::tools
