// `ringlinger serve`: an HTTP/1.x responder that answers without reading the request body, then
// closes gracefully through the manager: the early-response case (a 413 or an auth failure sent
// before an upload ends) that a plain close() breaks.
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/resource.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <csignal>
#include <deque>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <random>
#include <semaphore>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_units.hpp"
#include "commands.hpp"
#include "http.hpp"
#include "blocking_server.hpp"
#include "naive_server.hpp"
#include "percentiles.hpp"
#include "stats_json.hpp"
#include "ringlinger/ringlinger.hpp"

namespace ringlinger::tools {
namespace {

struct ServeFlags {
  std::string listen = "127.0.0.1:8080";
  std::string response_bytes = "16KiB";
  std::string backend = "auto";
  std::string stop_grace = "10s";
  std::string head_timeout = "10s";
  std::string json_path;
  bool quiet = false;
  bool sendfile = false;
  std::uint32_t threads = 1;
  DrainFlags drain;
};

// Close latency samples for the percentiles: a uniform sample of every close (reservoir
// sampling), in a fixed 256 KiB allocated and touched up front, so a long run's memory stays flat
// (a soak measures serve's RSS per 100k connections).
class LatencySamples {
 public:
  static constexpr std::size_t kCapacity = 65'536;
  LatencySamples() : samples_(kCapacity, 0) {}
  void add(std::uint32_t value) {
    ++seen_;
    if (seen_ <= kCapacity) {
      samples_[seen_ - 1] = value;
      return;
    }
    state_ ^= state_ << 13;  // xorshift64: cheap, and the sample needs no better
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    const std::uint64_t slot = state_ % seen_;
    if (slot < kCapacity) samples_[slot] = value;
  }
  std::vector<std::uint32_t> values() const {
    return {samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(seen_, kCapacity))};
  }
  // How many values were added (the sample holds min(seen, kCapacity) of them).
  std::uint64_t seen() const noexcept { return seen_; }

 private:
  std::vector<std::uint32_t> samples_;
  std::uint64_t seen_ = 0;
  std::uint64_t state_ = 0x9e3779b97f4a7c15ull;
};

std::uint64_t resident_kib();

// The responder: reads each request head, answers it, closes gracefully.
class Responder {
 public:
  // With `sendfile`, the response body lives in a memfd and goes out with Manager::send_file
  // (zero-copy), after the head from memory.
  Responder(const Config& config, std::uint64_t response_bytes, bool sendfile,
            std::chrono::milliseconds head_timeout)
      : head_timeout_(head_timeout),
        response_(sendfile ? response_head(200, "OK", response_bytes) : make_response(response_bytes)),
        body_file_(sendfile ? make_body_file(response_bytes) : -1),
        body_bytes_(response_bytes),
        bad_request_(make_error_response(400, "Bad Request")),
        head_too_large_(make_error_response(431, "Request Header Fields Too Large")),
        heads_(config.max_connections),
        manager_(config, callbacks()) {}

  Manager& manager() noexcept { return manager_; }

  // Runs the manager until it stops, giving up on request heads that take longer than the head
  // timeout (slowloris): such a connection is aborted (RST; nothing was answered, so nothing can
  // be lost, and the slot is free at once instead of after a drain the peer can drag out).
  void run() {
    using namespace std::chrono;
    for (;;) {
      milliseconds wait = 1s;
      if (!head_deadlines_.empty()) {
        const auto left = ceil<milliseconds>(head_deadlines_.front().deadline - steady_clock::now());
        wait = std::clamp(left, milliseconds(1), wait);
      }
      if (!manager_.run_once(wait)) return;
      expire_heads(steady_clock::now());
    }
  }
  std::uint64_t head_timeouts() const noexcept { return head_timeouts_; }
  std::vector<std::uint32_t> close_latencies_us() const { return close_latencies_us_.values(); }
  std::uint64_t closes_sampled() const noexcept { return close_latencies_us_.seen(); }
  std::uint64_t rss_before_manager_kib() const noexcept { return rss_before_manager_kib_; }
  // The resident set when the most connections were open (sampled from /proc/self/statm each
  // time the count grew by an eighth: ru_maxrss is updated lazily and can lag behind).
  std::uint64_t rss_at_peak_kib() const noexcept { return rss_at_peak_kib_; }

