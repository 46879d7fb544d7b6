#include "runner.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <semaphore>
#include <system_error>
#include <thread>
#include <utility>

#include <fmt/format.h>

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

void DeadlineFifo::add(ConnectionId id) {
  if (timeout_.count() > 0) deadlines_.push_back({id, std::chrono::steady_clock::now() + timeout_});
}

std::chrono::milliseconds DeadlineFifo::wait(std::chrono::milliseconds longest) const {
  if (deadlines_.empty()) return longest;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadlines_.front().at -
                                                                 std::chrono::steady_clock::now());
  return std::clamp(left, std::chrono::milliseconds(1), longest);
}

void DeadlineFifo::expire(std::chrono::steady_clock::time_point now,
                          const std::function<void(ConnectionId)>& expired) {
  while (!deadlines_.empty() && deadlines_.front().at <= now) {
    const ConnectionId id = deadlines_.front().id;
    deadlines_.pop_front();
    expired(id);
  }
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

SocketAddress address_flag(std::string_view flag, const std::string& text) {
  auto address = SocketAddress::parse(text);
  if (!address) {
    throw UsageError(std::string(flag) + ": '" + text +
                     "' is not an address like 127.0.0.1:8080 or [::1]:8080");
  }
  return *address;
}

std::string RunnerFlags::default_stop_grace_text() {
  return duration_flag_text_ms(static_cast<std::uint64_t>(kStopGrace.count()));
}

void add_runner_flags(CLI::App& command, RunnerFlags& flags,
                      const std::vector<std::string>& more_backends,
                      std::string_view more_backends_help) {
  command.add_option("--listen", flags.listen, "Address to listen on; port 0 picks a free port")
      ->type_name("ADDRESS")->capture_default_str();
  std::vector<std::string> backends;
  for (const auto& [name, value] : kBackends) backends.emplace_back(name);
  backends.insert(backends.end(), more_backends.begin(), more_backends.end());
  command.add_option("--backend", flags.backend,
                     "auto (io_uring, or epoll where io_uring is unavailable), uring, epoll (the "
                     "library's two backends)" +
                         (more_backends_help.empty() ? "" : ", " + std::string(more_backends_help)))
      ->check(CLI::IsMember(backends))->capture_default_str();
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
      ->type_name("N")->capture_default_str();
  command.add_option("--stop-grace", flags.stop_grace,
                     "On SIGINT/SIGTERM, how long open and closing connections may take before "
                     "they are reset")
      ->type_name("DURATION")->capture_default_str();
  command.add_option("--json", flags.json_path,
                     "Write the configuration and counters to FILE on SIGUSR1 and at exit")
      ->type_name("FILE");
  command.add_flag("--quiet", flags.quiet, "Do not print the counters (on SIGUSR1 and at exit)");
  add_drain_flags(command, flags.drain);
}

std::optional<IoBackend> library_backend(std::string_view flag) {
  for (const auto& [name, value] : kBackends) {
    if (name == flag) return value;
  }
  return std::nullopt;
}

RunnerSettings runner_settings(std::string_view command, const RunnerFlags& flags) {
  RunnerSettings settings;
  settings.command = command;
  settings.listen = address_flag("--listen", flags.listen);
  if (flags.threads < 1 || flags.threads > max_threads()) {
    throw UsageError(fmt::format("--threads: must be between 1 and {} (4 per CPU, at most 64) "
                                 "(got {})",
                                 max_threads(), flags.threads));
  }
  settings.threads = flags.threads;
  settings.stop_grace = std::chrono::milliseconds(duration_flag_ms("--stop-grace", flags.stop_grace));
  settings.config = to_config(flags.drain);
  settings.config.backend = library_backend(flags.backend).value_or(IoBackend::automatic);
  if (settings.config.max_connections < settings.threads) {
    throw UsageError(fmt::format("--max-connections: must be at least --threads ({}): it is the "
                                 "total, divided among the threads (got {})",
                                 settings.threads, settings.config.max_connections));
  }
  settings.json_path = flags.json_path;
  settings.quiet = flags.quiet;
  return settings;
}

void block_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  for (const int signal : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, signal);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

void wait_for_stop(const std::function<void()>& print, const std::function<bool()>& ended) {
  sigset_t signals;
  sigemptyset(&signals);
  for (const int signal : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&signals, signal);
  const timespec tick{0, std::chrono::nanoseconds(kTick).count()};
  for (;;) {
    const int signal = sigtimedwait(&signals, nullptr, &tick);  // -1: the tick passed, or EINTR
    if (signal == SIGINT || signal == SIGTERM) return;
    if (signal == SIGUSR1) print();
    if (ended && ended()) return;
  }
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

// Where the threads leave their counters for the main thread: when it asks (SIGUSR1) and once
// they are done.
class ReportBoard {
 public:
  explicit ReportBoard(std::size_t threads) : slots_(threads) {}

  // The number of the latest request; a thread answers each one it sees.
  std::uint64_t requested() const noexcept { return requested_.load(); }

  void publish(std::size_t index, ThreadReport report, std::uint64_t answered, bool done) {
    {
      std::lock_guard lock(mutex_);
      slots_[index].latest = std::move(report);
      slots_[index].answered = answered;
      slots_[index].done = done;
    }
    changed_.notify_all();
  }

  void fail(std::size_t index, std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      slots_[index].error = std::move(error);
      slots_[index].done = true;
    }
    changed_.notify_all();
  }

  // Asks every thread for its counters; returns them once each answered (or is done).
  std::vector<ThreadReport> collect() {
    const std::uint64_t request = requested_.fetch_add(1) + 1;
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] {
      return std::all_of(slots_.begin(), slots_.end(),
                         [&](const Slot& slot) { return slot.done || slot.answered == request; });
    });
    return latest_locked();
  }

  // What each thread published last.
  std::vector<ThreadReport> latest() const {
    std::lock_guard lock(mutex_);
    return latest_locked();
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
    std::uint64_t answered = 0;
    bool done = false;
    std::exception_ptr error;
  };

  std::vector<ThreadReport> latest_locked() const {
    std::vector<ThreadReport> reports;
    for (const Slot& slot : slots_) reports.push_back(slot.latest);
    return reports;
  }

  std::atomic<std::uint64_t> requested_{0};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Slot> slots_;
};

