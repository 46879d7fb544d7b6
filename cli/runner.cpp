#include "runner.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <mutex>
#include <semaphore>
#include <system_error>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "address_flags.hpp"
#include "metrics_server.hpp"
#include "reload.hpp"
#include "settings_file.hpp"
#include "stats_json.hpp"

namespace ringlinger::tools {

CpuUsage CpuUsage::now(int who) {
  rusage usage{};
  getrusage(who, &usage);
  auto us = [](const timeval& tv) {
    return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000 + static_cast<std::uint64_t>(tv.tv_usec);
  };
  return {us(usage.ru_utime), us(usage.ru_stime), static_cast<std::uint64_t>(usage.ru_nvcsw),
          static_cast<std::uint64_t>(usage.ru_nivcsw)};
}

CpuUsage CpuUsage::since(const CpuUsage& start) const {
  return {user_us - start.user_us, system_us - start.system_us,
          voluntary_switches - start.voluntary_switches,
          involuntary_switches - start.involuntary_switches};
}

nlohmann::json cpu_json(const CpuUsage& cpu) {
  return {{"user_us", cpu.user_us},
          {"system_us", cpu.system_us},
          {"voluntary_context_switches", cpu.voluntary_switches},
          {"involuntary_context_switches", cpu.involuntary_switches}};
}

namespace {

// The longest a server thread waits before it looks for a request for its counters (SIGUSR1),
// and the main thread before it looks for a thread that ended by itself.
constexpr std::chrono::milliseconds kTick{250};

// --stop-grace's default. Manager::stop() grants 30 s by default, as long as the longest drain
// (Config::drain_timeout_ms), for a server that must not cut anyone short. The command line stops
// sooner on purpose: it is stopped by hand, by scripts and by tests, where half a minute spent on
// a peer that stopped reading is too long. Twice the drain idle timeout lets every connection
// that makes no progress end by its own timeout first; only one still making progress is reset.
constexpr std::chrono::milliseconds kStopGrace{2 * Config{}.drain_idle_timeout_ms};

// Most --threads: 4 per CPU, at most 64.
std::uint32_t max_threads() {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<std::uint32_t>(std::clamp<long>(4 * cpus, 4, 64));
}

// The --backend values of the library's backends, and their names in the JSON.
constexpr std::pair<std::string_view, IoBackend> kBackends[] = {
    {"auto", IoBackend::automatic}, {"uring", IoBackend::io_uring}, {"epoll", IoBackend::epoll}};

std::string_view backend_name(IoBackend backend) {
  for (const auto& [name, value] : kBackends) {
    if (value == backend) return name;
  }
  return "?";
}

}  // namespace

std::string RunnerFlags::default_stop_grace_text() {
  return duration_flag_text_ms(static_cast<std::uint64_t>(kStopGrace.count()));
}

std::string Listening::bound_text() const { return addresses_text(bound_all); }

namespace {

// --config: read when the command line is parsed, so that every flag of the command (the
// command's own too) has its value before the command looks at them. Errors wait for
// runner_settings(), which reports them like any bad flag.
void load_config_file(RunnerFlags& flags) {
  flags.typed = given_options(*flags.command);
  if (flags.config_path.empty()) return;
  try {
    const SettingsFile file = read_settings_file(flags.config_path);
    apply_settings(*flags.command, file, flags.typed);
    flags.from_file = file.by_name();
    for (const Setting& setting : file.settings) {
      if (!flags.typed.contains(setting.name)) {
        flags.file_lines.try_emplace(setting.name, fmt::format("--config {}:{}", file.path, setting.line));
      }
    }
  } catch (const UsageError& error) {
    flags.config_error = error.what();
  }
}

void add_operator_flags(CommandFlags command, RunnerFlags& flags) {
  command.add_option("--config", flags.config_path,
                     "Read flags from FILE: one 'name = value' per line, the long flag names "
                     "without dashes ('drain-idle-timeout = 2s'); flags on the command line win. "
                     "SIGHUP reads it again and applies the drain and send timeouts and caps to "
                     "new connections and timers")
      .type_name("FILE").group("Operation");
  command.add_flag("--check", flags.check,
                   "Check the flags and the --config file (addresses resolved, files writable), "
                   "say so and exit 0; exit 2 naming what is wrong")
      .group("Operation");
  command.add_option("--metrics", flags.metrics,
                     "Serve GET /metrics (Prometheus text format) on ADDRESS; may be repeated")
      .type_name("ADDRESS").group("Operation");
  command.add_option("--log", flags.log_path,
                     "Append a line for each connection that did not end clean (rate-limited), "
                     "start-up, reload and upstream errors to FILE; - is standard error. "
                     "SIGUSR1 reopens it (logrotate)")
      .type_name("FILE|-").group("Operation");
  command.add_option("--log-format", flags.log_format, "text (key=value) or json (one object per line)")
      .type_name("FORMAT").capture_default_str().group("Operation");
  command.parse_complete_callback([&flags] { load_config_file(flags); });
}

// Whether `path` (written through path.tmp and a rename) can be written: the temporary is
// created and removed. "-" is standard output.
void check_writable(std::string_view flag, const std::string& path) {
  if (path == "-") return;
  if (path.empty() || std::filesystem::is_directory(path)) {
    throw UsageError(fmt::format("{}: '{}' is not a file name", flag, path));
  }
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw UsageError(fmt::format("{}: cannot write {}: {}", flag, path, std::strerror(errno)));
  ::close(fd);
  ::unlink(temporary.c_str());
}

}  // namespace

void add_runner_flags(CommandFlags command, RunnerFlags& flags,
                      const std::vector<std::string>& more_backends,
                      std::string_view more_backends_help) {
  flags.command = &command.app();
  command.add_option("--listen", flags.listen,
                     "Address to listen on: 127.0.0.1:8080, [::1]:8080, localhost:8080 (every "
                     "address it resolves to), :8080 or *:8080 (every IPv4 address); port 0 picks "
                     "a free port; may be repeated")
      .type_name("ADDRESS").capture_default_str();
  std::vector<std::string> backends;
  for (const auto& [name, value] : kBackends) backends.emplace_back(name);
  backends.insert(backends.end(), more_backends.begin(), more_backends.end());
  command.add_option("--backend", flags.backend,
                     "auto (io_uring, or epoll where io_uring is unavailable), uring, epoll (the "
                     "library's two backends)" +
                         (more_backends_help.empty() ? "" : ", " + std::string(more_backends_help)))
      .one_of(backends).capture_default_str();
  command.add_option("--defer-accept", flags.defer_accept,
                     "on: the kernel hands a connection over only once its first bytes have "
                     "arrived (TCP_DEFER_ACCEPT, one second, as nginx's `listen ... deferred`), so "
                     "its first receive finds them instead of waiting: less CPU per connection. "
                     "For protocols where the client speaks first; a connection that sends "
                     "nothing is taken about a second after its connect, when it answers the "
                     "SYN-ACK the kernel sends again, and its timeouts start then")
      .one_of({"on", "off"}).capture_default_str();
  command.add_option("--threads", flags.threads,
                     "Run N managers (one io_uring ring or epoll set each) on N threads, each "
                     "listening on the --listen address with SO_REUSEPORT: the kernel spreads "
                     "connections among them by a hash of addresses and ports, and nothing is "
                     "shared between them. --max-connections stays the total (RLIMIT_NOFILE is per "
                     "process) and is divided among the threads, so one thread's table can fill "
                     "before the total is reached; every thread allocates its own ring and receive "
                     "buffers (serve also its latency sample: about 1 MiB more resident memory per "
                     "thread with the defaults). 1 to 4 per CPU (at most 64); uring, epoll and auto "
                     "backends")
      .check(whole_number(1, max_threads(), "4 per CPU, at most 64")).type_name("N")
      .capture_default_str();
  command.add_option("--stop-grace", flags.stop_grace,
                     "On SIGINT/SIGTERM, how long open and closing connections may take before "
                     "they are reset")
      .type_name("DURATION").capture_default_str();
  command.add_option("--json", flags.json_path,
                     "Write the configuration and counters to FILE on SIGUSR1 and at exit; - is "
                     "standard output")
      .type_name("FILE|-");
  command.add_flag("--quiet", flags.quiet, "Do not print the counters (on SIGUSR1 and at exit)");
  add_operator_flags(command, flags);
  add_drain_flags(command, flags.drain);
}

std::optional<IoBackend> library_backend(std::string_view flag) {
  for (const auto& [name, value] : kBackends) {
    if (name == flag) return value;
  }
  return std::nullopt;
}

namespace {

// --threads, --stop-grace and the drain flags.
void convert_engine_flags(const RunnerFlags& flags, RunnerSettings& settings) {
  // The range of --threads is its flag's check, which settings files pass through too.
  settings.threads = flags.threads;
  settings.stop_grace = std::chrono::milliseconds(duration_flag_ms("--stop-grace", flags.stop_grace));
  settings.config = to_config(flags.drain);
  settings.config.backend = library_backend(flags.backend).value_or(IoBackend::automatic);
  if (settings.config.max_connections < settings.threads) {
    throw UsageError(fmt::format("--max-connections: must be at least --threads ({}): it is the "
                                 "total, divided among the threads (got {})",
                                 settings.threads, settings.config.max_connections));
  }
}

}  // namespace

RunnerSettings runner_settings(std::string_view command, const RunnerFlags& flags) {
  if (!flags.config_error.empty()) throw UsageError(flags.config_error);
  RunnerSettings settings;
  settings.command = command;
  settings.flags = &flags;
  settings.listen_all = listen_addresses("--listen", flags.listen);
  settings.listen = settings.listen_all.front();
  settings.defer_accept = flags.defer_accept == "on";
  convert_engine_flags(flags, settings);
  if (!flags.json_path.empty()) check_writable("--json", flags.json_path);
  settings.json_path = flags.json_path;
  settings.quiet = flags.quiet;
  settings.check = flags.check;
  if (!flags.metrics.empty()) settings.metrics = listen_addresses("--metrics", flags.metrics);
  const LogFormat format = log_format_flag(flags.log_format);
  settings.log = flags.log_path.empty() ? std::make_shared<EventLog>()
                                        : std::make_shared<EventLog>(flags.log_path, format);
  return settings;
}

int with_config_context(const RunnerFlags& flags, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& error) {
    const std::string_view message = error.what();
    for (const auto& [name, line] : flags.file_lines) {
      if (message.starts_with("--" + name + ":")) throw UsageError(line + ": " + std::string(message));
    }
    throw;
  }
}

