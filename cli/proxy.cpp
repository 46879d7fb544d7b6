// `ringlinger proxy`: an L4 TCP proxy on the public API only. Each accepted client connection C
// gets an upstream connection U (a non-blocking connect() adopted while still connecting); bytes
// go both ways with flow control (pause the source while the destination's queue is long), and
// the way each stream ended is passed on:
//  - a FIN from either side is passed on as a half-close (SHUT_WR on the other leg once what was
//    forwarded is sent); when both sides have sent FIN the pair is closed gracefully (flush,
//    SHUT_WR, drain, close), so neither side loses bytes that the other sent;
//  - a leg that ends BEFORE its FIN was seen (its peer reset it, an error, a timeout, a failed or
//    timed-out upstream connect) cut the stream it carried: the other leg is reset, but only
//    after what was received was forwarded and acknowledged (Manager::abort_after_send), so its
//    remote reads every byte and then ECONNRESET, never a clean EOF that would pass a truncated
//    stream off as complete (a close-delimited response, HTTP/1.0, ...). A client whose upstream
//    could not be connected at all is reset too (no upstream stream is not an empty one);
//  - a leg that ends (by a reset, an error, ...) AFTER its FIN had delivered a complete stream
//    ended nothing that was still owed: the other leg is closed gracefully, never reset, so the
//    bytes still queued towards it are not thrown away (the bug Envoy fixed in #45267).
// The resets passed on are counted per direction (--json: proxy.resets_passed_*).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli_units.hpp"
#include "commands.hpp"
#include "ringlinger/ringlinger.hpp"
#include "stats_json.hpp"

namespace ringlinger::tools {
namespace {

using namespace std::chrono_literals;

struct ProxyFlags {
  std::string listen = "127.0.0.1:8080";
  std::string upstream;
  std::string backend = "auto";
  std::string stop_grace = "10s";
  std::string connect_timeout = "10s";
  std::string max_buffer = "256KiB";
  std::string receive_buffer = "32KiB";
  std::uint32_t receive_buffers = 256;
  unsigned threads = 1;
  std::string json_path;
  bool quiet = false;
  DrainFlags drain;
};

// Which side of the pair a connection is.
enum class Role : std::uint8_t { client, upstream };
constexpr std::string_view to_string(Role role) { return role == Role::client ? "client" : "upstream"; }

// One leg of a pair, indexed by its ConnectionId::slot.
struct Leg {
  ConnectionId self;  // invalid while the slot is not one of ours
  ConnectionId peer;  // the other leg (may be stale once that leg is closed)
  Role role = Role::client;
  bool eof = false;         // this leg's remote sent FIN (passed on as shutdown_write(peer))
  bool paused = false;      // receiving paused: the peer's send queue is over --max-buffer
  bool closing = false;     // close() was requested (by us)
  bool connect_timed_out = false;  // upstream: aborted by --connect-timeout while connecting
};

// What the proxy counts on top of the manager's Stats.
struct ProxyCounters {
  std::uint64_t connections = 0;            // clients accepted
  std::uint64_t pairs_open = 0;             // clients whose leg is not closed yet
  std::uint64_t upstream_connect_failures = 0;  // upstream ended by an error before any byte
  std::uint64_t upstream_connect_timeouts = 0;  // of those: aborted by --connect-timeout
  std::uint64_t upstream_unavailable = 0;   // no upstream leg made (socket() failed, table full, stopping)
  std::map<std::string, std::uint64_t> connect_errors;  // errno name -> count
  std::uint64_t bytes_client_to_upstream = 0;
  std::uint64_t bytes_upstream_to_client = 0;
  std::uint64_t half_closes_client_first = 0;    // the client sent FIN while the upstream had not
  std::uint64_t half_closes_upstream_first = 0;  // the upstream sent FIN while the client had not
  std::uint64_t pairs_closed_both_fin = 0;       // both sides sent FIN: closed together
  std::uint64_t pairs_closed_by_leg_end = 0;     // one leg ended (reset, error, timeout, stop)
  // Of those, and of the clients without an upstream: a stream cut before its FIN, passed on as a
  // reset of the other leg after what was forwarded (abort_after_send). upstream -> client also
  // counts the clients reset because their upstream could not be connected.
  std::uint64_t resets_passed_upstream_to_client = 0;  // the upstream leg was cut: client reset
  std::uint64_t resets_passed_client_to_upstream = 0;  // the client leg was cut: upstream reset
  // A cut that came when our FIN had (or may have) already gone out on the other leg (only in a
  // pair that stop() was closing, see pass_on_cut): that leg closes gracefully.
  std::uint64_t resets_not_passed_fin_out = 0;
  std::uint64_t pauses = 0;
  std::uint64_t resumes = 0;
  std::array<std::uint64_t, kOutcomeCount> client_outcomes{};
  std::array<std::uint64_t, kOutcomeCount> upstream_outcomes{};
};

std::string errno_name(int error) {
  const char* name = strerrorname_np(error);  // "ECONNREFUSED"
  return name != nullptr ? name : fmt::format("errno {}", error);
}

class Proxy {
 public:
  Proxy(const Config& config, const SocketAddress& upstream, std::uint64_t max_buffer,
        std::chrono::milliseconds connect_timeout)
      : upstream_(upstream),
        max_buffer_(max_buffer),
        connect_timeout_(connect_timeout),
        legs_(config.max_connections),
        manager_(config, callbacks()) {}

