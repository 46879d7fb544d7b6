// `ringlinger serve`: an HTTP/1.x responder that answers without reading the request body, then
// closes gracefully through the manager: the early-response case (a 413 or an auth failure sent
// before an upload ends) that a plain close() breaks. Threads, signals and counters come from the
// runner (runner.hpp); this file reads request heads and answers them.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <any>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "blocking_server.hpp"
#include "cli_units.hpp"
#include "commands.hpp"
#include "http.hpp"
#include "naive_server.hpp"
#include "percentiles.hpp"
#include "ringlinger/ringlinger.hpp"
#include "runner.hpp"
#include "stats_json.hpp"

namespace ringlinger::tools {
namespace {

struct ServeFlags {
  RunnerFlags common;
  std::string response_bytes = "16KiB";
  std::string head_timeout = "10s";
  bool sendfile = false;
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

// What one thread's responder counts on top of its manager's Stats.
struct ServeCounters {
  std::uint64_t head_timeouts = 0;
  std::vector<std::uint32_t> close_latencies_us;  // a uniform sample of closes_sampled closes
  std::uint64_t closes_sampled = 0;
  std::uint64_t rss_before_manager_kib = 0;
  std::uint64_t rss_at_peak_kib = 0;
};

// The body every thread sends, made once; each thread dates the heads (ResponseCache).
struct Response {
  std::string body;   // in memory: the payload (empty with a body file)
  int body_file = -1; // -1, or the file holding the body (lives as long as serve)
  std::uint64_t body_bytes = 0;
  // A body this small is copied after each second's head, so a response is one piece of the
  // send queue (one send): a larger one is a second piece, sent from `body` or the file. A
  // thread keeps a copy per second a connection still sends from: 64 KiB each.
  static constexpr std::uint64_t kInlineBodyBytes = 64 * 1024;
  bool inline_body() const noexcept { return body_file < 0 && body_bytes <= kInlineBodyBytes; }
};

// The response sets (one per second, ResponseCache) that connections still send from, each with
// a plain count of them: this thread's alone, where a shared_ptr per connection took an atomic
// increment and decrement and their code (bench/callgrind.sh: 26 instructions per close). The
// current set is the last; an older one is dropped when its last connection closes.
class HeldResponses {
 public:
  HeldResponses() : held_(1) {}
  // `current` (the cache's set now), held once more until release().
  const DatedResponses* hold(const std::shared_ptr<const DatedResponses>& current) {
    if (current != held_.back().set) [[unlikely]] make_current(current);
    ++held_.back().users;
    return current.get();
  }
  void release(const DatedResponses* set) {
    if (set == held_.back().set.get()) [[likely]] {
      --held_.back().users;
    } else {
      release_older(set);
    }
  }

 private:
  struct Held {
    std::shared_ptr<const DatedResponses> set;
    std::uint64_t users = 0;
  };
  [[gnu::noinline]] void make_current(const std::shared_ptr<const DatedResponses>& current) {
    if (held_.back().users == 0) held_.pop_back();  // no connection sends from it
    held_.push_back({current, 0});
  }
  [[gnu::noinline]] void release_older(const DatedResponses* set) {
    const auto it = std::find_if(held_.begin(), held_.end() - 1,
                                 [set](const Held& held) { return held.set.get() == set; });
    assert(it != held_.end() - 1 && "released a set that is not held");
    if (--it->users == 0) held_.erase(it);
  }