bool checked_only(const RunnerSettings& settings) {
  if (!settings.check) return false;
  const std::string& file = settings.flags != nullptr ? settings.flags->config_path : std::string();
  fmt::print("ringlinger {}: configuration is valid{}: listen {}\n", settings.command,
             file.empty() ? std::string() : " (" + file + ")", addresses_text(settings.listen_all));
  return true;
}

void notice(const RunnerSettings& settings, std::string_view message, bool error) noexcept {
  try {
    if (settings.log && settings.log->enabled()) {
      error ? settings.log->error(message) : settings.log->info(message);
      return;
    }
    fmt::print(stderr, "ringlinger {}: {}\n", settings.command, message);
  } catch (...) {
    // Nowhere left to say it (stderr closed): the server goes on.
  }
}

namespace {

// Every signal an operator's tools send: none of them ends the process but SIGINT and SIGTERM.
// SIGUSR2 (nginx's binary upgrade, HAProxy's reload) is taken and ignored rather than fatal;
// SIGPIPE too: a write to a closed --log or standard output must not kill a server.
sigset_t runner_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  for (const int signal : {SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP, SIGPIPE}) sigaddset(&signals, signal);
  return signals;
}

}  // namespace

void block_signals() {
  const sigset_t signals = runner_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void wait_for_stop(const SignalActions& actions, const std::function<bool()>& ended) {
  const sigset_t signals = runner_signals();
  const timespec tick{0, std::chrono::nanoseconds(kTick).count()};
  for (;;) {
    const int signal = sigtimedwait(&signals, nullptr, &tick);  // -1: the tick passed, or EINTR
    if (signal == SIGINT || signal == SIGTERM) return;
    if (signal == SIGUSR1 && actions.usr1) actions.usr1();
    if (signal == SIGHUP && actions.hup) actions.hup();
    if (actions.tick) actions.tick();
    if (ended && ended()) return;
  }
}

void wait_for_stop(const std::function<void()>& usr1, const std::function<bool()>& ended) {
  wait_for_stop(SignalActions{usr1, {}, {}}, ended);
}

std::string outcomes_text(const std::array<std::uint64_t, kOutcomeCount>& counts) {
  std::string text;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    if (counts[i] == 0) continue;
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", counts[i], to_string(static_cast<Outcome>(i)));
  }
  return text.empty() ? "none" : text;
}