  Manager& manager() noexcept { return manager_; }
  const ProxyCounters& counters() const noexcept { return counters_; }

  // Runs until the manager stops; `tick` runs at least every 250 ms (for SIGUSR1).
  template <class Tick>
  void run(Tick&& tick) {
    for (;;) {
      std::chrono::milliseconds wait = 250ms;
      if (!connect_deadlines_.empty()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            connect_deadlines_.front().deadline - std::chrono::steady_clock::now());
        wait = std::clamp(left, std::chrono::milliseconds(1), wait);
      }
      if (!manager_.run_once(wait)) return;
      expire_connects(std::chrono::steady_clock::now());
      tick();
    }
  }

 private:
  Callbacks callbacks() {
    Callbacks callbacks;
    callbacks.on_accept = [this](ConnectionId id) { on_accept(id); };
    callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
      if (data.empty()) {
        on_eof(id);
      } else {
        forward(id, data);
      }
    };
    callbacks.on_send_drained = [this](ConnectionId id) { on_send_drained(id); };
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) { on_closed(id, report); };
    return callbacks;
  }

  // The leg of `id` if it is still ours (same slot and generation), else nullptr.
  Leg* leg_of(ConnectionId id) noexcept {
    if (!id.valid() || id.slot >= legs_.size()) return nullptr;
    Leg& leg = legs_[id.slot];
    return leg.self == id ? &leg : nullptr;
  }

  static void set_no_delay(int fd) {
    const int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }

  void on_accept(ConnectionId client) {
    ++counters_.connections;
    ++counters_.pairs_open;
    Leg& c = legs_[client.slot];
    c = Leg{};
    c.self = client;
    c.role = Role::client;
    set_no_delay(manager_.fd(client));

    const int fd = ::socket(upstream_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      fail_before_upstream(client, errno);
      return;
    }
    set_no_delay(fd);
    if (::connect(fd, upstream_.data(), upstream_.size()) != 0 && errno != EINPROGRESS) {
      // Refused at once (loopback can answer within the call): the same as a failed connect.
      const int error = errno;
      ::close(fd);
      ++counters_.upstream_connect_failures;
      ++counters_.connect_errors[errno_name(error)];
      reset_client_without_upstream(c);
      return;
    }
    const std::optional<ConnectionId> upstream = manager_.adopt(fd);
    if (!upstream) {  // table full or stopping: the fd is still ours
      ::close(fd);
      fail_before_upstream(client, 0);
      return;
    }
    Leg& u = legs_[upstream->slot];
    u = Leg{};
    u.self = *upstream;
    u.peer = client;
    u.role = Role::upstream;
    c.peer = *upstream;
    if (connect_timeout_.count() > 0) {
      connect_deadlines_.push_back({*upstream, std::chrono::steady_clock::now() + connect_timeout_});
    }
  }

  // No upstream leg could be made (socket() failed, table full, stopping).
  void fail_before_upstream(ConnectionId client, int error) {
    ++counters_.upstream_unavailable;
    if (error != 0) ++counters_.connect_errors[errno_name(error)];
    reset_client_without_upstream(legs_[client.slot]);
  }

  // The client gets a reset, like the client of an upstream whose connect failed later (a failed
  // connect is an upstream leg that ended before its EOF, on_closed): a clean EOF would tell it
  // that the upstream sent an empty, complete stream. Nothing is queued for it: the reset goes at
  // once. A client just accepted is open, so abort_after_send() cannot refuse.
  void reset_client_without_upstream(Leg& client) {
    if (!manager_.abort_after_send(client.self)) ++counters_.resets_passed_upstream_to_client;
    client.closing = true;
  }

  void forward(ConnectionId from, std::span<const std::byte> data) {
    Leg* source = leg_of(from);
    if (source == nullptr) return;
    Leg* destination = leg_of(source->peer);
    if (destination == nullptr || destination->closing) {
      close_leg(*source);  // nowhere to forward to (cannot happen while the pair is paired)
      return;
    }
    const std::error_code error = manager_.send(
        destination->self, std::string(reinterpret_cast<const char*>(data.data()), data.size()));
    if (error) {
      // The destination is failing (its outcome is decided; close() was not requested, we checked
      // `closing`) or stop() is closing every connection. Its on_closed decides how the source
      // ends: closing the source here would send its remote our FIN before on_closed could pass
      // on a cut as a reset. Until then nothing from the source can be delivered: stop reading.
      (void)manager_.pause_receive(source->self);
      return;
    }
    (source->role == Role::client ? counters_.bytes_client_to_upstream
                                  : counters_.bytes_upstream_to_client) += data.size();
    if (!source->paused && manager_.queued_bytes(destination->self) > max_buffer_) {
      if (!manager_.pause_receive(source->self)) {
        source->paused = true;
        ++counters_.pauses;
      }
    }
  }

  void on_send_drained(ConnectionId id) {
    Leg* destination = leg_of(id);
    if (destination == nullptr) return;
    Leg* source = leg_of(destination->peer);
    if (source == nullptr || !source->paused || source->closing) return;
    if (!manager_.resume_receive(source->self)) {
      source->paused = false;
      ++counters_.resumes;
    }
  }

  // `id`'s remote sent FIN: pass it on (our FIN to the other remote once everything forwarded
  // was sent); when both remotes have sent FIN, the pair is done.
  void on_eof(ConnectionId id) {
    Leg* leg = leg_of(id);
    if (leg == nullptr) return;
    leg->eof = true;
    Leg* peer = leg_of(leg->peer);
    if (peer == nullptr || peer->closing) {
      close_leg(*leg);
      return;
    }
    if (peer->eof) {
      ++counters_.pairs_closed_both_fin;
      close_leg(*leg);
      close_leg(*peer);
      return;
    }
    (leg->role == Role::client ? counters_.half_closes_client_first
                               : counters_.half_closes_upstream_first) += 1;
    // Refused (broken_pipe) only when the peer is failing or stop() is closing it: its on_closed
    // then closes this leg, gracefully or with a reset, according to how the peer ended.
    (void)manager_.shutdown_write(peer->self);
  }

  void close_leg(Leg& leg) {
    if (leg.closing) return;
    leg.closing = true;
    (void)manager_.close(leg.self);
  }

  void on_closed(ConnectionId id, const CloseReport& report) {
    Leg* leg = leg_of(id);
    if (leg == nullptr) return;
    const auto outcome = static_cast<std::size_t>(report.outcome);
    if (leg->role == Role::client) {
      ++counters_.client_outcomes[outcome];
      --counters_.pairs_open;
    } else {
      ++counters_.upstream_outcomes[outcome];
      // Ended by an error (or our connect timeout) before a byte went either way: the connect
      // failed (ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, ...).
      if (leg->connect_timed_out ||
          (report.first_error != 0 && report.bytes_sent == 0 && report.bytes_received == 0)) {
        ++counters_.upstream_connect_failures;
        if (leg->connect_timed_out) {
          ++counters_.upstream_connect_timeouts;
          ++counters_.connect_errors["connect timeout"];
        } else {
          ++counters_.connect_errors[errno_name(report.first_error)];
        }
      }
    }
    if (Leg* peer = leg_of(leg->peer); peer != nullptr) {
      if (!leg->eof && report.outcome != Outcome::clean) {
        // Gone before its FIN (reset, error, timeout, a failed connect): the stream it carried
        // towards the peer was cut.
        pass_on_cut(*leg, *peer);
      } else if (!peer->closing) {
        // Its stream was complete (its FIN was seen and passed on as shutdown_write) and it went
        // afterwards, even by a reset: close the other leg gracefully, which still delivers every
        // byte queued for it and its FIN. A reset here would throw them away (Envoy #45267).
        ++counters_.pairs_closed_by_leg_end;
        close_leg(*peer);
      }
    }
    *leg = Leg{};
  }

  // `from` ended before its FIN: its remote's stream towards `to`'s remote was cut. What arrived
  // was already queued on `to` by forward(); abort_after_send() sends it, waits until `to`'s
  // remote acknowledged all of it (so it sits in that remote's receive queue, which an incoming
  // reset leaves readable), then resets (no FIN): that remote reads every byte, then ECONNRESET.
  // A remote that stops reading is reset once --send-timeout passes without progress: bytes are
  // lost then, but it still sees a reset, not an EOF.
  void pass_on_cut(Leg& from, Leg& to) {
    if (!to.closing) ++counters_.pairs_closed_by_leg_end;
    const std::optional<State> state = manager_.state(to.self);
    // Outcome already decided (it failed by itself, or was aborted): its reset is on the way.
    if (!state || *state == State::cancelling || *state == State::closing) return;
    to.closing = true;
    if (!manager_.abort_after_send(to.self)) {
      (from.role == Role::upstream ? counters_.resets_passed_upstream_to_client
                                   : counters_.resets_passed_client_to_upstream) += 1;
      return;
    }
    // broken_pipe: our FIN may already be out on `to` (its close() got past the flush). This
    // proxy sends a FIN to a leg before both streams ended only for a complete stream (`from`'s
    // FIN, which rules out a cut) or when stop() closes every connection: so only a pair that
    // stop() was closing gets here. Then `to`'s remote has, or soon will have, a clean end of
    // the stream, and a reset now cannot undo it: a Linux reader that got the FIN reads EOF
    // even when an RST follows (the FIN's EOF is reported before the reset's error). All the
    // reset would still do is throw away forwarded bytes that the kernel holds unacknowledged
    // (an RST discards the send queue), losing data without reliably telling anyone. So the
    // graceful close goes on, and the cut that could not be passed on is counted.
    ++counters_.resets_not_passed_fin_out;
    (void)manager_.close(to.self);
  }

  // Upstream legs still connecting at their deadline are reset; their client is then closed.
  void expire_connects(std::chrono::steady_clock::time_point now) {
    while (!connect_deadlines_.empty() && connect_deadlines_.front().deadline <= now) {
      const ConnectionId id = connect_deadlines_.front().id;
      connect_deadlines_.pop_front();
      Leg* leg = leg_of(id);
      if (leg == nullptr || leg->closing) continue;
      tcp_info info{};
      socklen_t length = sizeof(info);
      const int fd = manager_.fd(id);
      if (fd >= 0 && ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 &&
          info.tcpi_state == TCP_SYN_SENT) {
        leg->connect_timed_out = true;
        (void)manager_.abort(id);
      }
    }
  }

  struct ConnectDeadline {
    ConnectionId id;
    std::chrono::steady_clock::time_point deadline;
  };

  const SocketAddress upstream_;
  const std::uint64_t max_buffer_;
  const std::chrono::milliseconds connect_timeout_;  // 0: the kernel's (SYN retries)
  std::deque<ConnectDeadline> connect_deadlines_;     // one timeout for all: FIFO = sorted
  std::vector<Leg> legs_;                             // indexed by ConnectionId::slot
  ProxyCounters counters_;
  Manager manager_;
};