  std::vector<Held> held_;  // oldest first; the current set last
};

// The responder: reads each request head, answers it (HEAD: the head alone, with the same
// Content-Length; every response with a Date), closes gracefully. A request head that
// takes longer than the head timeout (slowloris) is given up: the connection is aborted (RST;
// nothing was answered, so nothing can be lost, and the slot is free at once instead of after a
// drain the peer can drag out).
//
// A head deadline is never removed: on_deadline() checks whether it still applies (the same
// connection, still open, still without a whole head), and the slot's next connection moves its
// entry to the back (DeadlineFifo::add()). Slots are reused most recently freed first, so under
// load an entry rarely lives to expire; a remove() at the head and another at the close cost
// 19 instructions per close more than the re-link (bench/callgrind.sh).
class Responder final : public ShardServer {
 public:
  Responder(const Config& config, const Response& response, std::chrono::milliseconds head_timeout)
      : response_(response),
        dated_(response.body_bytes, response.inline_body() ? std::string_view(response.body) : ""),
        heads_(config.max_connections),
        sent_from_(config.max_connections),
        head_deadlines_(head_timeout, config.max_connections),
        manager_(config, callbacks()) {}

  Manager& manager() noexcept override { return manager_; }
  DeadlineFifo& deadlines() noexcept override { return head_deadlines_; }

  void on_deadline(ConnectionId id) override {
    // Still open (same slot and generation) and still without a whole head: give up on it.
    // A connection that was answered is closing already; its state is not `open`.
    if (manager_.state(id) == State::open && heads_[id.slot].status() == HeadReader::Status::incomplete) {
      ++head_timeouts_;
      (void)manager_.abort(id);
    }
  }

  std::any counters() const override {
    return ServeCounters{head_timeouts_, close_latencies_us_.values(), close_latencies_us_.seen(),
                         rss_before_manager_kib_, rss_at_peak_kib_};
  }

 private:
  Callbacks callbacks() {
    Callbacks callbacks;
    callbacks.on_accept = [this](ConnectionId id) {
      log_accepted(id);
      heads_[id.slot].reset();
      head_deadlines_.add(id);
      if (++live_ >= sample_rss_at_live_) sample_peak_rss();
    };
    callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
      on_receive(id, data);
    };
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      log_closed(id, "connection", report);
      --live_;
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(report.close_latency());
      close_latencies_us_.add(static_cast<std::uint32_t>(us.count()));
      // Last: nothing is left to keep across the release's call.
      // The kernel has had every byte of it, or never will.
      if (const DatedResponses* set = std::exchange(sent_from_[id.slot], nullptr)) held_.release(set);
    };
    return callbacks;
  }

  void on_receive(ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) {  // EOF before a whole head: nothing to answer
      (void)manager_.close(id);
      return;
    }
    const HeadReader::Status status = heads_[id.slot].feed(data);
    if (status == HeadReader::Status::incomplete) return;
    // Taken once for every answer, not in each case: one copy of the shared_ptr's code.
    const DatedResponses& dated = dated_for(id);
    switch (status) {
      case HeadReader::Status::incomplete:
        return;
      case HeadReader::Status::complete: [[likely]]  // tested first: the others are rare
        if (heads_[id.slot].head_method()) {
          send(id, std::string_view(dated.ok).substr(0, dated.ok_head_bytes));
        } else if (inline_body_) {
          // The whole response and the close in one call: its FIN leaves with its last bytes.
          (void)manager_.send_view_and_close(id, std::as_bytes(std::span(dated.ok)));
          return;
        } else {
          send_ok(id, dated);
        }
        break;
      case HeadReader::Status::too_large:
        send(id, dated.head_too_large);
        break;
      case HeadReader::Status::malformed:
        send(id, dated.bad_request);
        break;
    }
    (void)manager_.close(id);  // the body, if any, is never read: the drain discards it
  }

  // This second's responses. send_view needs them unchanged until on_closed: the connection
  // holds them until then.
  const DatedResponses& dated_for(ConnectionId id) {
    return *(sent_from_[id.slot] = held_.hold(dated_.current()));
  }

  void send(ConnectionId id, std::string_view bytes) {
    (void)manager_.send_view(id, std::as_bytes(std::span(bytes)));
  }