void write_json(std::string_view command, const std::string& path, const nlohmann::json& json) {
  if (path == "-") {
    fmt::print("{}\n", json.dump(2));
    std::fflush(stdout);
    return;
  }
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary);
    file << json.dump(2) << "\n";
    if (!file) {
      fmt::print(stderr, "ringlinger {}: cannot write {}\n", command, temporary);
      return;
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) fmt::print(stderr, "ringlinger {}: cannot write {}: {}\n", command, path, error.message());
}

namespace {

void warn_about_fd_limit(const RunnerSettings& settings) {
  rlimit limit{};
  const std::uint32_t max_connections = settings.config.max_connections;  // all threads together
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < max_connections + 32u) {
    fmt::print(stderr,
               "ringlinger {}: warning: RLIMIT_NOFILE is {}, below --max-connections {} plus a "
               "few; new sockets (accepted or connected) will fail with EMFILE before the table "
               "is full\n",
               settings.command, limit.rlim_cur, max_connections);
  }
}

// With SO_REUSEPORT, a process of the same user already listening on the port would not make
// listen() fail: it would silently share the connections. Refuse that as one listener would: a
// bind without SO_REUSEPORT fails with EADDRINUSE when anything listens there (SO_REUSEADDR
// as the listeners have it, so TIME_WAIT leftovers do not count). Port 0 is always free.
void check_port_free(const SocketAddress& address) {
  if (address.port() == 0) return;
  const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;  // listen() will say what is wrong
  const int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const int result = ::bind(fd, address.data(), address.size());
  const int error = errno;
  ::close(fd);
  if (result != 0 && error == EADDRINUSE) {
    throw std::system_error(error, std::system_category(), "listen on " + address.to_string());
  }
}

