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
// Threads, signals and counters come from the runner (runner.hpp); this file forwards.
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <any>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "address_flags.hpp"
#include "cli_units.hpp"
#include "commands.hpp"
#include "ringlinger/ringlinger.hpp"
#include "runner.hpp"
#include "stats_json.hpp"

namespace ringlinger::tools {
namespace {

struct ProxyFlags {
  RunnerFlags common;
  std::string upstream;
  std::string connect_timeout = "10s";
  std::string max_buffer = "256KiB";
  // Larger than the library's default (2 KiB, sized for request heads): a proxy moves bulk data,
  // and one read forwards at most one buffer. 64 KiB halves the receives and sends of a 1 MiB
  // transfer against 32 KiB (16.5 against 33.0 system calls per request): issue 17, FRESH=1
  // bench/floor/compare.sh 9 4, 1 MiB keep-alive, 0.90x the CPU per request (median of the runs'
  // ratios; 16 KiB unchanged).
  std::string receive_buffer = "64KiB";
  // Fewer than the library's default (256): the proxy hands each buffer back after on_receive, so
  // few are in use at once, and the kernel's copy into a buffer is cheaper when it lands in one
  // still in the cache (the ring hands them out in turn: 256 x 32 KiB is 8 MiB, 64 is 2 MiB).
  // Issue 17, bench/floor/compare.sh 3 3 (load 5-8): 1 MiB keep-alive 982 -> 823 us/request.
  // 32 of 64 KiB cost the same CPU but ran short: 0.4 receives per request waited for a buffer
  // at 16 KiB, 7.9 at 1 MiB; 64 of them, 0.
  std::uint32_t receive_buffers = 64;
};

// A forward shorter than this goes through the library's queue (a copy into a std::string, then a
// send in the ring, submitted with the loop step's one io_uring_enter) instead of a send(2) of its
// own: on this guest, copying up to a few tens of KiB costs less than a system call. Issue 17,
// fresh processes (docs/PERFORMANCE.md, "Which forwards are sent inline"): 8 KiB took 16 KiB
// keep-alive from 19.6 to 18.0 us per request; 32 KiB, which queues a 16 KiB response too, was
// cheaper again (run medians 0.94x and 0.98x of 8 KiB's). 1 MiB keep-alive, whose forwards are
// mostly the 64 KiB receive buffer, keeps the inline sends' gain (1.02x, within the runs' noise),
// which queueing every forward loses (1.09x).
constexpr std::size_t kInlineSendMinBytes = 32 * 1024;

// glibc gives the free top of a heap back to the kernel (madvise) once it passes the trim
// threshold (128 KiB by default), and the next allocations fault its pages in again. The queued
// forwards are allocated and freed in the manager threads, in glibc's thread arenas: with the
// default, some proxy processes trimmed and re-faulted the same pages, 1.6 faults per request,
// and stayed 2-3x dearer for their whole life (docs/PERFORMANCE.md, "the trap"). Setting a
// threshold turns off glibc's dynamic one, so both are set to the most that rule reaches on
// 64-bit: blocks below 32 MiB come from the heap, and up to 64 MiB of free heap stays mapped.
constexpr int kMmapThresholdBytes = 32 * 1024 * 1024;
constexpr int kTrimThresholdBytes = 2 * kMmapThresholdBytes;

// Which side of the pair a connection is.
enum class Role : std::uint8_t { client, upstream };

// One leg of a pair, indexed by its ConnectionId::slot.
struct Leg {
  ConnectionId self;  // invalid while the slot is not one of ours
  ConnectionId peer;  // the other leg (may be stale once that leg is closed)
  Role role = Role::client;
  bool eof = false;         // this leg's remote sent FIN (passed on as shutdown_write(peer))
  bool paused = false;      // receiving paused: the peer's send queue is over --max-buffer
  bool closing = false;     // close() was requested (by us)
  bool connect_timed_out = false;  // upstream: aborted by --connect-timeout while connecting
  int direct_error = 0;            // send_now() failed with it and aborted the leg
  std::uint64_t bytes_sent_directly = 0;  // by send_now(): not in the library's CloseReport
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
  // send_now()'s send(2) calls and the bytes they wrote: added to the library's Stats
  // (bytes_sent, syscalls) wherever the proxy reports them.
  std::uint64_t direct_sends = 0;
  std::uint64_t bytes_sent_directly = 0;
  std::array<std::uint64_t, kOutcomeCount> client_outcomes{};
  std::array<std::uint64_t, kOutcomeCount> upstream_outcomes{};
};

class Proxy final : public ShardServer {
 public:
  Proxy(const Config& config, const SocketAddress& upstream, std::uint64_t max_buffer,
        std::chrono::milliseconds connect_timeout)
      : upstream_(upstream),
        max_buffer_(max_buffer),
        connect_deadlines_(connect_timeout, config.max_connections),
        legs_(config.max_connections),
        manager_(config, callbacks()) {}