// Signals: SIGINT/SIGTERM stop every manager (Manager::stop is signal-safe and may be called
// from any thread), SIGUSR1 asks for the counters (each loop notices it within 250 ms).
constexpr unsigned kMaxThreads = 64;
std::array<std::atomic<Manager*>, kMaxThreads> g_managers{};
std::atomic<std::int64_t> g_stop_grace_ms{10'000};
std::atomic<std::uint64_t> g_print_requests{0};

extern "C" void on_proxy_stop_signal(int) {
  for (auto& slot : g_managers) {
    if (Manager* manager = slot.load()) manager->stop(std::chrono::milliseconds(g_stop_grace_ms.load()));
  }
}
extern "C" void on_proxy_print_signal(int) { g_print_requests.fetch_add(1); }

void install_signals() {
  struct sigaction action {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: the wait in io_uring_enter returns EINTR at once
  action.sa_handler = on_proxy_stop_signal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  action.sa_handler = on_proxy_print_signal;
  sigaction(SIGUSR1, &action, nullptr);
}

void restore_signals() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGUSR1, SIG_IGN);
  for (auto& slot : g_managers) slot.store(nullptr);
}

std::string outcomes_text(const std::array<std::uint64_t, kOutcomeCount>& counts) {
  std::string text;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    if (counts[i] == 0) continue;
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", counts[i], to_string(static_cast<Outcome>(i)));
  }
  return text.empty() ? "none" : text;
}