// The process's counters from the threads': the one place where they are added up
// (Stats::operator+= covers every field; it fails to compile when one is added without it).
Stats total_stats(const std::vector<ThreadReport>& threads) {
  Stats total;
  for (const ThreadReport& thread : threads) total += thread.stats;
  return total;
}

// Where the threads leave their counters once they are done, and what they threw.
class ReportBoard {
 public:
  explicit ReportBoard(std::size_t threads) : slots_(threads) {}

  // A thread's counters: its first report once it serves, then each answer (collect()), then its
  // final one. What stands in for a thread that does not answer in time.
  void publish(std::size_t index, ThreadReport report, bool final = false) {
    std::lock_guard lock(mutex_);
    slots_[index].latest = std::move(report);
    slots_[index].done = slots_[index].done || final;
  }

  void fail(std::size_t index, std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    slots_[index].error = std::move(error);
    slots_[index].done = true;
  }

  // What each thread published last.
  std::vector<ThreadReport> latest() const {
    std::lock_guard lock(mutex_);
    std::vector<ThreadReport> reports;
    for (const Slot& slot : slots_) reports.push_back(slot.latest);
    return reports;
  }

  // A thread ended: by itself, on an error, unless the threads were stopped.
  bool any_done() const {
    std::lock_guard lock(mutex_);
    return std::any_of(slots_.begin(), slots_.end(), [](const Slot& slot) { return slot.done; });
  }

  void rethrow() const {
    std::lock_guard lock(mutex_);
    for (const Slot& slot : slots_) {
      if (slot.error) std::rethrow_exception(slot.error);
    }
  }