// One thread: its ShardServer (and Manager) is made, listens and runs on it.
class ShardThread {
 public:
  ShardThread(std::uint32_t index, const Config& config, const ShardedCommand& command,
              ReportBoard& board)
      : index_(index), config_(config), command_(command), board_(board) {}
  // A thread that is still running (another one failed to start) is stopped at once.
  ~ShardThread() {
    if (!thread_.joinable()) return;
    stop(std::chrono::milliseconds(0));
    join();
  }
  ShardThread(const ShardThread&) = delete;
  ShardThread& operator=(const ShardThread&) = delete;

  // Starts the thread; returns once it listens on `address`, or rethrows what making its server
  // or listening threw.
  Listening start(const SocketAddress& address, bool reuse_port) {
    std::future<Listening> listening = listening_.get_future();
    thread_ = std::thread([this, address, reuse_port] { body(address, reuse_port); });
    return listening.get();
  }

  // Manager::stop is thread-safe and wakes the thread's wait.
  void stop(std::chrono::milliseconds grace) noexcept {
    if (Manager* manager = manager_.load()) manager->stop(grace);
  }

  // Waits for the thread to end (after stop()).
  void join() {
    released_.release();  // every stop() call is done: the thread may destroy its manager
    thread_.join();
  }

 private:
  void body(const SocketAddress& address, bool reuse_port) {
    const std::string name = fmt::format("ringlinger-s{}", index_);
    pthread_setname_np(pthread_self(), name.c_str());  // for top -H, taskset -p (bench/threads.sh)
    std::unique_ptr<ShardServer> server;
    try {
      server = command_.make_server(config_);
      Manager& manager = server->manager();
      Listening listening{manager.listen(address, 4096, reuse_port), manager.backend(),
                          manager.describe_backend()};
      manager_.store(&manager);
      listening_.set_value(std::move(listening));
    } catch (...) {
      listening_.set_exception(std::current_exception());
      return;
    }
    try {
      serve(*server);
    } catch (...) {
      board_.fail(index_, std::current_exception());
    }
    released_.acquire();  // the main thread may still be inside manager->stop()
  }