  Manager& manager() noexcept override { return manager_; }
  DeadlineFifo& deadlines() noexcept override { return connect_deadlines_; }
  Stats stats() override {
    Stats with_direct_sends = manager_.stats();
    with_direct_sends.bytes_sent += counters_.bytes_sent_directly;
    with_direct_sends.syscalls += counters_.direct_sends;
    return with_direct_sends;
  }
  std::any counters() const override { return counters_; }

  // An upstream leg still connecting at its deadline is reset; its client is then closed.
  void on_deadline(ConnectionId id) override {
    Leg* leg = leg_of(id);
    if (leg == nullptr || leg->closing) return;
    tcp_info info{};
    socklen_t length = sizeof(info);
    const int fd = manager_.fd(id);
    if (fd >= 0 && ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 &&
        info.tcpi_state == TCP_SYN_SENT) {
      leg->connect_timed_out = true;
      (void)manager_.abort(id);
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
    log_accepted(client);
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
      log_upstream_error(client, upstream_, error);
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
    connect_deadlines_.add(*upstream);
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
    std::uint64_t& forwarded = source->role == Role::client ? counters_.bytes_client_to_upstream
                                                            : counters_.bytes_upstream_to_client;
    const std::optional<std::size_t> sent = send_now(*destination, data);
    std::error_code error = std::make_error_code(std::errc::broken_pipe);  // send_now aborted it
    if (sent) {
      const auto rest = data.subspan(*sent);
      error = rest.empty() ? std::error_code{}
                           : manager_.send(destination->self,
                                           std::string(reinterpret_cast<const char*>(rest.data()), rest.size()));
    }
    if (error) {
      // The destination is failing (its outcome is decided; close() was not requested, we checked
      // `closing`) or stop() is closing every connection. Its on_closed decides how the source
      // ends: closing the source here would send its remote our FIN before on_closed could pass
      // on a cut as a reset. Until then nothing from the source can be delivered: stop reading.
      (void)manager_.pause_receive(source->self);
      forwarded += sent.value_or(0);  // what send_now() wrote went out all the same
      return;
    }
    forwarded += data.size();
    if (!source->paused && manager_.queued_bytes(destination->self) > max_buffer_) {
      if (!manager_.pause_receive(source->self)) {
        source->paused = true;
        ++counters_.pauses;
      }
    }
  }

  // Writes what the socket takes at once when nothing is queued for `to` (nothing in flight either:
  // a piece stays queued until its send completes) and the forward is at least kInlineSendMinBytes,
  // so those bytes are not copied into a std::string and sent again through the ring. Issue 17,
  // bench/floor/compare.sh: that copy (memmove) was 5 % of the proxy's CPU at 16 KiB, 10 % at 1 MiB.
  // The order of bytes is kept: the rest goes through the queue behind them. The ack wait of
  // abort_after_send() reads the kernel's counts (TCP_INFO), which include these bytes; the
  // library's CloseReport.bytes_sent and Stats.bytes_sent do not: as_sent() adds them to the report,
  // stats() to the Stats that the proxy reports (--json, --metrics, SIGUSR1), and the proxy's byte
  // counters count them. A send that fails took the socket's pending error (sk_err): the library's
  // receive would then read a reset leg as a clean EOF, so the leg is aborted here (its on_closed
  // passes the cut on) and the error kept for on_closed. nullopt: aborted.
  std::optional<std::size_t> send_now(Leg& to, std::span<const std::byte> data) {
    if (data.size() < kInlineSendMinBytes) return 0;
    if (manager_.state(to.self) != State::open || manager_.queued_bytes(to.self) != 0) return 0;
    const int fd = manager_.fd(to.self);
    if (fd < 0) return 0;
    const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    ++counters_.direct_sends;
    if (sent >= 0) {
      to.bytes_sent_directly += static_cast<std::uint64_t>(sent);
      counters_.bytes_sent_directly += static_cast<std::uint64_t>(sent);
      return static_cast<std::size_t>(sent);
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    to.direct_error = errno;
    (void)manager_.abort(to.self);
    return std::nullopt;
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

  void on_closed(ConnectionId id, const CloseReport& library_report) {
    connect_deadlines_.remove(id);
    Leg* leg = leg_of(id);
    if (leg == nullptr) return;
    const CloseReport report = as_sent(*leg, library_report);
    if (leg->role == Role::client) {
      log_closed(id, "client", report);
    } else {
      log_closed(id, "upstream", report, &upstream_);
    }
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
        log_upstream_error(leg->peer, upstream_, leg->connect_timed_out ? 0 : report.first_error);
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

  // The leg's close report as if send_now()'s bytes had gone through the library: they count in
  // bytes_sent, and a leg that send_now() aborted ended as the library's own send would have
  // ended it on the same error (engine.cpp: a reset, else a send error), not by our abort. The
  // event log and the counters take this one.
  static CloseReport as_sent(const Leg& leg, CloseReport report) noexcept {
    report.bytes_sent += leg.bytes_sent_directly;
    if (const int error = leg.direct_error; error != 0) {
      report.outcome = is_peer_reset_error(error) ? Outcome::peer_reset : Outcome::send_error;
      if (report.first_error == 0) report.first_error = error;
    }
    return report;
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

  const SocketAddress upstream_;
  const std::uint64_t max_buffer_;
  DeadlineFifo connect_deadlines_;  // --connect-timeout; 0: the kernel's (SYN retries)
  std::vector<Leg> legs_;           // indexed by ConnectionId::slot
  ProxyCounters counters_;
  Manager manager_;
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

// The threads' own counters added up.
ProxyCounters sum_of(const RunReport& report) {
  ProxyCounters c;
  for (const ThreadReport& thread : report.threads) {
    const auto& p = std::any_cast<const ProxyCounters&>(thread.counters);
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
  }
  return c;
}

void print_counters(const ProxyCounters& counters, const Stats& stats, const CpuUsage& cpu) {
  std::string errors;
  for (const auto& [name, count] : counters.connect_errors) {
    errors += fmt::format("{}{} {}", errors.empty() ? "" : ", ", count, name);
  }
  fmt::print("proxy:       {} connections, {} open; upstream: {} connect failures{}, {} not "
             "connected (no socket, table full or stopping)\n",
             counters.connections, counters.pairs_open, counters.upstream_connect_failures,
             errors.empty() ? "" : " (" + errors + ")", counters.upstream_unavailable);
  fmt::print("bytes:       {} client -> upstream, {} upstream -> client\n",
             format_bytes(counters.bytes_client_to_upstream),
             format_bytes(counters.bytes_upstream_to_client));
  fmt::print("closes:      {} half-closes by the client first, {} by the upstream first; {} pairs "
             "closed after both FINs, {} after one leg ended; flow control: {} pauses, {} resumes\n",
             counters.half_closes_client_first, counters.half_closes_upstream_first,
             counters.pairs_closed_both_fin, counters.pairs_closed_by_leg_end, counters.pauses,
             counters.resumes);
  fmt::print("resets:      {} passed on upstream -> client (a cut upstream stream or no upstream "
             "connection), {} client -> upstream; {} not passed on (our FIN was already out)\n",
             counters.resets_passed_upstream_to_client, counters.resets_passed_client_to_upstream,
             counters.resets_not_passed_fin_out);
  fmt::print("client legs:   {}\n", outcomes_text(counters.client_outcomes));
  fmt::print("upstream legs: {}\n", outcomes_text(counters.upstream_outcomes));
  fmt::print("manager:     {} live connections (peak {}), {} accepted, {} adopted, {} closed; {} "
             "system calls, {} io_uring_enter; cpu {:.3f} s user, {:.3f} s system\n",
             stats.live_connections(), stats.peak_live_connections, stats.connections_accepted,
             stats.connections_adopted, stats.closed_connections(), stats.syscalls,
             stats.enter_calls, static_cast<double>(cpu.user_us) / 1e6,
             static_cast<double>(cpu.system_us) / 1e6);
}

// What --upstream, --max-buffer, --receive-buffer(s) and --connect-timeout say, checked.
struct ProxySettings {
  RunnerSettings common;  // its config has the receive buffers
  SocketAddress upstream;
  std::uint64_t max_buffer = 0;
  std::chrono::milliseconds connect_timeout{0};
};

ProxySettings proxy_settings(const ProxyFlags& flags) {
  ProxySettings settings{runner_settings("proxy", flags.common), {}, 0, {}};
  if (flags.upstream.empty()) throw UsageError("--upstream is required");
  settings.upstream = connect_address("--upstream", flags.upstream);
  if (settings.upstream.port() == 0) throw UsageError("--upstream: port 0 is not a port to connect to");
  settings.connect_timeout = std::chrono::milliseconds(duration_flag_ms("--connect-timeout", flags.connect_timeout));
  settings.max_buffer = bytes_flag("--max-buffer", flags.max_buffer);
  if (settings.max_buffer == 0) throw UsageError("--max-buffer: must be at least 1 byte (got " + flags.max_buffer + ")");
  Config& config = settings.common.config;
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
  return settings;
}

// The proxy's families on the --metrics page.
void add_proxy_metrics(const ProxyCounters& counters, PrometheusText& out) {
  out.family("ringlinger_proxy_connections_total", "counter", "Client connections accepted");
  out.sample(static_cast<double>(counters.connections));
  out.family("ringlinger_proxy_pairs_open", "gauge", "Client-upstream pairs not yet closed");
  out.sample(static_cast<double>(counters.pairs_open));
  out.family("ringlinger_proxy_upstream_connect_failures_total", "counter",
             "Upstream connects that failed, by error (errno name, or timeout for --connect-timeout)");
  for (const auto& [error, count] : counters.connect_errors) {
    out.sample(static_cast<double>(count), {{"error", error == "connect timeout" ? "timeout" : error}});
  }
  out.family("ringlinger_proxy_upstream_unavailable_total", "counter",
             "Clients reset because no upstream connection could be made (table full, socket() failed)");
  out.sample(static_cast<double>(counters.upstream_unavailable));
  out.family("ringlinger_proxy_leg_closes_total", "counter", "Legs closed, by leg and outcome");
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    const std::string outcome(to_string(static_cast<Outcome>(i)));
    out.sample(static_cast<double>(counters.client_outcomes[i]), {{"leg", "client"}, {"outcome", outcome}});
    out.sample(static_cast<double>(counters.upstream_outcomes[i]), {{"leg", "upstream"}, {"outcome", outcome}});
  }
  out.family("ringlinger_proxy_forwarded_bytes_total", "counter", "Bytes forwarded, by direction");
  out.sample(static_cast<double>(counters.bytes_client_to_upstream), {{"direction", "client_to_upstream"}});
  out.sample(static_cast<double>(counters.bytes_upstream_to_client), {{"direction", "upstream_to_client"}});
  out.family("ringlinger_proxy_resets_passed_total", "counter",
             "Cut streams passed on as a reset after every byte, by direction");
  out.sample(static_cast<double>(counters.resets_passed_upstream_to_client), {{"direction", "upstream_to_client"}});
  out.sample(static_cast<double>(counters.resets_passed_client_to_upstream), {{"direction", "client_to_upstream"}});
}

int run_proxy(const ProxyFlags& flags) {
  const ProxySettings settings = proxy_settings(flags);
  mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);  // before any thread allocates (see above)
  mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes);
  ShardedCommand command;
  command.make_server = [&](const Config& config) {
    return std::make_unique<Proxy>(config, settings.upstream, settings.max_buffer, settings.connect_timeout);
  };
  command.announce = [&](const Listening& first) {
    const std::uint32_t threads = settings.common.threads;
    fmt::print("ringlinger proxy: listening on {}, upstream {}{} (backend {})\n", first.bound_text(),
               settings.upstream.to_string(), threads > 1 ? fmt::format(", {} threads", threads) : "",
               first.backend_description);
  };
  command.print = [](const RunReport& report) { print_counters(sum_of(report), report.stats, report.cpu); };
  command.add_json = [&](const RunReport& report, nlohmann::json& json) {
    json["upstream"] = settings.upstream.to_string();
    json["config"]["max_buffer"] = settings.max_buffer;
    json["config"]["connect_timeout_ms"] = settings.connect_timeout.count();
    json["proxy"] = proxy_json(sum_of(report));
  };
  command.add_metrics = [](const RunReport& report, PrometheusText& out) { add_proxy_metrics(sum_of(report), out); };
  command.add_thread_json = [](const ThreadReport& thread, nlohmann::json& entry) {
    const auto& counters = std::any_cast<const ProxyCounters&>(thread.counters);
    entry["connections"] = counters.connections;
    entry["pairs_open"] = counters.pairs_open;
  };
  return run_sharded(settings.common, command);
}

}  // namespace

Command add_proxy_command(CLI::App& program) {
  auto flags = std::make_shared<ProxyFlags>();
  CommandFlags app = add_subcommand(
      program, "proxy",
      "L4 TCP proxy: forwards every connection accepted on --listen to --upstream, both ways, "
      "with flow control; passes a FIN on as a half-close and closes both legs gracefully "
      "(flush, SHUT_WR, drain to EOF, close), so no forwarded byte is lost. A side that resets "
      "(or fails, or times out) before its FIN has cut its stream: the other side gets every byte "
      "forwarded, then a reset, never a clean EOF; a client whose upstream cannot be connected "
      "is reset. A reset after a side's FIN (its stream was complete) still closes the other "
      "side gracefully. Prints its counters to stdout on SIGUSR1 and at exit; stops on "
      "SIGINT/SIGTERM.");
  add_runner_flags(app, flags->common);
  // Not ->required(): --config may give it (runner_settings reads the file after parsing).
  app.add_option("--upstream", flags->upstream,
                  "Address to connect each connection to (required): 127.0.0.1:80, [::1]:80, or "
                  "a hostname resolved once at start (its first address)")
      .type_name("ADDRESS");
  app.add_option("--max-buffer", flags->max_buffer,
                  "Bytes queued towards one side before reading from the other side pauses "
                  "(resumes once they are sent)")
      .type_name("SIZE").capture_default_str().group("Forwarding");
  app.add_option("--receive-buffer", flags->receive_buffer,
                  "Size of each shared receive buffer: the most bytes one read forwards")
      .type_name("SIZE").capture_default_str().group("Forwarding");
  app.add_option("--receive-buffers", flags->receive_buffers,
                  "Number of shared receive buffers (a power of two); bounds memory, not connections")
      .check(whole_number(1, kMaxReceiveBufferCount)).type_name("N").capture_default_str().group("Forwarding");
  app.add_option("--connect-timeout", flags->connect_timeout,
                  "Longest time an upstream connect may take; then the upstream leg is reset and "
                  "so is the client; 0 = the kernel's SYN retries (about 2 minutes)")
      .type_name("DURATION").capture_default_str().group("Forwarding");
  app.footer(
      "A pair takes two connection slots: --max-connections 16384 carries 8192 clients.\n"
      "Example: ringlinger proxy --listen 127.0.0.1:8080 --upstream 127.0.0.1:80 --json stats.json");
  return {&app.app(), [flags] { return with_config_context(flags->common, [&] { return run_proxy(*flags); }); }};
}

}  // namespace ringlinger::tools