 private:
  struct Slot {
    ThreadReport latest;
    bool done = false;
    std::exception_ptr error;
  };

  mutable std::mutex mutex_;
  std::vector<Slot> slots_;
};

// How long the main thread (SIGUSR1, SIGHUP) and the metrics thread wait for a server thread to
// answer: it answers at its next loop step, at once unless it is stuck.
constexpr std::chrono::milliseconds kAnswerWait{2000};

// One thread: its ShardServer (and Manager) is made, listens and runs on it.
class ShardThread {
 public:
  ShardThread(std::uint32_t index, const Config& config, const ShardedCommand& command,
              ReportBoard& board, EventLog& log)
      : index_(index), config_(config), command_(command), board_(board), log_(log) {}
  // A thread that is still running (another one failed to start) is stopped at once.
  ~ShardThread() {
    if (!thread_.joinable()) return;
    stop(std::chrono::milliseconds(0));
    join();
  }
  ShardThread(const ShardThread&) = delete;
  ShardThread& operator=(const ShardThread&) = delete;

  // Starts the thread; returns once it listens on every address, or rethrows what making its
  // server or listening threw.
  Listening start(const std::vector<SocketAddress>& addresses, const ListenOptions& options) {
    std::future<Listening> listening = listening_.get_future();
    thread_ = std::thread([this, addresses, options] { body(addresses, options); });
    return listening.get();
  }

  // Manager::stop is thread-safe and wakes the thread's wait.
  void stop(std::chrono::milliseconds grace) noexcept {
    if (Manager* manager = manager_.load()) manager->stop(grace);
  }

  // Runs `task` on the thread (Manager::post), with its server; false if it cannot be queued.
  bool post(std::function<void(ShardServer&)> task) {
    Manager* manager = manager_.load();
    return manager != nullptr && !manager->post([this, task = std::move(task)] { task(*server_); });
  }

  // Asks the thread for its counters; the future is ready once it answered.
  std::optional<std::future<ThreadReport>> ask() {
    auto promise = std::make_shared<std::promise<ThreadReport>>();
    std::future<ThreadReport> answer = promise->get_future();
    if (!post([this, promise](ShardServer& server) { promise->set_value(report(server)); })) return std::nullopt;
    return answer;
  }

  // Waits for the thread to end (after stop()).
  void join() {
    released_.release();  // every stop() call is done: the thread may destroy its manager
    thread_.join();
  }

  const Config& config() const noexcept { return config_; }

 private:
  Listening listen_all(Manager& manager, const std::vector<SocketAddress>& addresses,
                       const ListenOptions& options) {
    Listening listening{{}, {}, manager.backend(), manager.describe_backend()};
    for (const SocketAddress& address : addresses) listening.bound_all.push_back(manager.listen(address, options));
    listening.bound = listening.bound_all.front();
    return listening;
  }

  void body(const std::vector<SocketAddress>& addresses, const ListenOptions& options) {
    const std::string name = fmt::format("ringlinger-s{}", index_);
    pthread_setname_np(pthread_self(), name.c_str());  // for top -H, taskset -p (bench/threads.sh)
    try {
      server_ = command_.make_server(config_);
      server_->set_log(log_, config_.max_connections);
      Listening listening = listen_all(server_->manager(), addresses, options);
      manager_.store(&server_->manager());
      listening_.set_value(std::move(listening));
    } catch (...) {
      server_.reset();  // here: a ring is torn down by the thread that drives it
      listening_.set_exception(std::current_exception());
      return;
    }
    try {
      serve(*server_);
    } catch (...) {
      board_.fail(index_, std::current_exception());
    }
    released_.acquire();  // the main thread may still be inside manager->stop()
    manager_.store(nullptr);
    server_.reset();  // on this thread, as above; nothing is posted to it after join() released it
  }

  ThreadReport report(ShardServer& server) const {
    return ThreadReport{server.stats(), CpuUsage::now(RUSAGE_THREAD).since(cpu_at_start_),
                        config_.max_connections, server.counters()};
  }