struct CpuTime {
  std::uint64_t user_us = 0;
  std::uint64_t system_us = 0;
  static CpuTime now() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    auto us = [](const timeval& tv) {
      return static_cast<std::uint64_t>(tv.tv_sec) * 1'000'000 + static_cast<std::uint64_t>(tv.tv_usec);
    };
    return {us(usage.ru_utime), us(usage.ru_stime)};
  }
};

nlohmann::json proxy_json(const ProxyCounters& counters) {
  return {
      {"connections", counters.connections},
      {"pairs_open", counters.pairs_open},
      {"upstream_connect_failures", counters.upstream_connect_failures},
      {"upstream_connect_timeouts", counters.upstream_connect_timeouts},
      {"upstream_unavailable", counters.upstream_unavailable},
      {"connect_errors", counters.connect_errors},
      {"bytes_client_to_upstream", counters.bytes_client_to_upstream},
      {"bytes_upstream_to_client", counters.bytes_upstream_to_client},
      {"half_closes_client_first", counters.half_closes_client_first},
      {"half_closes_upstream_first", counters.half_closes_upstream_first},
      {"pairs_closed_both_fin", counters.pairs_closed_both_fin},
      {"pairs_closed_by_leg_end", counters.pairs_closed_by_leg_end},
      {"resets_passed_upstream_to_client", counters.resets_passed_upstream_to_client},
      {"resets_passed_client_to_upstream", counters.resets_passed_client_to_upstream},
      {"resets_not_passed_fin_out", counters.resets_not_passed_fin_out},
      {"receive_pauses", counters.pauses},
      {"receive_resumes", counters.resumes},
      {"client_outcomes", outcomes_json(counters.client_outcomes)},
      {"upstream_outcomes", outcomes_json(counters.upstream_outcomes)},
  };
}