  // The head (with the body when it is inline), then the body from memory or the file.
  void send_ok(ConnectionId id, const DatedResponses& dated) {
    send(id, dated.ok);
    if (response_.inline_body()) return;
    if (response_.body_file >= 0) {
      (void)manager_.send_file(id, response_.body_file, 0, response_.body_bytes);
    } else {
      send(id, response_.body);
    }
  }

  // The resident set when the most connections were open (sampled from /proc/self/statm each
  // time the count grew by an eighth: ru_maxrss is updated lazily and can lag behind).
  void sample_peak_rss() {
    rss_at_peak_kib_ = std::max(rss_at_peak_kib_, resident_kib());
    sample_rss_at_live_ = live_ + std::max<std::uint64_t>(64, live_ / 8);
  }

  const Response& response_;
  const bool inline_body_ = response_.inline_body();  // read for every answer
  ResponseCache dated_;  // this thread's: the date is formatted here at most once a second
  std::vector<HeadReader> heads_;  // indexed by ConnectionId::slot
  HeldResponses held_;
  std::vector<const DatedResponses*> sent_from_;  // by slot, held until on_closed
  DeadlineFifo head_deadlines_;
  std::uint64_t head_timeouts_ = 0;
  LatencySamples close_latencies_us_;
  std::uint64_t live_ = 0;
  std::uint64_t sample_rss_at_live_ = 64;
  std::uint64_t rss_at_peak_kib_ = 0;
  // Resident memory just before the Manager exists: what it costs is measured from here.
  std::uint64_t rss_before_manager_kib_ = resident_kib();
  Manager manager_;
};

// With `sendfile`, the response body lives in a file and goes out with Manager::send_file
// (zero-copy), after the head from memory.
int make_body_file(std::uint64_t bytes) {
  // An unnamed file in the temporary directory: on a disk filesystem the page cache holds it
  // in large folios, which sendfile walks faster than a memfd's 4 KiB shmem pages (measured:
  // 1 MiB responses cost about a third more CPU from a memfd). memfd where that fails.
  const char* directory = std::getenv("TMPDIR");
  int fd = ::open(directory != nullptr ? directory : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) fd = memfd_create("ringlinger-response", MFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "creating the response file");
  const std::string body = make_payload(bytes);
  for (std::size_t written = 0; written < body.size();) {
    const ssize_t n = ::write(fd, body.data() + written, body.size() - written);
    if (n < 0) throw std::system_error(errno, std::system_category(), "writing the response file");
    written += static_cast<std::size_t>(n);
  }
  return fd;
}

Response make_serve_response(std::uint64_t bytes, bool sendfile) {
  if (!sendfile) return {make_payload(bytes), -1, bytes};
  return {std::string(), make_body_file(bytes), bytes};
}

nlohmann::json latency_json(const Percentiles& latency) {
  return {{"p50", latency.p50}, {"p99", latency.p99}, {"max", latency.max}, {"samples", latency.count}};
}

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