 private:
  Callbacks callbacks() {
    Callbacks callbacks;
    callbacks.on_accept = [this](ConnectionId id) {
      heads_[id.slot].reset();
      // One timeout for all: deadlines come in accept order, so a FIFO keeps them sorted.
      if (head_timeout_.count() > 0) {
        head_deadlines_.push_back({id, std::chrono::steady_clock::now() + head_timeout_});
      }
      if (++live_ >= sample_rss_at_live_) sample_peak_rss();
    };
    callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
      on_receive(id, data);
    };
    callbacks.on_closed = [this](ConnectionId, const CloseReport& report) {
      --live_;
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(report.close_latency());
      close_latencies_us_.add(static_cast<std::uint32_t>(us.count()));
    };
    return callbacks;
  }

  void on_receive(ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) {  // EOF before a whole head: nothing to answer
      (void)manager_.close(id);
      return;
    }
    switch (heads_[id.slot].feed(data)) {
      case HeadReader::Status::incomplete:
        return;
      case HeadReader::Status::complete:
        (void)manager_.send_view(id, std::as_bytes(std::span(response_)));
        if (body_file_ >= 0) (void)manager_.send_file(id, body_file_, 0, body_bytes_);
        break;
      case HeadReader::Status::too_large:
        (void)manager_.send_view(id, std::as_bytes(std::span(head_too_large_)));
        break;
      case HeadReader::Status::malformed:
        (void)manager_.send_view(id, std::as_bytes(std::span(bad_request_)));
        break;
    }
    (void)manager_.close(id);  // the body, if any, is never read: the drain discards it
  }

  void expire_heads(std::chrono::steady_clock::time_point now) {
    while (!head_deadlines_.empty() && head_deadlines_.front().deadline <= now) {
      const ConnectionId id = head_deadlines_.front().id;
      head_deadlines_.pop_front();
      // Still open (same slot and generation) and still without a whole head: give up on it.
      // A connection that was answered is closing already; its state is not `open`.
      if (manager_.state(id) == State::open &&
          heads_[id.slot].status() == HeadReader::Status::incomplete) {
        ++head_timeouts_;
        (void)manager_.abort(id);
      }
    }
  }

  static int make_body_file(std::uint64_t bytes) {
    // An unnamed file in the temporary directory: on a disk filesystem the page cache holds it
    // in large folios, which sendfile walks faster than a memfd's 4 KiB shmem pages (measured:
    // 1 MiB responses cost about a third more CPU from a memfd). memfd where that fails.
    const char* directory = std::getenv("TMPDIR");
    int fd = ::open(directory != nullptr ? directory : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) fd = memfd_create("ringlinger-response", MFD_CLOEXEC);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "creating the response file");
    const std::string response = make_response(bytes);
    const std::string_view body = std::string_view(response).substr(response.size() - bytes);
    for (std::size_t written = 0; written < body.size();) {
      const ssize_t n = ::write(fd, body.data() + written, body.size() - written);
      if (n < 0) throw std::system_error(errno, std::system_category(), "writing the response file");
      written += static_cast<std::size_t>(n);
    }
    return fd;
  }

  struct HeadDeadline {
    ConnectionId id;
    std::chrono::steady_clock::time_point deadline;
  };
  const std::chrono::milliseconds head_timeout_;  // 0: none
  std::deque<HeadDeadline> head_deadlines_;        // in accept order = deadline order
  std::uint64_t head_timeouts_ = 0;
  const std::string response_;  // the whole response, or only its head with a body file
  const int body_file_;         // -1, or the memfd holding the body (lives as long as serve)
  const std::uint64_t body_bytes_;
  const std::string bad_request_;
  const std::string head_too_large_;
  std::vector<HeadReader> heads_;  // indexed by ConnectionId::slot
  LatencySamples close_latencies_us_;
  void sample_peak_rss() {
    rss_at_peak_kib_ = std::max(rss_at_peak_kib_, resident_kib());
    sample_rss_at_live_ = live_ + std::max<std::uint64_t>(64, live_ / 8);
  }

  std::uint64_t live_ = 0;
  std::uint64_t sample_rss_at_live_ = 64;
  std::uint64_t rss_at_peak_kib_ = 0;
  // Resident memory just before the Manager exists: what it costs is measured from here.
  std::uint64_t rss_before_manager_kib_ = resident_kib();
  Manager manager_;
};