  // Runs the manager until it stops, expiring the server's deadlines.
  void serve(ShardServer& server) {
    Manager& manager = server.manager();
    DeadlineFifo& deadlines = server.deadlines();
    cpu_at_start_ = CpuUsage::now(RUSAGE_THREAD);
    board_.publish(index_, report(server));  // the command's counters are never missing
    const std::function<void(ConnectionId)> expired = [&](ConnectionId id) { server.on_deadline(id); };
    while (manager.run_once(deadlines.wait(kTick))) {
      deadlines.expire(std::chrono::steady_clock::now(), expired);
    }
    board_.publish(index_, report(server), true);
  }

  const std::uint32_t index_;
  const Config config_;  // max_connections is this thread's share
  const ShardedCommand& command_;
  ReportBoard& board_;
  EventLog& log_;
  std::thread thread_;
  std::promise<Listening> listening_;
  std::unique_ptr<ShardServer> server_;  // made, used and destroyed on the thread
  std::atomic<Manager*> manager_{nullptr};
  std::binary_semaphore released_{0};
  CpuUsage cpu_at_start_;
};

using ShardThreads = std::vector<std::unique_ptr<ShardThread>>;

// Every thread's counters now: asked at once, each answers at its next loop step. A thread that
// does not answer within kAnswerWait (or has ended) is represented by what it published last, so
// that no counter appears to go back.
std::vector<ThreadReport> collect(ShardThreads& threads, ReportBoard& board) {
  std::vector<std::optional<std::future<ThreadReport>>> answers;
  for (auto& thread : threads) answers.push_back(thread->ask());
  std::vector<ThreadReport> reports = board.latest();
  const auto until = std::chrono::steady_clock::now() + kAnswerWait;
  for (std::size_t i = 0; i < answers.size(); ++i) {
    if (!answers[i] || answers[i]->wait_until(until) != std::future_status::ready) continue;
    try {
      reports[i] = answers[i]->get();
      board.publish(i, reports[i]);
    } catch (const std::future_error&) {
      // the manager finished before the task ran: keep what the thread published
    }
  }
  return reports;
}

// Thread `index`'s share of --max-connections: the total divided, the first ones get the
// remainder.
Config share_of(const Config& config, std::uint32_t index, std::uint32_t threads) {
  Config share = config;
  share.max_connections = config.max_connections / threads + (index < config.max_connections % threads ? 1 : 0);
  return share;
}

// Starts the threads: the first binds the addresses (port 0 picks a port), the others the ports
// it got. Returns what the first reports.
Listening start_threads(const RunnerSettings& settings, const ShardedCommand& command,
                        ReportBoard& board, ShardThreads& threads) {
  const std::uint32_t count = settings.threads;
  if (count > 1) {
    for (const SocketAddress& address : settings.listen_all) check_port_free(address);
  }
  Listening first;
  for (std::uint32_t i = 0; i < count; ++i) {
    threads.push_back(std::make_unique<ShardThread>(i, share_of(settings.config, i, count), command,
                                                    board, *settings.log));
    const ListenOptions options{.reuse_port = count > 1, .defer_accept = settings.defer_accept};
    Listening listening = threads.back()->start(i == 0 ? settings.listen_all : first.bound_all, options);
    if (i == 0) first = std::move(listening);
  }
  return first;
}

// Adds up the threads' counters, prints them, writes the JSON and the metrics page.
class Reporter {
 public:
  Reporter(const RunnerSettings& settings, const ShardedCommand& command, const Listening& first)
      : settings_(settings), command_(command), first_(first), cpu_at_start_(CpuUsage::now()) {}

  RunReport sum(std::vector<ThreadReport> threads, bool final) const {
    RunReport report{std::move(threads), {}, CpuUsage::now().since(cpu_at_start_), final};
    report.stats = total_stats(report.threads);
    return report;
  }

  void report(std::vector<ThreadReport> threads, bool final) const {
    const RunReport report = sum(std::move(threads), final);
    if (!settings_.quiet) {
      command_.print(report);
      std::fflush(stdout);
    }
    if (!settings_.json_path.empty()) write_json(settings_.command, settings_.json_path, json_of(report));
  }