// What one manager's thread reports: its counters, read on that thread.
struct Snapshot {
  ProxyCounters counters;
  Stats stats;
};

// The sum over threads (peak_live_connections: the sum of each thread's peak).
Snapshot sum_of(const std::vector<Snapshot>& parts) {
  Snapshot total;
  ProxyCounters& c = total.counters;
  for (const Snapshot& part : parts) {
    const ProxyCounters& p = part.counters;
    c.connections += p.connections;
    c.pairs_open += p.pairs_open;
    c.upstream_connect_failures += p.upstream_connect_failures;
    c.upstream_connect_timeouts += p.upstream_connect_timeouts;
    c.upstream_unavailable += p.upstream_unavailable;
    for (const auto& [name, count] : p.connect_errors) c.connect_errors[name] += count;
    c.bytes_client_to_upstream += p.bytes_client_to_upstream;
    c.bytes_upstream_to_client += p.bytes_upstream_to_client;
    c.half_closes_client_first += p.half_closes_client_first;
    c.half_closes_upstream_first += p.half_closes_upstream_first;
    c.pairs_closed_both_fin += p.pairs_closed_both_fin;
    c.pairs_closed_by_leg_end += p.pairs_closed_by_leg_end;
    c.resets_passed_upstream_to_client += p.resets_passed_upstream_to_client;
    c.resets_passed_client_to_upstream += p.resets_passed_client_to_upstream;
    c.resets_not_passed_fin_out += p.resets_not_passed_fin_out;
    c.pauses += p.pauses;
    c.resumes += p.resumes;
    for (std::size_t i = 0; i < kOutcomeCount; ++i) {
      c.client_outcomes[i] += p.client_outcomes[i];
      c.upstream_outcomes[i] += p.upstream_outcomes[i];
    }
    total.stats += part.stats;
  }
  return total;
}

void print_counters(const ProxyCounters& counters, const Stats& stats, const CpuTime& cpu) {
  std::string errors;
  for (const auto& [name, count] : counters.connect_errors) {
    errors += fmt::format("{}{} {}", errors.empty() ? "" : ", ", count, name);
  }
  fmt::print(stderr,
             "proxy:       {} connections, {} open; upstream: {} connect failures{}, {} not "
             "connected (no socket, table full or stopping)\n",
             counters.connections, counters.pairs_open, counters.upstream_connect_failures,
             errors.empty() ? "" : " (" + errors + ")", counters.upstream_unavailable);
  fmt::print(stderr, "bytes:       {} client -> upstream, {} upstream -> client\n",
             format_bytes(counters.bytes_client_to_upstream),
             format_bytes(counters.bytes_upstream_to_client));
  fmt::print(stderr,
             "closes:      {} half-closes by the client first, {} by the upstream first; {} pairs "
             "closed after both FINs, {} after one leg ended; flow control: {} pauses, {} resumes\n",
             counters.half_closes_client_first, counters.half_closes_upstream_first,
             counters.pairs_closed_both_fin, counters.pairs_closed_by_leg_end, counters.pauses,
             counters.resumes);
  fmt::print(stderr,
             "resets:      {} passed on upstream -> client (a cut upstream stream or no upstream "
             "connection), {} client -> upstream; {} not passed on (our FIN was already out)\n",
             counters.resets_passed_upstream_to_client, counters.resets_passed_client_to_upstream,
             counters.resets_not_passed_fin_out);
  fmt::print(stderr, "client legs:   {}\n", outcomes_text(counters.client_outcomes));
  fmt::print(stderr, "upstream legs: {}\n", outcomes_text(counters.upstream_outcomes));
  fmt::print(stderr,
             "manager:     {} live connections (peak {}), {} accepted, {} adopted, {} closed; {} "
             "system calls, {} io_uring_enter; cpu {:.3f} s user, {:.3f} s system\n",
             stats.live_connections(), stats.peak_live_connections, stats.connections_accepted,
             stats.connections_adopted, stats.closed_connections(), stats.syscalls,
             stats.enter_calls, static_cast<double>(cpu.user_us) / 1e6,
             static_cast<double>(cpu.system_us) / 1e6);
}