void print_stats(const Stats& stats, const Percentiles& latency) {
  const std::uint64_t closed = stats.closed_connections();
  fmt::print("connections: {} accepted, {} closed, {} rejected, {} queued for a slot, {} accept "
             "errors\n",
             stats.connections_accepted + stats.connections_adopted, closed,
             stats.accepts_rejected, stats.accepts_queued, stats.accept_errors);
  fmt::print("outcomes:    {}\n", outcomes_text(stats.outcomes));
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

// Runs the naive or blocking server on a thread of its own until SIGINT/SIGTERM, and reports
// like the runner does: counters on SIGUSR1 and at exit. `add_figures` adds the server's own
// figures to the JSON (`final`: the server has stopped).
template <class Server>
int run_plain_server(Server& server, std::string_view backend, std::string_view description,
                     std::uint64_t response_bytes, const RunnerSettings& settings,
                     const std::function<void(nlohmann::json&, bool final)>& add_figures) {
  block_signals();  // before the server's thread starts: it inherits the mask
  fmt::print("ringlinger serve: listening on {} (backend {}: {})\n", server.address().to_string(),
             backend, description);
  std::fflush(stdout);
  const std::uint64_t rss_start_kib = resident_kib();
  const CpuUsage cpu_at_start = CpuUsage::now();
  auto report = [&](bool final) {
    const CpuUsage cpu = CpuUsage::now().since(cpu_at_start);
    if (!settings.quiet) {
      fmt::print("connections: {} closed\n", server.connections_closed());
      print_cpu(cpu, server.connections_closed());
      std::fflush(stdout);
    }
    if (settings.json_path.empty()) return;
    nlohmann::json json = {{"backend", backend},
                           {"listen", server.address().to_string()},
                           {"response_bytes", response_bytes},
                           {"stats", {{"connections_closed", server.connections_closed()}}},
                           {"cpu", cpu_json(cpu)},
                           {"memory", memory_json(rss_start_kib, 0)}};
    add_figures(json, final);
    write_json("serve", settings.json_path, json);
  };
  std::exception_ptr error;
  std::atomic<bool> ended{false};
  std::thread thread([&] {
    try {
      server.run();
    } catch (...) {
      error = std::current_exception();
    }
    ended.store(true);
  });
  const auto hup = [&] {
    notice(settings, fmt::format("SIGHUP: --backend {} has no configuration to read again", backend));
  };
  const SignalActions actions{[&] { report(false); }, hup, {}};
  wait_for_stop(actions, [&] { return ended.load(); });
  server.stop();  // thread-safe
  thread.join();
  if (error) std::rethrow_exception(error);
  report(true);
  return 0;
}

int run_naive(const SocketAddress& address, std::uint64_t response_bytes, const RunnerSettings& settings) {
  NaiveServer server({address, response_bytes, 4096, settings.defer_accept});
  return run_plain_server(server, "naive", "plain close() right after the response, loses data",
                          response_bytes, settings, [](nlohmann::json&, bool) {});
}

int run_blocking(const SocketAddress& address, std::uint64_t response_bytes,
                 std::chrono::milliseconds head_timeout, const RunnerSettings& settings) {
  const Config& config = settings.config;
  BlockingServerOptions options;
  options.listen = address;
  options.response_bytes = response_bytes;
  options.drain_idle_timeout_ms = config.drain_idle_timeout_ms;
  options.drain_timeout_ms = config.drain_timeout_ms;
  options.drain_max_bytes = config.drain_max_bytes;
  options.send_timeout_ms = config.send_timeout_ms;
  options.reset_on_timeout = config.on_timeout == OnTimeout::reset;
  options.defer_accept = settings.defer_accept;
  options.head_timeout_ms = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(static_cast<std::uint64_t>(head_timeout.count()), UINT32_MAX));
  BlockingServer server(options);
  return run_plain_server(
      server, "blocking", "one connection at a time, blocking system calls", response_bytes, settings,
      [&](nlohmann::json& json, bool final) {
        json["stats"]["outcomes"] = outcomes_json(server.outcomes());
        json["stats"]["bytes_discarded"] = server.bytes_discarded();
        if (!final) return;  // the sample is the server thread's until it stopped
        std::vector<std::uint32_t> latencies = server.close_latencies_us();
        json["close_latency_us"] = latency_json(percentiles_of(latencies));
      });
}

// One uniform sample of every close from the threads' samples: all of them while they hold every
// close; otherwise each thread contributes in proportion to the closes it saw (a random part of
// its sample), so a thread with fewer closes does not weigh more.
std::vector<std::uint32_t> merge_latency_samples(std::vector<ServeCounters>& parts) {
  std::uint64_t seen = 0;
  for (const ServeCounters& part : parts) seen += part.closes_sampled;
  std::vector<std::uint32_t> merged;
  if (seen <= LatencySamples::kCapacity) {
    for (const ServeCounters& part : parts) {
      merged.insert(merged.end(), part.close_latencies_us.begin(), part.close_latencies_us.end());
    }
    return merged;
  }
  std::mt19937_64 random(0x9e3779b97f4a7c15ull);
  for (ServeCounters& part : parts) {
    std::vector<std::uint32_t>& sample = part.close_latencies_us;
    const std::uint64_t share = LatencySamples::kCapacity * part.closes_sampled / seen;
    std::shuffle(sample.begin(), sample.end(), random);
    merged.insert(merged.end(), sample.begin(),
                  sample.begin() + static_cast<std::ptrdiff_t>(std::min<std::uint64_t>(share, sample.size())));
  }
  return merged;
}