// What SIGINT/SIGTERM stop: a function and its argument, set while a server runs.
std::atomic<void (*)(void*)> g_stop_function{nullptr};
std::atomic<void*> g_stop_argument{nullptr};
std::atomic<std::int64_t> g_stop_grace_ms{10'000};

extern "C" void on_stop_signal(int) {
  if (auto stop = g_stop_function.load()) stop(g_stop_argument.load());
}

template <class Server>
void stop_server(void* server) {
  static_cast<Server*>(server)->stop();
}

void install_stop_signals(void (*stop)(void*), void* argument) {
  g_stop_argument.store(argument);
  g_stop_function.store(stop);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: the wait in io_uring_enter returns EINTR at once
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void warn_about_fd_limit(std::uint32_t max_connections) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < max_connections + 32u) {
    fmt::print(stderr,
               "ringlinger serve: warning: RLIMIT_NOFILE is {}, below --max-connections {} plus "
               "a few; accepts will fail with EMFILE (and pause) before the table is full\n",
               limit.rlim_cur, max_connections);
  }
}

nlohmann::json latency_json(const Percentiles& latency) {
  return {{"p50", latency.p50}, {"p99", latency.p99}, {"max", latency.max}, {"samples", latency.count}};
}

// CPU time and context switches of the whole process (io-wq worker threads included).
struct CpuUsage {
  std::uint64_t user_us = 0;
  std::uint64_t system_us = 0;
  std::uint64_t voluntary_switches = 0;
  std::uint64_t involuntary_switches = 0;

  // RUSAGE_SELF: the whole process; RUSAGE_THREAD: the calling thread.
  static CpuUsage now(int who = RUSAGE_SELF) {
    rusage usage{};
    getrusage(who, &usage);
    auto us = [](const timeval& tv) {
      return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000 + static_cast<std::uint64_t>(tv.tv_usec);
    };
    return {us(usage.ru_utime), us(usage.ru_stime), static_cast<std::uint64_t>(usage.ru_nvcsw),
            static_cast<std::uint64_t>(usage.ru_nivcsw)};
  }
  CpuUsage since(const CpuUsage& start) const {
    return {user_us - start.user_us, system_us - start.system_us,
            voluntary_switches - start.voluntary_switches,
            involuntary_switches - start.involuntary_switches};
  }
};

// Resident memory of this process now, and at its peak (KiB).
std::uint64_t resident_kib() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0;
  std::uint64_t resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
}
std::uint64_t peak_resident_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<std::uint64_t>(usage.ru_maxrss);
}

nlohmann::json memory_json(std::uint64_t start_kib, std::uint64_t peak_live_connections,
                           std::uint64_t before_manager_kib = 0, std::uint64_t sampled_peak_kib = 0) {
  nlohmann::json memory = {{"rss_start_kib", start_kib},
                           {"rss_peak_kib", std::max(peak_resident_kib(), sampled_peak_kib)},
                           {"peak_live_connections", peak_live_connections}};
  if (before_manager_kib != 0) memory["rss_before_manager_kib"] = before_manager_kib;
  return memory;
}

void print_cpu(const CpuUsage& cpu, std::uint64_t closed) {
  const double per_close = closed == 0 ? 0.0 : 1.0 / static_cast<double>(closed);
  fmt::print("cpu:         {:.3f} s user, {:.3f} s system ({:.1f} + {:.1f} us per close), {} "
             "context switches ({:.3f} per close)\n",
             static_cast<double>(cpu.user_us) / 1e6, static_cast<double>(cpu.system_us) / 1e6,
             static_cast<double>(cpu.user_us) * per_close,
             static_cast<double>(cpu.system_us) * per_close,
             cpu.voluntary_switches + cpu.involuntary_switches,
             static_cast<double>(cpu.voluntary_switches + cpu.involuntary_switches) * per_close);
}