  // Runs the manager until it stops, expiring the server's deadlines and answering requests for
  // the counters at least every tick.
  void serve(ShardServer& server) {
    Manager& manager = server.manager();
    DeadlineFifo& deadlines = server.deadlines();
    const CpuUsage cpu_at_start = CpuUsage::now(RUSAGE_THREAD);
    auto report = [&] {
      return ThreadReport{manager.stats(), CpuUsage::now(RUSAGE_THREAD).since(cpu_at_start),
                          config_.max_connections, server.counters()};
    };
    const std::function<void(ConnectionId)> expired = [&](ConnectionId id) { server.on_deadline(id); };
    std::uint64_t answered = 0;
    while (manager.run_once(deadlines.wait(kTick))) {
      deadlines.expire(std::chrono::steady_clock::now(), expired);
      if (const std::uint64_t requested = board_.requested(); requested != answered) {
        answered = requested;
        board_.publish(index_, report(), answered, false);
      }
    }
    board_.publish(index_, report(), board_.requested(), true);
  }

  const std::uint32_t index_;
  const Config config_;  // max_connections is this thread's share
  const ShardedCommand& command_;
  ReportBoard& board_;
  std::thread thread_;
  std::promise<Listening> listening_;
  std::atomic<Manager*> manager_{nullptr};
  std::binary_semaphore released_{0};
};

// Thread `index`'s share of --max-connections: the total divided, the first ones get the
// remainder.
Config share_of(const Config& config, std::uint32_t index, std::uint32_t threads) {
  Config share = config;
  share.max_connections = config.max_connections / threads + (index < config.max_connections % threads ? 1 : 0);
  return share;
}

// Starts the threads: the first binds the address (port 0 picks a port), the others the port it
// got. Returns what the first reports.
Listening start_threads(const RunnerSettings& settings, const ShardedCommand& command,
                        ReportBoard& board, std::vector<std::unique_ptr<ShardThread>>& threads) {
  const std::uint32_t count = settings.threads;
  if (count > 1) check_port_free(settings.listen);
  Listening first;
  for (std::uint32_t i = 0; i < count; ++i) {
    threads.push_back(std::make_unique<ShardThread>(i, share_of(settings.config, i, count), command, board));
    Listening listening = threads.back()->start(i == 0 ? settings.listen : first.bound, count > 1);
    if (i == 0) first = std::move(listening);
  }
  return first;
}

// Adds up the threads' counters, prints them and writes the JSON.
class Reporter {
 public:
  Reporter(const RunnerSettings& settings, const ShardedCommand& command, const Listening& first)
      : settings_(settings), command_(command), first_(first), cpu_at_start_(CpuUsage::now()) {}

  void report(std::vector<ThreadReport> threads, bool final) const {
    RunReport report{std::move(threads), {}, CpuUsage::now().since(cpu_at_start_), final};
    report.stats = total_stats(report.threads);
    if (!settings_.quiet) {
      command_.print(report);
      std::fflush(stdout);
    }
    if (!settings_.json_path.empty()) write_json(settings_.command, settings_.json_path, json_of(report));
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
    nlohmann::json json = {
        {"backend", backend_name(first_.backend)},
        {"backend_description", first_.backend_description},
        {"listen", first_.bound.to_string()},
        {"threads", settings_.threads},
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

}  // namespace

int run_sharded(const RunnerSettings& settings, const ShardedCommand& command) {
  warn_about_fd_limit(settings);
  // Before any thread starts, so that every one inherits the mask and the signals come only to
  // this thread's wait. They stay blocked: a second signal while stopping changes nothing.
  block_signals();
  ReportBoard board(settings.threads);
  std::vector<std::unique_ptr<ShardThread>> threads;  // after the board they report to
  const Listening first = start_threads(settings, command, board, threads);
  command.announce(first);
  std::fflush(stdout);
  const Reporter reporter(settings, command, first);
  wait_for_stop([&] { reporter.report(board.collect(), false); }, [&] { return board.any_done(); });
  for (auto& thread : threads) thread->stop(settings.stop_grace);
  for (auto& thread : threads) thread->join();
  board.rethrow();
  reporter.report(board.latest(), true);
  return 0;
}

}  // namespace ringlinger::tools