// Writes FILE through a temporary file and a rename, so a reader never sees half of it.
void write_json(const std::string& path, const nlohmann::json& json) {
  const std::string temporary = path + ".tmp";
  {
    std::ofstream file(temporary);
    file << json.dump(2) << "\n";
    if (!file) {
      fmt::print(stderr, "ringlinger proxy: cannot write {}\n", temporary);
      return;
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) fmt::print(stderr, "ringlinger proxy: cannot write {}: {}\n", path, error.message());
}

SocketAddress address_flag(std::string_view flag, const std::string& text) {
  auto address = SocketAddress::parse(text);
  if (!address) {
    throw UsageError(std::string(flag) + ": '" + text +
                     "' is not an address like 127.0.0.1:8080 or [::1]:8080");
  }
  return *address;
}

int run_proxy(const ProxyFlags& flags) {
  if (flags.threads < 1 || flags.threads > kMaxThreads) {
    throw UsageError(fmt::format("--threads: must be between 1 and {} (got {})", kMaxThreads, flags.threads));
  }
  const SocketAddress listen = address_flag("--listen", flags.listen);
  if (flags.upstream.empty()) throw UsageError("--upstream is required");
  const SocketAddress upstream = address_flag("--upstream", flags.upstream);
  if (upstream.port() == 0) throw UsageError("--upstream: port 0 is not a port to connect to");
  g_stop_grace_ms.store(static_cast<std::int64_t>(duration_flag_ms("--stop-grace", flags.stop_grace)));
  const std::chrono::milliseconds connect_timeout(duration_flag_ms("--connect-timeout", flags.connect_timeout));
  const std::uint64_t max_buffer = bytes_flag("--max-buffer", flags.max_buffer);
  if (max_buffer == 0) throw UsageError("--max-buffer: must be at least 1 byte (got " + flags.max_buffer + ")");

  Config config = to_config(flags.drain);
  config.backend = flags.backend == "uring"   ? IoBackend::io_uring
                   : flags.backend == "epoll" ? IoBackend::epoll
                                              : IoBackend::automatic;
  const std::uint64_t receive_buffer = bytes_flag("--receive-buffer", flags.receive_buffer);
  if (receive_buffer < 64 || receive_buffer > (16u << 20)) {
    throw UsageError("--receive-buffer: must be between 64 B and 16 MiB (got " + flags.receive_buffer + ")");
  }
  config.receive_buffer_bytes = static_cast<std::uint32_t>(receive_buffer);
  config.receive_buffer_count = flags.receive_buffers;
  if (std::string error = config.validate(); !error.empty()) {
    if (error.starts_with("receive_buffer_count")) throw UsageError("--receive-buffers: " + error);
    throw UsageError(error);
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < config.max_connections + 32u) {
    fmt::print(stderr,
               "ringlinger proxy: warning: RLIMIT_NOFILE is {}, below --max-connections {} plus a "
               "few; accepts and upstream sockets will fail with EMFILE before the table is full\n",
               limit.rlim_cur, config.max_connections);
  }

  const unsigned threads = flags.threads;
  // One Proxy (one Manager, one ring) per thread, each created and driven on its own thread;
  // with several, every one listens on the same port with SO_REUSEPORT and the kernel spreads
  // the connections. Each publishes its counters when asked (SIGUSR1) and when it ends.
  struct Worker {
    std::thread thread;
    Snapshot latest;
    std::uint64_t published = 0;  // the last print request answered
    bool done = false;
    std::exception_ptr error;
    std::optional<SocketAddress> bound;
    bool ready = false;
    std::string backend_description;
    IoBackend backend = IoBackend::epoll;
  };
  std::vector<Worker> workers(threads);
  std::mutex mutex;
  std::condition_variable changed;
  bool released = false;  // set once no signal handler can reach the managers any more

  auto work = [&](unsigned index, SocketAddress address) {
    Worker& me = workers[index];
    try {
      Proxy proxy(config, upstream, max_buffer, connect_timeout);
      Manager& manager = proxy.manager();
      const SocketAddress bound = manager.listen(address, 4096, threads > 1);
      g_managers[index].store(&manager);
      // Out of the signal handler's reach before the Manager is destroyed, also on an exception.
      struct Unpublish {
        std::atomic<Manager*>& slot;
        ~Unpublish() { slot.store(nullptr); }
      } unpublish{g_managers[index]};
      std::uint64_t answered = 0;
      auto publish = [&](bool done) {
        Snapshot snapshot{proxy.counters(), manager.stats()};
        {
          std::lock_guard lock(mutex);
          me.latest = std::move(snapshot);
          me.published = answered;
          me.done = done;
        }
        changed.notify_all();
      };
      {
        std::lock_guard lock(mutex);
        me.bound = bound;
        me.ready = true;
        me.backend_description = manager.describe_backend();
        me.backend = manager.backend();
      }
      changed.notify_all();
      proxy.run([&] {
        if (const std::uint64_t requests = g_print_requests.load(); requests != answered) {
          answered = requests;
          publish(false);
        }
      });
      answered = g_print_requests.load();
      publish(true);
      // The Manager lives on until the main thread has taken it out of the signal handler's
      // reach (restore_signals), so a late SIGTERM never finds it destroyed.
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] { return released; });
    } catch (...) {
      {
        std::lock_guard lock(mutex);
        me.error = std::current_exception();
        me.ready = true;
        me.done = true;
      }
      changed.notify_all();
    }
  };

  g_print_requests.store(0);
  install_signals();
  // The handlers run on this thread only: the workers start with the signals blocked (a thread
  // inherits the mask), so a handler never runs while this thread tears the managers down. The
  // workers notice a stop or a print request at their next loop step (at most 250 ms).
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &handled, nullptr);
  // Thread 0 binds first (port 0 becomes a port); the others listen on the address it bound.
  auto start = [&](unsigned index, const SocketAddress& address) {
    workers[index].thread = std::thread(work, index, address);
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return workers[index].ready; });
    return workers[index].error == nullptr;
  };
  // Stops every manager, waits for every thread to be done, then lets them destroy theirs.
  auto join_all = [&] {
    on_proxy_stop_signal(0);
    {
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] {
        return std::all_of(workers.begin(), workers.end(),
                           [](const Worker& w) { return w.done || !w.thread.joinable(); });
      });
    }
    restore_signals();
    {
      std::lock_guard lock(mutex);
      released = true;
    }
    changed.notify_all();
    for (Worker& worker : workers) {
      if (worker.thread.joinable()) worker.thread.join();
    }
  };
  bool started = start(0, listen);
  for (unsigned i = 1; started && i < threads; ++i) started = start(i, *workers[0].bound);
  pthread_sigmask(SIG_UNBLOCK, &handled, nullptr);
  if (!started) {
    join_all();
    for (Worker& worker : workers) {
      if (worker.error) std::rethrow_exception(worker.error);
    }
    throw std::runtime_error("a thread did not start");
  }
  const SocketAddress bound = *workers[0].bound;
  const std::string description = workers[0].backend_description;
  fmt::print("ringlinger proxy: listening on {}, upstream {}{} (backend {})\n", bound.to_string(),
             upstream.to_string(), threads > 1 ? fmt::format(", {} threads", threads) : "",
             description);
  std::fflush(stdout);

  const CpuTime cpu_at_start = CpuTime::now();
  auto report = [&](const std::vector<Snapshot>& parts) {
    const CpuTime now = CpuTime::now();
    const CpuTime cpu{now.user_us - cpu_at_start.user_us, now.system_us - cpu_at_start.system_us};
    const Snapshot total = sum_of(parts);
    if (!flags.quiet) print_counters(total.counters, total.stats, cpu);
    if (flags.json_path.empty()) return;
    nlohmann::json json{
        {"backend", workers[0].backend == IoBackend::io_uring ? "uring" : "epoll"},
        {"backend_description", description},
        {"listen", bound.to_string()},
        {"upstream", upstream.to_string()},
        {"threads", threads},
        {"config",
         {{"max_buffer", max_buffer},
          {"receive_buffer_bytes", config.receive_buffer_bytes},
          {"receive_buffer_count", config.receive_buffer_count},
          {"connect_timeout_ms", connect_timeout.count()},
          {"drain_idle_timeout_ms", config.drain_idle_timeout_ms},
          {"drain_timeout_ms", config.drain_timeout_ms},
          {"drain_max_bytes", config.drain_max_bytes},
          {"send_timeout_ms", config.send_timeout_ms},
          {"orphan_timeout_ms", config.orphan_timeout_ms},
          {"on_timeout", to_string(config.on_timeout)},
          {"shutdown", to_string(config.shutdown_mode)},
          {"max_connections", config.max_connections},
          {"batch_wait_us", config.batch_wait_us}}},
        {"proxy", proxy_json(total.counters)},
        {"stats", stats_json(total.stats)},
        {"cpu", {{"user_us", cpu.user_us}, {"system_us", cpu.system_us}}},
    };
    if (threads > 1) {
      json["per_thread"] = nlohmann::json::array();
      for (const Snapshot& part : parts) {
        json["per_thread"].push_back({{"connections", part.counters.connections},
                                      {"pairs_open", part.counters.pairs_open},
                                      {"live_connections", part.stats.live_connections()}});
      }
    }
    write_json(flags.json_path, json);
  };

  // Wait for the threads; answer SIGUSR1 once every thread has published for it.
  std::vector<Snapshot> parts(threads);
  {
    std::unique_lock lock(mutex);
    std::uint64_t printed = 0;
    for (;;) {
      changed.wait_for(lock, 100ms);
      const std::uint64_t requested = g_print_requests.load();
      const bool all_done = std::all_of(workers.begin(), workers.end(), [](const Worker& w) { return w.done; });
      const bool all_answered = std::all_of(workers.begin(), workers.end(), [&](const Worker& w) {
        return w.done || w.published == requested;
      });
      if (all_done) break;
      if (requested != printed && all_answered) {
        printed = requested;
        for (unsigned i = 0; i < threads; ++i) parts[i] = workers[i].latest;
        lock.unlock();
        report(parts);
        lock.lock();
      }
    }
  }
  join_all();
  for (Worker& worker : workers) {
    if (worker.error) std::rethrow_exception(worker.error);
  }
  for (unsigned i = 0; i < threads; ++i) parts[i] = workers[i].latest;
  report(parts);
  return 0;
}

}  // namespace