nlohmann::json cpu_json(const CpuUsage& cpu) {
  return {{"user_us", cpu.user_us},
          {"system_us", cpu.system_us},
          {"voluntary_context_switches", cpu.voluntary_switches},
          {"involuntary_context_switches", cpu.involuntary_switches}};
}

void print_stats(const Stats& stats, const Percentiles& latency) {
  const std::uint64_t closed = stats.closed_connections();
  fmt::print("connections: {} accepted, {} closed, {} rejected, {} queued for a slot, {} accept "
             "errors\n",
             stats.connections_accepted + stats.connections_adopted, closed,
             stats.accepts_rejected, stats.accepts_queued, stats.accept_errors);
  std::string outcomes;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    if (stats.outcomes[i] == 0) continue;
    outcomes += fmt::format("{}{} {}", outcomes.empty() ? "" : ", ", stats.outcomes[i],
                            to_string(static_cast<Outcome>(i)));
  }
  fmt::print("outcomes:    {}\n", outcomes.empty() ? "none" : outcomes);
  fmt::print("bytes:       {} sent, {} of request heads read, {} discarded while draining\n",
             format_bytes(stats.bytes_sent), format_bytes(stats.bytes_received),
             format_bytes(stats.bytes_discarded));
  const double per_close = closed == 0 ? 0.0 : 1.0 / static_cast<double>(closed);
  fmt::print("kernel:      {} system calls ({:.2f} per close), {} of them io_uring_enter ({:.3f} "
             "per close); {} submissions, {} completions\n",
             stats.syscalls, static_cast<double>(stats.syscalls) * per_close, stats.enter_calls,
             static_cast<double>(stats.enter_calls) * per_close, stats.submissions,
             stats.completions);
  if (latency.count > 0) {
    fmt::print("close latency (close requested -> fd closed): p50 {} us, p99 {} us, max {} us\n",
               latency.p50, latency.p99, latency.max);
  }
}

// Runs the naive or blocking server until SIGINT/SIGTERM and reports like the manager does.
template <class Server>
int run_plain_server(Server& server, std::string_view backend, std::string_view description,
                     std::uint64_t response_bytes, const ServeFlags& flags,
                     const std::function<void(nlohmann::json&)>& add_figures) {
  fmt::print("ringlinger serve: listening on {} (backend {}: {})\n", server.address().to_string(),
             backend, description);
  std::fflush(stdout);
  install_stop_signals(stop_server<Server>, &server);
  const std::uint64_t rss_start_kib = resident_kib();
  const CpuUsage cpu_at_start = CpuUsage::now();
  server.run();
  const CpuUsage cpu = CpuUsage::now().since(cpu_at_start);
  g_stop_function.store(nullptr);
  if (!flags.quiet) {
    fmt::print("connections: {} closed\n", server.connections_closed());
    print_cpu(cpu, server.connections_closed());
  }
  if (!flags.json_path.empty()) {
    nlohmann::json json = {{"backend", backend},
                           {"listen", server.address().to_string()},
                           {"response_bytes", response_bytes},
                           {"stats", {{"connections_closed", server.connections_closed()}}},
                           {"cpu", cpu_json(cpu)},
                           {"memory", memory_json(rss_start_kib, 0)}};
    add_figures(json);
    std::ofstream(flags.json_path) << json.dump(2) << "\n";
  }
  return 0;
}

int run_naive(const SocketAddress& address, std::uint64_t response_bytes, const ServeFlags& flags) {
  NaiveServer server({address, response_bytes, 4096});
  return run_plain_server(server, "naive", "plain close() right after the response, loses data",
                          response_bytes, flags, [](nlohmann::json&) {});
}