// The threads' own counters together.
struct ServeTotals {
  Percentiles latency;
  std::uint64_t head_timeouts = 0;
  std::uint64_t rss_before_manager_kib = 0;  // the first thread's
  std::uint64_t rss_at_peak_kib = 0;
};

ServeTotals totals_of(const RunReport& report) {
  std::vector<ServeCounters> parts;
  for (const ThreadReport& thread : report.threads) parts.push_back(std::any_cast<ServeCounters>(thread.counters));
  ServeTotals totals;
  std::vector<std::uint32_t> latencies = merge_latency_samples(parts);
  totals.latency = percentiles_of(latencies);
  for (const ServeCounters& part : parts) {
    totals.head_timeouts += part.head_timeouts;
    totals.rss_at_peak_kib = std::max(totals.rss_at_peak_kib, part.rss_at_peak_kib);
  }
  if (!parts.empty()) totals.rss_before_manager_kib = parts.front().rss_before_manager_kib;
  return totals;
}

void print_serve_report(const RunReport& report) {
  const ServeTotals totals = totals_of(report);
  print_stats(report.stats, totals.latency);
  fmt::print("  request heads given up at the head timeout: {}\n", totals.head_timeouts);
  print_cpu(report.cpu, report.stats.closed_connections());
  if (report.threads.size() > 1) {
    std::string closed;
    for (const ThreadReport& thread : report.threads) {
      closed += fmt::format("{}{}", closed.empty() ? "" : ", ", thread.stats.closed_connections());
    }
    fmt::print("threads:     {} (SO_REUSEPORT); connections closed by each: {}\n",
               report.threads.size(), closed);
  }
}

// --threads N: N responders, each with its own Manager on its own thread (runner.hpp).
int run_responders(const RunnerSettings& settings, std::uint64_t response_bytes,
                   std::chrono::milliseconds head_timeout, bool sendfile) {
  if (sendfile) std::signal(SIGPIPE, SIG_IGN);  // like nginx; send_file works either way
  const Response response = make_serve_response(response_bytes, sendfile);
  std::uint64_t rss_start_kib = 0;
  ShardedCommand command;
  command.make_server = [&](const Config& config) {
    return std::make_unique<Responder>(config, response, head_timeout);
  };
  command.announce = [&](const Listening& first) {
    const Config& config = settings.config;
    fmt::print("ringlinger serve: listening on {} (shutdown {}, on timeout {}, response {}{}; "
               "backend {}{})\n",
               first.bound_text(), to_string(config.shutdown_mode), to_string(config.on_timeout),
               format_bytes(response_bytes), settings.defer_accept ? ", deferred accept" : "",
               first.backend_description,
               settings.threads > 1 ? fmt::format("; {} threads, SO_REUSEPORT", settings.threads) : std::string());
    std::fflush(stdout);
    rss_start_kib = resident_kib();
  };
  command.print = print_serve_report;
  command.add_json = [&](const RunReport& report, nlohmann::json& json) {
    const ServeTotals totals = totals_of(report);
    json["response_bytes"] = response_bytes;
    json["head_timeouts"] = totals.head_timeouts;
    json["memory"] = memory_json(rss_start_kib, report.stats.peak_live_connections,
                                 totals.rss_before_manager_kib, totals.rss_at_peak_kib);
    json["close_latency_us"] = latency_json(totals.latency);
  };
  command.add_thread_json = [](const ThreadReport& thread, nlohmann::json& entry) {
    entry["head_timeouts"] = std::any_cast<const ServeCounters&>(thread.counters).head_timeouts;
  };
  command.add_metrics = [](const RunReport& report, PrometheusText& out) {
    out.family("ringlinger_serve_head_timeouts_total", "counter",
               "Connections closed because no whole request head arrived within --head-timeout");
    out.sample(static_cast<double>(totals_of(report).head_timeouts));
  };
  return run_sharded(settings, command);
}