Command add_proxy_command(CLI::App& program) {
  auto flags = std::make_shared<ProxyFlags>();
  CLI::App* app = program.add_subcommand(
      "proxy",
      "L4 TCP proxy: forwards every connection accepted on --listen to --upstream, both ways, "
      "with flow control; passes a FIN on as a half-close and closes both legs gracefully "
      "(flush, SHUT_WR, drain to EOF, close), so no forwarded byte is lost. A side that resets "
      "(or fails, or times out) before its FIN has cut its stream: the other side gets every byte "
      "forwarded, then a reset, never a clean EOF; a client whose upstream cannot be connected "
      "is reset. A reset after a side's FIN (its stream was complete) still closes the other "
      "side gracefully. Prints its counters to stderr on SIGUSR1 and at exit; stops on "
      "SIGINT/SIGTERM.");
  app->add_option("--listen", flags->listen, "Address to listen on; port 0 picks a free port")
      ->type_name("ADDRESS")->capture_default_str();
  app->add_option("--upstream", flags->upstream, "Address to connect each connection to")
      ->type_name("ADDRESS")->required();
  app->add_option("--max-buffer", flags->max_buffer,
                  "Bytes queued towards one side before reading from the other side pauses "
                  "(resumes once they are sent)")
      ->type_name("SIZE")->capture_default_str()->group("Forwarding");
  app->add_option("--receive-buffer", flags->receive_buffer,
                  "Size of each shared receive buffer: the most bytes one read forwards")
      ->type_name("SIZE")->capture_default_str()->group("Forwarding");
  app->add_option("--receive-buffers", flags->receive_buffers,
                  "Number of shared receive buffers (a power of two); bounds memory, not connections")
      ->capture_default_str()->group("Forwarding");
  app->add_option("--connect-timeout", flags->connect_timeout,
                  "Longest time an upstream connect may take; then the upstream leg is reset and "
                  "so is the client; 0 = the kernel's SYN retries (about 2 minutes)")
      ->type_name("DURATION")->capture_default_str()->group("Forwarding");
  app->add_option("--threads", flags->threads,
                  "Threads, each with its own manager (ring) listening on the same port "
                  "(SO_REUSEPORT: the kernel spreads connections); --max-connections is per thread")
      ->capture_default_str();
  app->add_option("--backend", flags->backend,
                  "auto (io_uring, or epoll where io_uring is unavailable), uring, epoll")
      ->check(CLI::IsMember({"auto", "uring", "epoll"}))->capture_default_str();
  app->add_option("--stop-grace", flags->stop_grace,
                  "On SIGINT/SIGTERM, how long open and closing connections may take before they "
                  "are reset")
      ->type_name("DURATION")->capture_default_str();
  app->add_option("--json", flags->json_path,
                  "Write the configuration and counters to FILE on SIGUSR1 and at exit")
      ->type_name("FILE");
  app->add_flag("--quiet", flags->quiet, "Do not print the counters (SIGUSR1, exit) to stderr");
  add_drain_flags(*app, flags->drain);
  app->footer(
      "A pair takes two connection slots: --max-connections 16384 carries 8192 clients.\n"
      "Example: ringlinger proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:80 --json stats.json");
  return {app, [flags] { return run_proxy(*flags); }};
}

}  // namespace ringlinger::tools