int run_blocking(const SocketAddress& address, std::uint64_t response_bytes, const Config& config,
                 const ServeFlags& flags) {
  BlockingServerOptions options;
  options.listen = address;
  options.response_bytes = response_bytes;
  options.drain_idle_timeout_ms = config.drain_idle_timeout_ms;
  options.drain_timeout_ms = config.drain_timeout_ms;
  options.drain_max_bytes = config.drain_max_bytes;
  options.send_timeout_ms = config.send_timeout_ms;
  options.reset_on_timeout = config.on_timeout == OnTimeout::reset;
  options.head_timeout_ms = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(duration_flag_ms("--head-timeout", flags.head_timeout), UINT32_MAX));  // checked before
  BlockingServer server(options);
  return run_plain_server(
      server, "blocking", "one connection at a time, blocking system calls", response_bytes, flags,
      [&](nlohmann::json& json) {
        json["stats"]["outcomes"] = outcomes_json(server.outcomes());
        json["stats"]["bytes_discarded"] = server.bytes_discarded();
        std::vector<std::uint32_t> latencies = server.close_latencies_us();
        json["close_latency_us"] = latency_json(percentiles_of(latencies));
      });
}

// --threads N: N shards, each a Responder with its own Manager (one ring) on its own thread, all
// listening on the same address with SO_REUSEPORT, so the kernel spreads connections among their
// listeners (by a hash of addresses and ports). Nothing is shared on the data path. The main
// thread waits for SIGINT/SIGTERM, stops every manager, joins the threads and adds up what each
// one saw. --threads 1 (the default) is the same path with one shard and no SO_REUSEPORT.

// What one shard saw, collected on its own thread once its manager stopped.
struct ShardResult {
  Stats stats;
  std::vector<std::uint32_t> close_latencies_us;  // a uniform sample of closes_sampled closes
  std::uint64_t closes_sampled = 0;
  std::uint64_t head_timeouts = 0;
  std::uint64_t rss_before_manager_kib = 0;
  std::uint64_t rss_at_peak_kib = 0;
  std::uint32_t max_connections = 0;
  CpuUsage cpu;  // this thread's CPU time only (the process's total is measured separately)
};

// What a shard reports once it listens.
struct ShardListening {
  SocketAddress bound;
  IoBackend backend = IoBackend::automatic;
  std::string backend_description;
};

class Shard {
 public:
  struct Options {
    std::uint32_t index = 0;
    Config config;  // max_connections is this shard's share
    std::uint64_t response_bytes = 0;
    bool sendfile = false;
    std::chrono::milliseconds head_timeout{0};
  };