  std::string metrics(std::vector<ThreadReport> threads) const {
    const RunReport report = sum(std::move(threads), false);
    PrometheusText out;
    add_library_metrics(out, report.stats);
    out.family("ringlinger_process_cpu_seconds_total", "counter",
               "CPU time of the whole process since it listened, by mode");
    out.sample(static_cast<double>(report.cpu.user_us) / 1e6, {{"mode", "user"}});
    out.sample(static_cast<double>(report.cpu.system_us) / 1e6, {{"mode", "system"}});
    if (command_.add_metrics) command_.add_metrics(report, out);
    return out.text();
  }

 private:
  nlohmann::json json_of(const RunReport& report) const {
    nlohmann::json per_thread = nlohmann::json::array();
    for (const ThreadReport& thread : report.threads) {
      nlohmann::json entry = {
          {"connections_accepted", thread.stats.connections_accepted},
          {"connections_closed", thread.stats.closed_connections()},
          {"live_connections", thread.stats.live_connections()},
          {"peak_live_connections", thread.stats.peak_live_connections},
          {"max_connections", thread.max_connections},
          {"cpu", {{"user_us", thread.cpu.user_us}, {"system_us", thread.cpu.system_us}}}};
      if (command_.add_thread_json) command_.add_thread_json(thread, entry);
      per_thread.push_back(std::move(entry));
    }
    nlohmann::json listen = nlohmann::json::array();
    for (const SocketAddress& address : first_.bound_all) listen.push_back(address.to_string());
    nlohmann::json json = {
        {"backend", backend_name(first_.backend)},
        {"backend_description", first_.backend_description},
        {"listen", first_.bound.to_string()},
        {"listen_all", std::move(listen)},
        {"threads", settings_.threads},
        {"defer_accept", settings_.defer_accept},
        {"config", config_json(settings_.config)},
        {"stats", stats_json(report.stats)},
        {"cpu", cpu_json(report.cpu)},
        {"per_thread", std::move(per_thread)}};
    if (command_.add_json) command_.add_json(report, json);
    return json;
  }

  const RunnerSettings& settings_;
  const ShardedCommand& command_;
  const Listening first_;
  const CpuUsage cpu_at_start_;
};

// The start-up lines of the log.
void log_start(const RunnerSettings& settings, const Listening& first, const MetricsServer* metrics) {
  EventLog& log = *settings.log;
  log.info("listening", {{"command", settings.command},
                         {"address", first.bound_text()},
                         {"backend", first.backend_description},
                         {"threads", std::to_string(settings.threads)}});
  const Config& config = settings.config;
  log.info("configuration",
           {{"config", settings.flags != nullptr ? settings.flags->config_path : std::string()},
            {"drain_idle_timeout", duration_flag_text_ms(config.drain_idle_timeout_ms)},
            {"drain_timeout", duration_flag_text_ms(config.drain_timeout_ms)},
            {"drain_max_bytes", bytes_flag_text(config.drain_max_bytes)},
            {"send_timeout", duration_flag_text_ms(config.send_timeout_ms)},
            {"max_connections", std::to_string(config.max_connections)},
            {"stop_grace", duration_flag_text_ms(static_cast<std::uint64_t>(settings.stop_grace.count()))}});
  if (metrics != nullptr) log.info("metrics", {{"address", addresses_text(metrics->bound())}});
}

// SIGHUP's new timeouts and caps, for each thread's manager on its own thread.
void reconfigure_threads(ShardThreads& threads, const Config& config, const RunnerSettings& settings) {
  for (auto& thread : threads) {
    Config share = config;
    share.max_connections = thread->config().max_connections;
    const bool queued = thread->post([share, &settings](ShardServer& server) {
      try {
        server.manager().reconfigure(share);
      } catch (const std::exception& error) {
        notice(settings, fmt::format("SIGHUP: a thread kept its configuration: {}", error.what()), true);
      }
    });
    if (!queued) notice(settings, "SIGHUP: a thread that is stopping kept its configuration", true);
  }
}