// naive and blocking are comparison servers of their own: one address, no metrics, no log.
void refuse_library_only_flags(const RunnerSettings& settings, const std::string& backend) {
  const char* flag = settings.listen_all.size() > 1 ? "--listen (more than one)"
                     : !settings.metrics.empty()    ? "--metrics"
                     : settings.log->enabled()      ? "--log"
                                                    : nullptr;
  if (flag != nullptr) {
    throw UsageError(fmt::format("{}: needs --backend auto, uring or epoll (got --backend {})", flag, backend));
  }
}

int run_serve(const ServeFlags& flags) {
  const RunnerSettings settings = runner_settings("serve", flags.common);
  const std::string& backend = flags.common.backend;
  if (settings.threads > 1 && !library_backend(backend)) {
    throw UsageError(fmt::format("--threads: more than 1 needs --backend auto, uring or epoll "
                                 "(got --threads {} with --backend {})",
                                 settings.threads, backend));
  }
  const std::uint64_t response_bytes =
      response_bytes_flag(flags.response_bytes, flags.sendfile && library_backend(backend));
  const std::chrono::milliseconds head_timeout(duration_flag_ms("--head-timeout", flags.head_timeout));
  if (!library_backend(backend)) refuse_library_only_flags(settings, backend);
  if (checked_only(settings)) return 0;  // before the response is made: it may be a large file
  if (backend == "naive") return run_naive(settings.listen, response_bytes, settings);
  if (backend == "blocking") return run_blocking(settings.listen, response_bytes, head_timeout, settings);
  return run_responders(settings, response_bytes, head_timeout, flags.sendfile);
}

}  // namespace

Command add_serve_command(CLI::App& program) {
  auto flags = std::make_shared<ServeFlags>();
  CommandFlags app = add_subcommand(
      program, "serve",
      "HTTP/1.x responder that answers without reading the request body, then closes "
      "gracefully (flush, SHUT_WR, drain to EOF, close). Prints its counters to stdout on "
      "SIGUSR1 and at exit; stops on SIGINT/SIGTERM.");
  flags->common.defer_accept = "on";  // HTTP: the client speaks first
  add_runner_flags(app, flags->common, {"blocking", "naive"},
                   "blocking (the same procedure with blocking system calls, one connection at a "
                   "time), or naive (plain close() right after the response: shows the data loss)");
  app.add_option("--response-bytes", flags->response_bytes,
                  "Body size of every 200 response (e.g. 16384, 16KiB, 1MiB); HEAD gets the same "
                  "head without it. At most 256MiB (built once in memory), or 16GiB with "
                  "--sendfile (written once to a file in $TMPDIR)").type_name("SIZE")
      .capture_default_str();
  app.add_option("--head-timeout", flags->head_timeout,
                  "Longest time a request head may take to arrive (slowloris), from the accept; "
                  "then the connection is reset, unanswered; 0 = no limit (uring, epoll, blocking)")
      .type_name("DURATION").capture_default_str();
  app.add_flag("--sendfile", flags->sendfile,
                "Send the response body from a file with Manager::send_file (sendfile(2), no copy: "
                "nginx's `sendfile on`) instead of from memory (uring and epoll backends)");
  return {&app.app(), [flags] { return with_config_context(flags->common, [&] { return run_serve(*flags); }); }};
}

}  // namespace ringlinger::tools