  explicit Shard(Options options) : options_(std::move(options)) {}
  // A shard that is still running (startup failed in another shard) is stopped at once.
  ~Shard() {
    if (!thread_.joinable()) return;
    stop(std::chrono::milliseconds(0));
    (void)join();
  }
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Starts the thread, which creates its Responder (and Manager: a ring is set up on the thread
  // that drives it) and listens on `address`. Returns once it listens; rethrows what the
  // Manager's constructor or listen() threw.
  ShardListening start(const SocketAddress& address, bool reuse_port) {
    std::future<ShardListening> listening = listening_.get_future();
    thread_ = std::thread([this, address, reuse_port] { body(address, reuse_port); });
    return listening.get();
  }

  // Tells the manager to stop; Manager::stop is thread-safe and wakes the thread's wait.
  void stop(std::chrono::milliseconds grace) noexcept {
    if (Manager* manager = manager_.load()) manager->stop(grace);
  }

  // Waits for the thread to end (after stop()) and returns what it saw.
  ShardResult join() {
    released_.release();  // every stop() call is done: the thread may destroy its manager
    thread_.join();
    return std::move(result_);
  }

 private:
  void body(const SocketAddress& address, bool reuse_port) {
    const std::string name = fmt::format("ringlinger-s{}", options_.index);
    pthread_setname_np(pthread_self(), name.c_str());  // for top -H, taskset -p (bench/threads.sh)
    std::optional<Responder> responder;
    try {
      responder.emplace(options_.config, options_.response_bytes, options_.sendfile,
                        options_.head_timeout);
      Manager& manager = responder->manager();
      ShardListening listening{manager.listen(address, 4096, reuse_port), manager.backend(),
                               manager.describe_backend()};
      manager_.store(&manager);
      listening_.set_value(std::move(listening));
    } catch (...) {
      listening_.set_exception(std::current_exception());
      return;
    }
    const CpuUsage cpu_at_start = CpuUsage::now(RUSAGE_THREAD);
    responder->run();
    result_.cpu = CpuUsage::now(RUSAGE_THREAD).since(cpu_at_start);
    result_.stats = responder->manager().stats();  // on the manager's thread
    result_.close_latencies_us = responder->close_latencies_us();
    result_.closes_sampled = responder->closes_sampled();
    result_.head_timeouts = responder->head_timeouts();
    result_.rss_before_manager_kib = responder->rss_before_manager_kib();
    result_.rss_at_peak_kib = responder->rss_at_peak_kib();
    result_.max_connections = options_.config.max_connections;
    released_.acquire();  // the main thread may still be inside manager->stop()
  }

  const Options options_;
  std::thread thread_;
  std::promise<ShardListening> listening_;
  std::atomic<Manager*> manager_{nullptr};
  std::binary_semaphore released_{0};
  ShardResult result_;
};

// The shards' counters and gauges added up (Stats::operator+=: peak_live_connections becomes an
// upper bound, the sum of the shards' peaks).
Stats add_stats(const std::vector<ShardResult>& results) {
  Stats total;
  for (const ShardResult& result : results) total += result.stats;
  return total;
}

// One uniform sample of every close from the shards' samples: all of them while they hold every
// close; otherwise each shard contributes in proportion to the closes it saw (a random part of
// its sample), so a shard with fewer closes does not weigh more.
std::vector<std::uint32_t> merge_latency_samples(std::vector<ShardResult>& results) {
  std::uint64_t seen = 0;
  for (const ShardResult& result : results) seen += result.closes_sampled;
  std::vector<std::uint32_t> merged;
  if (seen <= LatencySamples::kCapacity) {
    for (const ShardResult& result : results) {
      merged.insert(merged.end(), result.close_latencies_us.begin(), result.close_latencies_us.end());
    }
    return merged;
  }
  std::mt19937_64 random(0x9e3779b97f4a7c15ull);
  for (ShardResult& result : results) {
    std::vector<std::uint32_t>& sample = result.close_latencies_us;
    const std::uint64_t share = LatencySamples::kCapacity * result.closes_sampled / seen;
    std::shuffle(sample.begin(), sample.end(), random);
    merged.insert(merged.end(), sample.begin(),
                  sample.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(share, sample.size())));
  }
  return merged;
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

// Most --threads: 4 per CPU, at most 64.
std::uint32_t max_threads() {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<std::uint32_t>(std::clamp<long>(4 * cpus, 4, 64));
}

int run_managers(const SocketAddress& address, std::uint64_t response_bytes, const Config& config,
                 std::chrono::milliseconds head_timeout, const ServeFlags& flags) {
  const std::uint32_t threads = flags.threads;
  if (config.max_connections < threads) {
    throw UsageError(fmt::format("--max-connections: must be at least --threads ({}): it is the "
                                 "total, divided among the threads (got {})",
                                 threads, config.max_connections));
  }
  warn_about_fd_limit(config.max_connections);  // the process's limit, for all threads together
  if (flags.sendfile) std::signal(SIGPIPE, SIG_IGN);  // like nginx; send_file works either way

  // SIGINT and SIGTERM go to this thread's sigwait: blocked before the shards start, so every
  // thread inherits the mask (they stay blocked: a second signal while stopping changes nothing).
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The first shard binds the address (port 0 picks a port); the others bind the port it got.
  if (threads > 1) check_port_free(address);
  std::vector<std::unique_ptr<Shard>> shards;
  ShardListening first;
  for (std::uint32_t i = 0; i < threads; ++i) {
    Config shard_config = config;  // --max-connections divided, the first ones get the remainder
    shard_config.max_connections = config.max_connections / threads + (i < config.max_connections % threads ? 1 : 0);
    shards.push_back(std::make_unique<Shard>(
        Shard::Options{i, shard_config, response_bytes, flags.sendfile, head_timeout}));
    ShardListening listening = shards.back()->start(i == 0 ? address : first.bound, threads > 1);
    if (i == 0) first = std::move(listening);
  }
  fmt::print("ringlinger serve: listening on {} (shutdown {}, on timeout {}, response {}; "
             "backend {}{})\n",
             first.bound.to_string(), to_string(config.shutdown_mode), to_string(config.on_timeout),
             format_bytes(response_bytes), first.backend_description,
             threads > 1 ? fmt::format("; {} threads, SO_REUSEPORT", threads) : std::string());
  std::fflush(stdout);
  const std::uint64_t rss_start_kib = resident_kib();
  const CpuUsage cpu_at_start = CpuUsage::now();

  int signal = 0;
  while (sigwait(&stop_signals, &signal) != 0) {
  }
  const std::chrono::milliseconds grace(g_stop_grace_ms.load());
  for (auto& shard : shards) shard->stop(grace);
  std::vector<ShardResult> results;
  for (auto& shard : shards) results.push_back(shard->join());
  shards.clear();
  const CpuUsage cpu = CpuUsage::now().since(cpu_at_start);

  const Stats stats = add_stats(results);
  std::vector<std::uint32_t> latencies = merge_latency_samples(results);
  const Percentiles latency = percentiles_of(latencies);
  std::uint64_t head_timeouts = 0;
  std::uint64_t rss_at_peak_kib = 0;
  for (const ShardResult& result : results) {
    head_timeouts += result.head_timeouts;
    rss_at_peak_kib = std::max(rss_at_peak_kib, result.rss_at_peak_kib);
  }
  if (!flags.quiet) {
    print_stats(stats, latency);
    fmt::print("  request heads given up at the head timeout: {}\n", head_timeouts);
    print_cpu(cpu, stats.closed_connections());
    if (threads > 1) {
      std::string closed;
      for (const ShardResult& result : results) {
        closed += fmt::format("{}{}", closed.empty() ? "" : ", ", result.stats.closed_connections());
      }
      fmt::print("threads:     {} (SO_REUSEPORT); connections closed by each: {}\n", threads, closed);
    }
  }
  if (!flags.json_path.empty()) {
    nlohmann::json per_thread = nlohmann::json::array();
    for (const ShardResult& result : results) {
      per_thread.push_back({{"connections_accepted", result.stats.connections_accepted},
                            {"connections_closed", result.stats.closed_connections()},
                            {"peak_live_connections", result.stats.peak_live_connections},
                            {"max_connections", result.max_connections},
                            {"head_timeouts", result.head_timeouts},
                            {"cpu", {{"user_us", result.cpu.user_us}, {"system_us", result.cpu.system_us}}}});
    }
    nlohmann::json json = {
        {"backend", first.backend == IoBackend::io_uring ? "uring" : "epoll"},
        {"listen", first.bound.to_string()},
        {"response_bytes", response_bytes},
        {"config",
         {{"drain_idle_timeout_ms", config.drain_idle_timeout_ms},
          {"drain_timeout_ms", config.drain_timeout_ms},
          {"drain_max_bytes", config.drain_max_bytes},
          {"send_timeout_ms", config.send_timeout_ms},
          {"orphan_timeout_ms", config.orphan_timeout_ms},
          {"on_timeout", to_string(config.on_timeout)},
          {"shutdown", to_string(config.shutdown_mode)},
          {"max_connections", config.max_connections},
          {"batch_wait_us", config.batch_wait_us}}},
        {"backend_description", first.backend_description},
        {"stats", stats_json(stats)},
        {"head_timeouts", head_timeouts},
        {"cpu", cpu_json(cpu)},
        {"memory", memory_json(rss_start_kib, stats.peak_live_connections,
                               results.front().rss_before_manager_kib, rss_at_peak_kib)},
        {"close_latency_us", latency_json(latency)},
        {"threads", threads},
        {"per_thread", per_thread},
    };
    std::ofstream(flags.json_path) << json.dump(2) << "\n";
  }
  return 0;
}

int run_serve(const ServeFlags& flags) {
  auto address = SocketAddress::parse(flags.listen);
  if (!address) {
    throw UsageError("--listen: '" + flags.listen +
                     "' is not an address like 127.0.0.1:8080 or [::1]:8080");
  }
  if (flags.threads < 1 || flags.threads > max_threads()) {
    throw UsageError(fmt::format("--threads: must be between 1 and {} (4 per CPU, at most 64) "
                                 "(got {})",
                                 max_threads(), flags.threads));
  }
  if (flags.threads > 1 && (flags.backend == "naive" || flags.backend == "blocking")) {
    throw UsageError(fmt::format("--threads: more than 1 needs --backend auto, uring or epoll "
                                 "(got --threads {} with --backend {})",
                                 flags.threads, flags.backend));
  }
  const std::uint64_t response_bytes = bytes_flag("--response-bytes", flags.response_bytes);
  g_stop_grace_ms.store(static_cast<std::int64_t>(duration_flag_ms("--stop-grace", flags.stop_grace)));
  const std::chrono::milliseconds head_timeout(duration_flag_ms("--head-timeout", flags.head_timeout));
  if (flags.backend == "naive") return run_naive(*address, response_bytes, flags);
  Config config = to_config(flags.drain);
  if (flags.backend == "blocking") return run_blocking(*address, response_bytes, config, flags);

  config.backend = flags.backend == "uring"   ? IoBackend::io_uring
                   : flags.backend == "epoll" ? IoBackend::epoll
                                              : IoBackend::automatic;
  return run_managers(*address, response_bytes, config, head_timeout, flags);
}

}  // namespace