// The metrics page: served from its own thread once the threads listen (a scrape before that
// gets 500: the render throws).
class MetricsPage {
 public:
  MetricsPage(const RunnerSettings& settings, ShardThreads& threads, ReportBoard& board) {
    if (settings.metrics.empty()) return;
    server_.emplace(settings.metrics, [this, &threads, &board] {
      const Reporter* reporter = reporter_.load();
      if (reporter == nullptr) throw std::runtime_error("starting");
      return reporter->metrics(collect(threads, board));
    });
  }
  void serve(const Reporter& reporter) noexcept { reporter_.store(&reporter); }
  const MetricsServer* server() const noexcept { return server_ ? &*server_ : nullptr; }
  // Before the threads stop: no scrape reaches a stopping thread.
  void close() noexcept { server_.reset(); }

 private:
  std::atomic<const Reporter*> reporter_{nullptr};
  std::optional<MetricsServer> server_;
};

}  // namespace

void ShardServer::set_log(EventLog& log, std::uint32_t max_connections) {
  log_ = &log;
  if (log.enabled()) peers_.emplace(max_connections);
}

void ShardServer::remember_peer(ConnectionId id) { peers_->remember(id, manager().fd(id)); }

void ShardServer::log_closed_now(ConnectionId id, std::string_view role, const CloseReport& report,
                                 const SocketAddress* peer) {
  std::optional<SocketAddress> remembered = peers_->take(id);
  if (report.outcome != Outcome::clean) {
    log_->connection({role, peer != nullptr ? std::optional(*peer) : remembered, report});
  }
}

void ShardServer::log_upstream_error(ConnectionId client, const SocketAddress& upstream, int error) {
  if (!log_->enabled()) return;
  sockaddr_storage peer{};
  socklen_t length = sizeof(peer);
  const int fd = manager().fd(client);
  const bool known = fd >= 0 && ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &length) == 0;
  log_->upstream_error(known ? std::optional(SocketAddress(reinterpret_cast<const sockaddr*>(&peer), length))
                             : std::nullopt,
                       upstream, error);
}

int run_sharded(const RunnerSettings& settings, const ShardedCommand& command) {
  warn_about_fd_limit(settings);
  if (checked_only(settings)) return 0;
  // Before any thread starts, so that every one inherits the mask and the signals come only to
  // this thread's wait. They stay blocked: a second signal while stopping changes nothing.
  block_signals();
  ReportBoard board(settings.threads);
  ShardThreads threads;  // after the board they report to
  std::optional<Reporter> reporter;  // before the metrics page: it outlives the page's thread
  MetricsPage metrics(settings, threads, board);  // binds first: a bad --metrics starts nothing
  const Listening first = start_threads(settings, command, board, threads);
  reporter.emplace(settings, command, first);
  metrics.serve(*reporter);
  command.announce(first);
  if (metrics.server() != nullptr) {
    for (const SocketAddress& address : metrics.server()->bound()) {
      fmt::print("ringlinger {}: metrics on http://{}/metrics\n", settings.command, address.to_string());
    }
  }
  std::fflush(stdout);
  log_start(settings, first, metrics.server());
  Reloader reloader(settings, [&](const Config& config) { reconfigure_threads(threads, config, settings); });
  // A signal's work that fails (stdout gone, a full disk) is said and the server goes on.
  const auto guarded = [&settings](std::string_view what, std::function<void()> action) {
    return [&settings, what, action = std::move(action)] {
      try {
        action();
      } catch (const std::exception& error) {
        notice(settings, fmt::format("{}: {}", what, error.what()), true);
      }
    };
  };
  const SignalActions actions{guarded("SIGUSR1", [&] {
                                settings.log->reopen();
                                reporter->report(collect(threads, board), false);
                              }),
                              guarded("SIGHUP", [&] { reloader.reload(); }),
                              guarded("log", [&] { settings.log->flush(); })};
  wait_for_stop(actions, [&] { return board.any_done(); });
  metrics.close();
  for (auto& thread : threads) thread->stop(reloader.stop_grace());
  for (auto& thread : threads) thread->join();
  board.rethrow();
  reporter->report(board.latest(), true);
  settings.log->info("stopped", {{"command", settings.command}});
  settings.log->flush();
  return 0;
}

}  // namespace ringlinger::tools