Command add_serve_command(CLI::App& program) {
  auto flags = std::make_shared<ServeFlags>();
  CLI::App* app = program.add_subcommand(
      "serve",
      "HTTP/1.x responder that answers without reading the request body, then closes "
      "gracefully (flush, SHUT_WR, drain to EOF, close). Stops on SIGINT/SIGTERM and prints "
      "its counters.");
  app->add_option("--listen", flags->listen, "Address to listen on; port 0 picks a free port")->type_name("ADDRESS")
      ->capture_default_str();
  app->add_option("--response-bytes", flags->response_bytes,
                  "Body size of every 200 response (e.g. 16384, 16KiB, 1MiB)")->type_name("SIZE")
      ->capture_default_str();
  app->add_option("--backend", flags->backend,
                  "auto (io_uring, or epoll where io_uring is unavailable), uring, epoll (the "
                  "library's two backends), blocking (the same procedure with blocking system "
                  "calls, one connection at a time), or naive (plain close() right after the "
                  "response: shows the data loss)")
      ->check(CLI::IsMember({"auto", "uring", "epoll", "blocking", "naive"}))->capture_default_str();
  app->add_option("--stop-grace", flags->stop_grace,
                  "On SIGINT/SIGTERM, how long lingering connections may take before they are reset")->type_name("DURATION")
      ->capture_default_str();
  app->add_option("--json", flags->json_path, "Write the configuration and counters to FILE at exit")->type_name("FILE");
  app->add_option("--head-timeout", flags->head_timeout,
                  "Longest time a request head may take to arrive (slowloris); then the "
                  "connection is reset, unanswered; 0 = no limit (uring, epoll, blocking)")
      ->type_name("DURATION")->capture_default_str();
  app->add_flag("--quiet", flags->quiet, "Do not print the counters at exit");
  app->add_flag("--sendfile", flags->sendfile,
                "Send the response body from a file with Manager::send_file (sendfile(2), no copy: "
                "nginx's `sendfile on`) instead of from memory (uring and epoll backends)");
  app->add_option("--threads", flags->threads,
                  "Run N managers (one io_uring ring or epoll set each) on N threads, each "
                  "listening on the --listen address with SO_REUSEPORT: the kernel spreads "
                  "connections among them by a hash of addresses and ports, and nothing is shared "
                  "between them. --max-connections stays the total (RLIMIT_NOFILE is per process) "
                  "and is divided among the threads, so one thread's table can fill before the "
                  "total is reached; every thread allocates its own ring, receive buffers and "
                  "latency sample (about 1 MiB more resident memory per thread with the defaults). "
                  "1 to 4 per CPU (at most 64); uring, epoll and auto backends")
      ->type_name("N")->capture_default_str();
  add_drain_flags(*app, flags->drain);
  return {app, [flags] { return run_serve(*flags); }};
}

}  // namespace ringlinger::tools
