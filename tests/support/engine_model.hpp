// The engine model: a driver, an independent model and a checker for detail::Engine behind
// FakeIo, shared by the seeded gtest fuzzer (engine_fuzz_test.cpp, decisions from a PRNG) and
// the libFuzzer target (fuzz/engine_fuzzer.cpp, decisions from the fuzzer's input bytes). Every
// decision goes through Choices (choices.hpp); nothing else differs between the two.
//
// After EVERY event the checker asserts (see engine_fuzz_test.cpp for the full list):
//   - at most one request of each op per connection, the engine's in_flight bits are exactly
//     what the fake holds for that slot, and nothing is submitted after a connection's close,
//     which itself waits until nothing else is in flight on the fd (never closed twice, never
//     closed with a request in flight);
//   - SHUT_WR only after every queued byte was sent, sends in order with the right bytes, and
//     bytes accounted: sent + still queued = what send()/send_view() accepted (= queued_bytes());
//   - the half-close (shutdown_write()): shutdown(2) while open only after it, once every queued
//     byte was sent, exactly one SHUT_WR per connection (close() after it issues none), no send
//     accepted after it; pause_receive(): no delivering receive started while paused, and
//     resume_receive() starts one again; on_send_drained only inside a send completion that
//     left an open connection with nothing queued, and always then;
//   - the state, the outcome, the timers and the CloseReport are the ones the model predicts;
//   - on_closed exactly once per adopted connection, inside its close completion;
//   - a completion of an earlier connection in a reused slot (an old generation) changes nothing.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "choices.hpp"
#include "core/engine.hpp"
#include "fake_io.hpp"
#include "core/state_machine.hpp"

namespace ringlinger::detail::engine_model {

using namespace std::chrono_literals;
using fake::Choices;
using fake::FakeIo;
using fake::Request;
using TimePoint = Engine::TimePoint;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// A fixed, non-zero origin: the engine treats TimePoint{} as "never".
inline const TimePoint kStart = TimePoint{} + 1000h;

inline std::uint64_t key_of(std::uint32_t slot, std::uint32_t generation) {
  return (std::uint64_t{slot} << 32) | generation;
}
inline std::uint64_t key_of(ConnectionId id) { return key_of(id.slot, id.generation); }

inline std::string id_text(ConnectionId id) {
  return "{" + std::to_string(id.slot) + "," + std::to_string(id.generation) + "}";
}

inline std::uint8_t bit(Op op) { return FakeIo::bit(op); }

// The error classes of the public contract (outcome.hpp, kernel-facts.md).
inline bool is_reset_error(int error) {
  return error == ECONNRESET || error == EPIPE || error == ENOTCONN || error == ECONNABORTED;
}
inline bool is_retry_error(int error) {
  return error == EAGAIN || error == EINTR || error == ENOMEM || error == ENOBUFS;
}

// Errors for wide runs (Options::wide), by class: the engine must treat each member of a class
// alike, so the input picks among them.
inline constexpr int kTransientErrors[] = {EAGAIN, EINTR, ENOMEM, ENOBUFS};
inline constexpr int kResetErrors[] = {ECONNRESET, EPIPE, ECONNABORTED, ENOTCONN};
inline constexpr int kOtherErrors[] = {ETIMEDOUT, EHOSTUNREACH, EINVAL};  // neither of the above
inline constexpr int kShutdownErrors[] = {ENOTCONN, EINVAL};               // shutdown(2)'s own
inline constexpr int kCloseErrors[] = {EIO, EINTR};                        // close(2)'s own

inline bool is_timeout(Outcome outcome) {
  return outcome == Outcome::send_timeout || outcome == Outcome::drain_idle_timeout ||
         outcome == Outcome::drain_timeout;
}

// What the test varies besides the seed.
struct Variant {
  ShutdownMode shutdown_mode;
  OnTimeout on_timeout;
  bool with_on_receive;
};

inline std::string variant_name(const Variant& variant) {
  return std::string(to_string(variant.shutdown_mode)) + "_" +
         std::string(to_string(variant.on_timeout)) +
         (variant.with_on_receive ? "_recv" : "_norecv");
}

inline const Variant kVariants[] = {
    {ShutdownMode::syscall, OnTimeout::close, true},
    {ShutdownMode::syscall, OnTimeout::close, false},
    {ShutdownMode::syscall, OnTimeout::reset, true},
    {ShutdownMode::syscall, OnTimeout::reset, false},
    {ShutdownMode::ring, OnTimeout::close, true},
    {ShutdownMode::ring, OnTimeout::close, false},
    {ShutdownMode::ring, OnTimeout::reset, true},
    {ShutdownMode::ring, OnTimeout::reset, false},
};

// Which kind of event was running when a connection was terminated.
enum class Cause : std::uint8_t { none, api, abort, abort_all, expire, completion, retry };

enum class ErrorSource : std::uint8_t { none, recv, send };

// What the test knows about one adopted connection, independently of the engine.
struct Model {
  ConnectionId id;
  int fd = -1;
  TimePoint adopted_at{};

  std::string queued;                // every byte send()/send_view() accepted, in order
  std::uint64_t sent = 0;            // sum of positive send results the fake delivered
  std::uint64_t received = 0;        // recv bytes delivered while the connection was open
  std::uint64_t discarded = 0;       // recv bytes delivered after close()/abort()/termination
  std::uint64_t callback_bytes = 0;  // bytes on_receive was given
  std::vector<std::unique_ptr<std::vector<std::byte>>> borrowed;  // send_view() storage

  bool close_requested = false;  // close() while open (by the test or a callback)
  TimePoint close_requested_at{};
  bool reset_expected_by_abort = false;  // abort() hit it while cancelling
  bool reset_requested = false;          // set_reset_on_close() was called on its fd
  bool orphan_limited = false;           // limit_orphan_time() was called on its fd

  bool terminated = false;  // the engine submitted its cancel or close
  TimePoint terminated_at{};
  std::optional<Outcome> expected_outcome;
  bool cancel_submitted = false;
  bool close_submitted = false;

  bool shutdown_issued = false;  // shutdown_now() called or IORING_OP_SHUTDOWN submitted
  TimePoint shutdown_issued_at{};
  bool shutdown_ok = false;  // ... and it succeeded
  TimePoint shutdown_ok_at{};
  bool eof_seen = false;  // a recv returned 0
  bool waiting = false;   // a delivering recv got ENOBUFS and awaits a retry
  std::uint64_t acked = 0;  // the peer's acknowledged-byte counter the fake gave last (grows)
  std::optional<std::uint64_t> acked_asked;  // what the engine keeps of it (known answers only)
  TimePoint progress_at{};  // the last progress the engine knows (the progress timers' start)

  bool write_shutdown_requested = false;  // shutdown_write() accepted (while open)
  bool write_shutdown_issued = false;     // ... and its shutdown(2) was called, while open
  bool write_shut_down = false;           // ... and succeeded: close() goes straight to draining
  bool paused = false;                    // pause_receive() since the last resume_receive()

  bool send_armed = false;  // the send timeout runs (bytes queued, not all sent, or awaiting acks)
  TimePoint send_deadline{};
  bool idle_armed = false;  // the drain idle timeout runs
  TimePoint idle_deadline{};

  bool reset_after_send = false;  // abort_after_send() accepted
  bool ack_wait_armed = false;    // ... everything sent, the acknowledgement awaited (listed)
  bool all_acknowledged = false;  // ... the kernel said so (or could not say): reset now

  int first_error = 0;
  ErrorSource first_error_source = ErrorSource::none;
  bool closed = false;  // on_closed ran

  std::uint64_t unsent() const { return queued.size() - sent; }
  bool open() const { return !close_requested && !terminated; }
  bool draining() const { return shutdown_ok && !terminated; }
};

// Things the fuzzer saw happen, summed over runs: a fuzzer that never reaches an outcome or a
// reentrant path proves nothing about it.
struct Coverage {
  std::array<std::uint64_t, kOutcomeCount> outcomes{};
  std::uint64_t steps = 0;
  std::uint64_t completions = 0;
  std::uint64_t stale_injected = 0;
  std::uint64_t stale_on_reused_slot = 0;
  std::uint64_t fd_reused_before_close_completion = 0;
  std::uint64_t reentrant_close = 0;
  std::uint64_t reentrant_send = 0;
  std::uint64_t reentrant_abort = 0;
  std::uint64_t reentrant_adopt = 0;
  std::uint64_t reentrant_all = 0;  // close_all / abort_all from a callback
  std::uint64_t buffer_waits = 0;
  std::uint64_t partial_sends = 0;
  std::uint64_t adopt_refused_full = 0;
  std::uint64_t exact_deadline_hits = 0;
  std::uint64_t graceful_finishes = 0;
  std::uint64_t half_closes = 0;               // shutdown_write()'s shutdown(2) succeeded
  std::uint64_t half_close_failures = 0;       // ... failed: the connection ends
  std::uint64_t close_after_half_close = 0;    // close() went straight to draining
  std::uint64_t sends_after_half_close = 0;    // refused with broken_pipe
  std::uint64_t send_drained_calls = 0;        // on_send_drained
  std::uint64_t deliveries_while_paused = 0;   // a recv in flight from before the pause
  std::uint64_t resumes_restarting = 0;        // resume_receive() started a delivering recv
  std::uint64_t reentrant_flow = 0;            // shutdown_write/pause/resume from a callback
  std::uint64_t progress_extensions = 0;       // a progress timer re-armed from an acknowledgement
  std::uint64_t resets_after_send = 0;         // abort_after_send() accepted
  std::uint64_t ack_waits = 0;                 // ... and it had to wait for the acknowledgement

  void add(const Coverage& other) {
    for (std::size_t i = 0; i < kOutcomeCount; ++i) outcomes[i] += other.outcomes[i];
    steps += other.steps;
    completions += other.completions;
    stale_injected += other.stale_injected;
    stale_on_reused_slot += other.stale_on_reused_slot;
    fd_reused_before_close_completion += other.fd_reused_before_close_completion;
    reentrant_close += other.reentrant_close;
    reentrant_send += other.reentrant_send;
    reentrant_abort += other.reentrant_abort;
    reentrant_adopt += other.reentrant_adopt;
    reentrant_all += other.reentrant_all;
    buffer_waits += other.buffer_waits;
    partial_sends += other.partial_sends;
    adopt_refused_full += other.adopt_refused_full;
    exact_deadline_hits += other.exact_deadline_hits;
    graceful_finishes += other.graceful_finishes;
    half_closes += other.half_closes;
    half_close_failures += other.half_close_failures;
    close_after_half_close += other.close_after_half_close;
    sends_after_half_close += other.sends_after_half_close;
    send_drained_calls += other.send_drained_calls;
    deliveries_while_paused += other.deliveries_while_paused;
    resumes_restarting += other.resumes_restarting;
    reentrant_flow += other.reentrant_flow;
    progress_extensions += other.progress_extensions;
    resets_after_send += other.resets_after_send;
    ack_waits += other.ack_waits;
  }
};

// Every Stats field, for "nothing else changed" comparisons.
inline bool same_stats(const Stats& a, const Stats& b) {
  return a.connections_in_state == b.connections_in_state && a.outcomes == b.outcomes &&
         a.connections_adopted == b.connections_adopted &&
         a.connections_accepted == b.connections_accepted &&
         a.accepts_rejected == b.accepts_rejected && a.accept_errors == b.accept_errors &&
         a.bytes_sent == b.bytes_sent && a.bytes_received == b.bytes_received &&
         a.bytes_discarded == b.bytes_discarded && a.submissions == b.submissions &&
         a.completions == b.completions && a.enter_calls == b.enter_calls &&
         a.sq_full_submits == b.sq_full_submits && a.cq_overflows == b.cq_overflows &&
         a.shutdown_syscalls == b.shutdown_syscalls &&
         a.receive_buffer_waits == b.receive_buffer_waits &&
         a.stale_completions == b.stale_completions && a.write_shutdowns == b.write_shutdowns;
}

// One slot as seen from outside, for "nothing else changed" comparisons.
struct SlotSnapshot {
  int fd;
  std::uint32_t generation;
  State state;
  std::uint8_t in_flight;
  bool peer_eof;
  bool reset_on_close;
  bool waiting_for_buffer;
  bool write_shutdown_requested, write_shut_down, receive_paused;
  std::optional<Outcome> outcome;
  int first_error;
  std::uint64_t bytes_sent, bytes_received, bytes_discarded, queued_bytes;
  friend bool operator==(const SlotSnapshot&, const SlotSnapshot&) = default;
};

inline std::vector<SlotSnapshot> snapshot(const Engine& engine) {
  std::vector<SlotSnapshot> slots;
  for (const Connection& c : engine.slots()) {
    slots.push_back({c.fd, c.generation, c.state, c.in_flight, c.peer_eof, c.reset_on_close,
                     c.waiting_for_buffer, c.write_shutdown_requested, c.write_shut_down,
                     c.receive_paused, c.outcome, c.first_error, c.bytes_sent, c.bytes_received,
                     c.bytes_discarded, c.send_queue.queued_bytes()});
  }
  return slots;
}

// ---------------------------------------------------------------------------------------------

// How a run reports, and how hostile its world is. The defaults are the gtest fuzzer's.
struct Options {
  // Names the run in each violation ("seed 17").
  std::string label;
  // Told each violation as it is found, with the events that led to it (gtest: ADD_FAILURE;
  // libFuzzer: print and abort, so that the input is kept).
  std::function<void(const std::string&)> report;
  // Beyond the gtest fuzzer's world (the libFuzzer target): every class of result for every
  // request with even odds (sends of 0 bytes, each transient error, each reset error, failing
  // shutdowns and closes), a peer still acknowledging our data when the send or the drain idle
  // timer fires (SIOCOUTQ), orphan timeouts set or not, and tables of a single slot too.
  bool wide = false;
};

// The driver, the model and the checker in one: it makes every event (from `choices`), predicts
// what the engine must do, and checks it after every event.
class Fuzzer final : public FakeIo::Observer {
 public:
  Fuzzer(Choices& choices, const Variant& variant, Options options)
      : choices_(choices), variant_(variant), options_(std::move(options)) {
    config_.shutdown_mode = variant.shutdown_mode;
    config_.on_timeout = variant.on_timeout;
    config_.max_connections = options_.wide ? 1 + static_cast<std::uint32_t>(roll(8))   // 1..8
                                            : 3 + static_cast<std::uint32_t>(roll(6));  // 3..8
    config_.send_timeout_ms = 20 + static_cast<std::uint32_t>(roll(60));
    config_.drain_idle_timeout_ms = 10 + static_cast<std::uint32_t>(roll(50));
    config_.drain_timeout_ms = 30 + static_cast<std::uint32_t>(roll(120));
    switch (roll(3)) {
      case 0:
        config_.drain_max_bytes = 0;
        break;  // unlimited
      case 1:
        config_.drain_max_bytes = 1 + roll(3000);
        break;
      default:
        config_.drain_max_bytes = 16u << 20;
        break;
    }
    config_.receive_buffer_bytes = 64 + static_cast<std::uint32_t>(roll(448));
    error_weight_ = 1 + static_cast<int>(roll(4));  // how hostile the network is
    graceful_finish_ = roll(2) == 0;
    if (options_.wide) {
      config_.orphan_timeout_ms = chance(50) ? 0 : 1 + static_cast<std::uint32_t>(roll(20'000));
    }
    with_send_drained_ = roll(4) != 0;

    if (variant.with_on_receive) {
      callbacks_.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
        on_receive(id, data);
      };
    }
    callbacks_.on_closed = [this](ConnectionId id, const CloseReport& report) {
      on_closed(id, report);
    };
    if (with_send_drained_) {
      callbacks_.on_send_drained = [this](ConnectionId id) { on_send_drained(id); };
    }
    io_.observer = this;
    io_.shutdown_result = [this](int) {
      return chance(85) ? 0 : options_.wide ? -kShutdownErrors[roll(2)] : -ENOTCONN;
    };
    io_.peer_acks_result = [this](int fd, TimePoint now) { return peer_acks(fd, now); };
    rx_.resize(config_.receive_buffer_bytes);
    expected_generation_.assign(config_.max_connections, 0);
    engine_ = std::make_unique<Engine>(config_, io_, callbacks_, stats_);
  }

  Fuzzer(const Fuzzer&) = delete;
  Fuzzer& operator=(const Fuzzer&) = delete;
  ~Fuzzer() { io_.observer = nullptr; }

  // Runs `steps` random events (fewer if the choices are exhausted first), then drives every
  // connection to its close. Returns the violations (empty when every invariant held), each with
  // the recent events that led to it.
  std::vector<std::string> run(int steps) {
    check_invariants();
    for (step_ = 0; step_ < steps && violations_.empty() && !choices_.exhausted(); ++step_) {
      random_event();
      check_invariants();
      ++coverage_.steps;
    }
    if (violations_.empty()) finish();
    return violations_;
  }

  const Coverage& coverage() const { return coverage_; }
  std::string describe_run() const {
    return options_.label + " variant " + variant_name(variant_) +
           " max_connections " + std::to_string(config_.max_connections) + " drain_max_bytes " +
           std::to_string(config_.drain_max_bytes) + " timeouts send/idle/total " +
           std::to_string(config_.send_timeout_ms) + "/" +
           std::to_string(config_.drain_idle_timeout_ms) + "/" +
           std::to_string(config_.drain_timeout_ms) + " ms";
  }

 private:
  // --- randomness ----------------------------------------------------------------------------

  std::uint64_t roll(std::uint64_t n) { return choices_.below(n); }
  bool chance(int percent) { return static_cast<int>(roll(100)) < percent; }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : roll(n); }

  std::string random_bytes(std::size_t size) {
    std::string bytes(size, '\0');
    choices_.fill(bytes);
    return bytes;
  }

  std::size_t random_send_size() {
    const auto r = roll(100);
    if (r < 10) return 0;              // ignored by the queue
    if (r < 40) return 1 + below(15);  // fits std::string's small buffer (SSO)
    if (r < 90) return 16 + below(300);
    return 1000 + below(4000);
  }

  // --- reporting -----------------------------------------------------------------------------

  void log(std::string event) {
    if (recent_.size() == 40) recent_.pop_front();
    recent_.push_back("step " + std::to_string(step_) + ": " + std::move(event));
  }

  // Records and reports at once (an engine RL_ASSERT that follows would end the process).
  void violation(const std::string& what) {
    if (violations_.size() >= 5) return;
    std::string text = describe_run() + ", step " + std::to_string(step_) + ": " + what;
    if (violations_.empty()) {
      text += "\n  recent events (oldest first):";
      for (const std::string& event : recent_) text += "\n    " + event;
    }
    if (options_.report) options_.report(text);
    violations_.push_back(std::move(text));
  }

  // --- model lookup --------------------------------------------------------------------------

  Model* find_model(ConnectionId id) {
    auto it = models_.find(key_of(id));
    return it == models_.end() ? nullptr : &it->second;
  }

  Model* live_model_by_fd(int fd) {
    auto it = fd_owner_.find(fd);
    if (it == fd_owner_.end()) return nullptr;
    Model* model = &models_.at(it->second);
    return model->closed ? nullptr : model;
  }

  std::vector<Model*> live_models() {
    std::vector<Model*> live;
    for (std::uint64_t key : live_keys_) live.push_back(&models_.at(key));
    return live;
  }

  // The model for a submission's tag; created here for the connection adopt() is creating.
  Model* model_for_submission(const Request& request) {
    const std::uint64_t key = key_of(request.tag.slot, request.tag.generation);
    if (auto it = models_.find(key); it != models_.end()) return &it->second;
    if (request.fd != adopting_fd_) return nullptr;
    return &create_model(ConnectionId{request.tag.slot, request.tag.generation}, request.fd);
  }

  Model& create_model(ConnectionId id, int fd) {
    if (id.slot >= config_.max_connections)
      violation("adopt gave slot " + id_text(id) + " out of range");
    else if (id.generation != expected_generation_[id.slot]) {
      violation("adopt gave " + id_text(id) + ", expected generation " +
                std::to_string(expected_generation_[id.slot]) + " (slot generation not advanced)");
    }
    for (std::uint64_t key : live_keys_) {
      if (models_.at(key).id.slot == id.slot) violation("adopt reused live slot " + id_text(id));
    }
    Model& model = models_[key_of(id)];
    model.id = id;
    model.fd = fd;
    model.adopted_at = now_;
    // The engine keeps the counter's low 32 bits: start some near the wrap.
    if (chance(30)) model.acked = (std::uint64_t{1} << 32) - roll(200'000);
    fd_owner_[fd] = key_of(id);
    live_keys_.push_back(key_of(id));
    return model;
  }

  // --- the observer: every submission and synchronous call ----------------------------------

  void on_submit(const Request& request) override {
    Model* m = model_for_submission(request);
    const std::string what = fake::describe(request);
    if (m == nullptr) return violation("submission for a connection never adopted: " + what);
    if (m->closed) return violation("submission for a connection already reported closed: " + what);
    if (m->close_submitted) violation("submission after the connection's close: " + what);
    if (request.fd != m->fd)
      violation("submission on fd " + std::to_string(request.fd) + " for a connection on fd " +
                std::to_string(m->fd));
    switch (request.tag.op) {
      case Op::recv:
        if (m->terminated) violation("recv started while terminating: " + what);
        if (m->eof_seen) violation("recv started after the peer's EOF: " + what);
        if (request.mode == RecvMode::deliver) {
          if (!variant_.with_on_receive) violation("delivering recv without on_receive: " + what);
          if (!m->open()) violation("delivering recv after close(): " + what);
          if (m->waiting) violation("delivering recv while waiting for a buffer: " + what);
          if (m->paused) violation("delivering recv started while paused: " + what);
        } else {
          if (m->open()) violation("discarding recv before close(): " + what);
          if (request.max_bytes == 0 || request.max_bytes > kDiscardChunkBytes) {
            violation("discarding recv size out of range: " + what);
          }
          if (config_.drain_max_bytes != 0 &&
              request.max_bytes >
                  config_.drain_max_bytes - std::min(config_.drain_max_bytes, m->discarded) + 1) {
            violation("discarding recv asks more than the byte cap allows + 1: " + what);
          }
        }
        break;
      case Op::send: {
        if (m->terminated) violation("send started while terminating: " + what);
        if (request.bytes.size() > m->unsent() || request.bytes.empty()) {
          violation("send of " + std::to_string(request.bytes.size()) + " bytes with " +
                    std::to_string(m->unsent()) + " unsent");
        } else if (std::memcmp(request.bytes.data(), m->queued.data() + m->sent,
                               request.bytes.size()) != 0) {
          violation("send does not carry the next queued bytes (offset " + std::to_string(m->sent) +
                    "): " + what);
        }
        break;
      }
      case Op::shutdown:
        if (config_.shutdown_mode != ShutdownMode::ring)
          violation("IORING_OP_SHUTDOWN in syscall mode");
        shutdown_issued(*m, "IORING_OP_SHUTDOWN");
        break;
      case Op::cancel:
        if (m->terminated) violation("second termination (cancel) of " + id_text(m->id));
        if ((io_.outstanding_ops(request.tag.slot) & ~bit(Op::cancel)) == 0) {
          violation("cancel submitted with nothing else in flight (close directly): " + what);
        }
        m->cancel_submitted = true;
        terminated(*m);
        break;
      case Op::close:
        if (!m->terminated) terminated(*m);
        m->close_submitted = true;
        break;
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
      case Op::wake:
        violation("the engine submitted a backend-only op: " + what);
        break;
    }
  }

  void on_shutdown_now(int fd, int result) override {
    Model* m = live_model_by_fd(fd);
    if (m == nullptr)
      return violation("shutdown_now on fd " + std::to_string(fd) + " of no live connection");
    log("  shutdown_now(fd " + std::to_string(fd) + ") -> " + std::to_string(result));
    if (m->open()) {  // shutdown_write()'s half-close: the direct call in either mode
      write_shutdown_issued(*m);
      ++model_write_shutdowns_;
      if (result == 0) {
        m->write_shut_down = true;
        ++coverage_.half_closes;
      } else {
        record_error(*m, -result, ErrorSource::send);  // decides the outcome, as for a send
        ++coverage_.half_close_failures;
      }
      return;
    }
    if (config_.shutdown_mode != ShutdownMode::syscall) violation("shutdown(2) in ring mode");
    shutdown_issued(*m, "shutdown(2)");
    if (result == 0) {
      shutdown_succeeded(*m);
    } else {
      record_error(*m, -result, ErrorSource::send);
    }
  }

  // TCP_INFO (engine.cpp, acknowledged_since() and await_acknowledgement()), asked at two
  // moments only:
  //   - a progress timer (send or drain idle) expired: if the peer's acknowledged-byte counter
  //     moved since the engine last asked (never asked: an acknowledgement came after the
  //     period began), the period restarts at that acknowledgement (at most now) and the timer
  //     is armed again, to the first lane deadline at or after it (timer_queue.hpp); otherwise
  //     (or if the kernel does not say) the connection is idle and ends;
  //   - abort_after_send() awaits the acknowledgement of everything: everything sent, or its
  //     poll timer expired. All acknowledged (or unknown): reset now; else ask again later, the
  //     send timer (progress) bounding the wait.
  // The answers are random, the counter only grows; the model follows the rule to know the
  // deadlines and the outcome.
  PeerAcks peer_acks(int fd, TimePoint now) {
    Model* m = live_model_by_fd(fd);
    if (m == nullptr) {
      violation("TCP_INFO on fd " + std::to_string(fd) + " of no live connection");
      return {};
    }
    if (now != now_) violation("TCP_INFO asked with a time other than now");
    const bool send_expired = m->send_armed && m->send_deadline <= now_;
    const bool idle_expired = m->idle_armed && m->idle_deadline <= now_;
    const bool progress_check = cause_ == Cause::expire && (send_expired || idle_expired);
    // abort_after_send(): once flushed (not yet waiting), or in a poll of those waiting.
    const auto polled = std::find(polling_.begin(), polling_.end(), key_of(m->id));
    const bool in_poll = cause_ == Cause::expire && polled != polling_.end();
    if (in_poll) polling_.erase(polled);
    const bool flushed_for_reset = m->reset_after_send && !m->terminated && m->unsent() == 0 &&
                                   !send_in_flight(*m) && (in_poll || !m->ack_wait_armed);
    if (!progress_check && !flushed_for_reset) {
      violation("TCP_INFO for " + id_text(m->id) +
                " with no progress timer expired and no abort_after_send() flushed");
    }
    PeerAcks acks;
    acks.known = !chance(10);
    if (chance(50)) m->acked += 1 + roll(100'000);
    acks.bytes_acked = m->acked;
    const nanoseconds period = progress_check && send_expired ? send_timeout() : idle_timeout();
    acks.last_ack_by = now_ - nanoseconds(below(static_cast<std::uint64_t>(2 * period.count())));
    if (chance(20)) acks.last_ack_by = m->progress_at;  // exactly the period's start
    acks.all_acknowledged = chance(40);
    log("  TCP_INFO(fd " + std::to_string(fd) + ") -> " + (acks.known ? "" : "unknown ") +
        "acked " + std::to_string(acks.bytes_acked) + ", last ack " +
        std::to_string((now_ - acks.last_ack_by).count() / 1000) + " us ago" +
        (acks.all_acknowledged ? ", all acknowledged" : ""));
    if (progress_check) {
      expect_progress_check(*m, acks, send_expired);
    } else {
      expect_ack_wait(*m, acks);
    }
    return acks;
  }

  void expect_progress_check(Model& m, const PeerAcks& acks, bool send_timer) {
    if (!acks.known) return;  // idle: the engine ends the connection
    const bool moved = m.acked_asked ? acks.bytes_acked > *m.acked_asked
                                     : acks.last_ack_by > m.progress_at;
    m.acked_asked = acks.bytes_acked;
    if (!moved) return;
    m.progress_at = std::max(m.progress_at, std::min(acks.last_ack_by, now_));
    const nanoseconds period = send_timer ? send_timeout() : idle_timeout();
    const TimePoint deadline = m.progress_at + period;
    if (deadline <= now_) return;
    (send_timer ? m.send_deadline : m.idle_deadline) = lane_deadline(deadline, period);
    ++(send_timer ? model_send_extensions_ : model_idle_extensions_);
    ++coverage_.progress_extensions;
  }

  // Engine::await_acknowledgement(): one list of the connections waiting, asked again together
  // kAckWaitInterval after the first one joined it.
  void expect_ack_wait(Model& m, const PeerAcks& acks) {
    if (!acks.known || acks.all_acknowledged) {
      m.all_acknowledged = true;  // the engine resets now
      m.ack_wait_armed = false;
      return;
    }
    if (awaiting_ack_.empty()) ack_poll_at_ = now_ + kAckWaitInterval;
    awaiting_ack_.push_back(key_of(m.id));
    m.ack_wait_armed = true;
    ++coverage_.ack_waits;
    if (!m.send_armed) arm_send_timer(m);
  }

  // expire_timers() asks every waiting connection again once the poll is due: the list starts
  // afresh (those still waiting join it again as they are asked).
  void start_ack_poll_if_due() {
    if (awaiting_ack_.empty() || now_ < ack_poll_at_) return;
    polling_ = std::move(awaiting_ack_);
    awaiting_ack_.clear();
    for (std::uint64_t key : polling_) models_.at(key).ack_wait_armed = false;
  }

  void forget_ack_wait(Model& m) {
    const std::uint64_t key = key_of(m.id);
    awaiting_ack_.erase(std::remove(awaiting_ack_.begin(), awaiting_ack_.end(), key),
                        awaiting_ack_.end());
    polling_.erase(std::remove(polling_.begin(), polling_.end(), key), polling_.end());
    m.ack_wait_armed = false;
  }

  // TimerQueue::arm_at(): the first of the lane deadlines now + period * k / kLanes (k = 1 ..
  // kLanes) at or after `deadline`.
  TimePoint lane_deadline(TimePoint deadline, nanoseconds period) const {
    const nanoseconds tick = period / TimerQueue::kLanes;
    const auto ticks = (deadline - now_ + tick - 1ns) / tick;
    return ticks >= TimerQueue::kLanes ? now_ + period : now_ + tick * ticks;
  }

  // The progress timers start a new period now (engine.cpp, note_progress()).
  void arm_send_timer(Model& m) {
    m.send_armed = true;
    m.send_deadline = now_ + send_timeout();
    m.progress_at = now_;
  }
  void arm_idle_timer(Model& m) {
    m.idle_armed = true;
    m.idle_deadline = now_ + idle_timeout();
    m.progress_at = now_;
  }

  void on_set_reset_on_close(int fd) override {
    Model* m = live_model_by_fd(fd);
    if (m == nullptr)
      return violation("set_reset_on_close on fd " + std::to_string(fd) + " of no live connection");
    if (m->close_submitted) violation("set_reset_on_close after the close was submitted");
    m->reset_requested = true;
  }

  // TCP_USER_TIMEOUT, once, before the close of a connection a timeout ends with FIN; checked
  // against the outcome in check_report().
  void on_limit_orphan_time(int fd, std::uint32_t timeout_ms) override {
    Model* m = live_model_by_fd(fd);
    if (m == nullptr) {
      return violation("limit_orphan_time on fd " + std::to_string(fd) + " of no live connection");
    }
    if (m->close_submitted) violation("limit_orphan_time after the close was submitted");
    if (m->orphan_limited) violation("limit_orphan_time twice for " + id_text(m->id));
    if (timeout_ms != config_.orphan_timeout_ms) {
      violation("limit_orphan_time(" + std::to_string(timeout_ms) + " ms), configured " +
                std::to_string(config_.orphan_timeout_ms));
    }
    m->orphan_limited = true;
  }

  // SHUT_WR must follow every queued byte (the whole point of the library).
  void shutdown_issued(Model& m, const char* how) {
    if (m.shutdown_issued) violation(std::string(how) + " issued twice for " + id_text(m.id));
    if (m.write_shutdown_issued) {
      violation(std::string(how) + " after shutdown_write()'s shutdown(2) for " + id_text(m.id) +
                ": a second SHUT_WR");
    }
    if (!m.close_requested) violation(std::string(how) + " before close() for " + id_text(m.id));
    if (m.reset_after_send) violation(std::string(how) + " after abort_after_send() for " + id_text(m.id));
    if (m.terminated) violation(std::string(how) + " while terminating " + id_text(m.id));
    if (m.unsent() != 0) {
      violation(std::string(how) + " with " + std::to_string(m.unsent()) +
                " queued bytes not yet sent: the FIN would cut them off");
    }
    m.shutdown_issued = true;
    m.shutdown_issued_at = now_;
  }

  // shutdown_write()'s SHUT_WR, while open: only after shutdown_write(), only once, and (as on
  // close) only after every queued byte was sent, with no send in flight.
  void write_shutdown_issued(Model& m) {
    if (!m.write_shutdown_requested) {
      violation("shutdown(2) before close() and without shutdown_write() for " + id_text(m.id));
    }
    if (m.write_shutdown_issued) {
      violation("shutdown_write()'s shutdown(2) issued twice for " + id_text(m.id));
    }
    if (m.unsent() != 0) {
      violation("shutdown_write()'s shutdown(2) with " + std::to_string(m.unsent()) +
                " queued bytes not yet sent: the FIN would cut them off");
    }
    if ((io_.outstanding_ops(m.id.slot) & bit(Op::send)) != 0) {
      violation("shutdown_write()'s shutdown(2) with a send in flight for " + id_text(m.id));
    }
    m.write_shutdown_issued = true;
  }

  void shutdown_succeeded(Model& m) {
    m.shutdown_ok = true;
    m.shutdown_ok_at = now_;
    if (!m.eof_seen) arm_idle_timer(m);
  }

  void record_error(Model& m, int error, ErrorSource source) {
    if (m.first_error == 0) {
      m.first_error = error;
      m.first_error_source = source;
    }
  }

  // The engine decided this connection's outcome (its first cancel or close was submitted).
  void terminated(Model& m) {
    m.terminated = true;
    m.terminated_at = now_;
    m.waiting = false;
    Outcome expected = Outcome::clean;
    switch (cause_) {
      case Cause::abort:
        if (key_of(m.id) != cause_target_)
          violation("abort() of another id terminated " + id_text(m.id));
        expected = Outcome::aborted;
        break;
      case Cause::abort_all:
        expected = Outcome::stop_deadline;
        break;
      case Cause::expire:
        if (m.send_armed && m.send_deadline <= now_) {
          expected = Outcome::send_timeout;
        } else if (m.idle_armed && m.idle_deadline <= now_) {
          expected = Outcome::drain_idle_timeout;
        } else if (m.shutdown_issued && m.shutdown_issued_at + drain_timeout() <= now_) {
          expected = Outcome::drain_timeout;
        } else if (m.all_acknowledged) {
          expected = Outcome::aborted;  // abort_after_send(): acknowledged on a later look
        } else {
          violation("expire_timers() terminated " + id_text(m.id) + " with no expired deadline");
        }
        break;
      case Cause::none:
      case Cause::api:
      case Cause::completion:
      case Cause::retry:
        if (m.first_error != 0) {
          expected = is_reset_error(m.first_error)               ? Outcome::peer_reset
                     : m.first_error_source == ErrorSource::recv ? Outcome::receive_error
                                                                 : Outcome::send_error;
        } else if (m.shutdown_ok && m.eof_seen) {
          expected = Outcome::clean;
        } else if (config_.drain_max_bytes != 0 && m.discarded > config_.drain_max_bytes) {
          expected = Outcome::drain_byte_cap;
        } else if (m.all_acknowledged) {
          expected = Outcome::aborted;  // abort_after_send(): acknowledged at the flush
        } else {
          violation("connection " + id_text(m.id) +
                    " terminated with no reason (no error, no EOF " +
                    "after a successful shutdown, byte cap not passed)");
        }
        break;
    }
    m.expected_outcome = expected;
    m.send_armed = m.idle_armed = false;
    forget_ack_wait(m);
  }

  nanoseconds send_timeout() const { return milliseconds(config_.send_timeout_ms); }
  nanoseconds idle_timeout() const { return milliseconds(config_.drain_idle_timeout_ms); }
  nanoseconds drain_timeout() const { return milliseconds(config_.drain_timeout_ms); }

  // The earliest deadline the model expects for a connection still deciding its outcome.
  std::optional<TimePoint> model_deadline(const Model& m) const {
    if (m.terminated) return std::nullopt;
    std::optional<TimePoint> earliest;
    auto consider = [&earliest](TimePoint deadline) {
      if (!earliest || deadline < *earliest) earliest = deadline;
    };
    if (m.send_armed) consider(m.send_deadline);
    if (m.idle_armed) consider(m.idle_deadline);
    if (m.ack_wait_armed) consider(ack_poll_at_);
    if (m.shutdown_issued) consider(m.shutdown_issued_at + drain_timeout());
    return earliest;
  }

  // --- callbacks -----------------------------------------------------------------------------

  void on_receive(ConnectionId id, std::span<const std::byte> data) {
    ++callback_calls_;
    Model* m = find_model(id);
    if (m == nullptr || m->closed)
      return violation("on_receive for unknown or closed id " + id_text(id));
    if (!m->open()) violation("on_receive after close()/abort()/termination for " + id_text(id));
    if (!pending_receive_ || pending_receive_->key != key_of(id) || pending_receive_->fired) {
      return violation("on_receive for " + id_text(id) +
                       " outside of its recv completion, or twice");
    }
    pending_receive_->fired = true;
    if (data.size() != pending_receive_->size) {
      violation("on_receive got " + std::to_string(data.size()) + " bytes, the recv delivered " +
                std::to_string(pending_receive_->size));
    }
    if (!data.empty() && data.data() != rx_.data())
      violation("on_receive data is not the recv's buffer");
    m->callback_bytes += data.size();
    total_callback_bytes_ += data.size();
    if (m->paused) ++coverage_.deliveries_while_paused;  // in flight from before the pause

    // Reentrancy: the callback acts on the engine.
    const auto r = roll(100);
    if (r < 10) {
      ++coverage_.reentrant_close;
      do_close(id, "on_receive: close(self)");
    } else if (r < 17) {
      ++coverage_.reentrant_send;
      do_send(id, random_send_size(), chance(50), "on_receive: send(self)");
    } else if (r < 20) {
      ++coverage_.reentrant_abort;
      do_abort(id, "on_receive: abort(self)");
    } else if (r < 23) {
      do_close(pick_id(), "on_receive: close(any)");
    } else if (r < 25 && allow_adopt_) {
      ++coverage_.reentrant_adopt;
      do_adopt("on_receive: adopt");
    } else if (r < 26) {
      do_send(id, random_send_size(), false, "on_receive: send(self)");
      do_close(id, "on_receive: then close(self)");
    } else if (r < 27) {
      ++coverage_.reentrant_all;
      do_close_all();
    } else if (r < 28) {
      ++coverage_.reentrant_all;
      do_abort_all();
    } else if (r < 34) {
      ++coverage_.reentrant_flow;
      do_pause(id, "on_receive: pause_receive(self)");
    } else if (r < 37) {
      ++coverage_.reentrant_flow;
      do_shutdown_write(id, "on_receive: shutdown_write(self)");
    } else if (r < 39) {
      ++coverage_.reentrant_flow;
      do_resume(pick_paused_id(), "on_receive: resume_receive(any)");
    } else if (r < 40) {
      ++coverage_.reentrant_flow;
      do_send(id, random_send_size(), chance(50), "on_receive: send(self)");
      do_shutdown_write(id, "on_receive: then shutdown_write(self)");
    }
  }

  // Called from a send completion that left an open connection with nothing queued and nothing
  // in flight (after the half-close, if one was due): checked against the completion being
  // handled; deliver() checks the converse (it was called whenever it was due).
  void on_send_drained(ConnectionId id) {
    ++callback_calls_;
    ++coverage_.send_drained_calls;
    Model* m = find_model(id);
    if (m == nullptr || m->closed)
      return violation("on_send_drained for unknown or closed id " + id_text(id));
    if (!pending_drained_ || pending_drained_->key != key_of(id) || pending_drained_->fired) {
      return violation("on_send_drained for " + id_text(id) +
                       " outside of a send completion with bytes sent, or twice");
    }
    pending_drained_->fired = true;
    if (!m->open())
      violation("on_send_drained after close()/abort()/termination for " + id_text(id));
    if (m->unsent() != 0 || engine_->queued_bytes(id) != 0) {
      violation("on_send_drained for " + id_text(id) + " with " + std::to_string(m->unsent()) +
                " bytes unsent, queued_bytes() " + std::to_string(engine_->queued_bytes(id)));
    }
    if ((io_.outstanding_ops(id.slot) & bit(Op::send)) != 0)
      violation("on_send_drained for " + id_text(id) + " with a send in flight");
    if (m->write_shutdown_requested && !m->write_shutdown_issued)
      violation("on_send_drained for " + id_text(id) + " before the half-close that was due");

    // Reentrancy: what a proxy does here (refill, resume the other side, finish).
    const auto r = roll(100);
    if (r < 15) {
      ++coverage_.reentrant_send;
      do_send(id, random_send_size(), chance(50), "on_send_drained: send(self)");
    } else if (r < 25) {
      ++coverage_.reentrant_flow;
      do_shutdown_write(id, "on_send_drained: shutdown_write(self)");
    } else if (r < 35) {
      ++coverage_.reentrant_close;
      do_close(id, "on_send_drained: close(self)");
    } else if (r < 50) {
      ++coverage_.reentrant_flow;
      do_resume(chance(50) ? id : pick_paused_id(), "on_send_drained: resume_receive");
    } else if (r < 55) {
      ++coverage_.reentrant_flow;
      do_pause(pick_id(), "on_send_drained: pause_receive(any)");
    } else if (r < 58) {
      ++coverage_.reentrant_abort;
      do_abort(id, "on_send_drained: abort(self)");
    } else if (r < 60 && allow_adopt_) {
      ++coverage_.reentrant_adopt;
      do_adopt("on_send_drained: adopt");
    }
  }

  void on_closed(ConnectionId id, const CloseReport& report) {
    ++callback_calls_;
    Model* m = find_model(id);
    if (m == nullptr) return violation("on_closed for an id never adopted: " + id_text(id));
    if (m->closed) return violation("on_closed twice for " + id_text(id));
    if (!pending_close_ || *pending_close_ != key_of(id) || close_fired_) {
      violation("on_closed for " + id_text(id) + " outside of its close completion");
    }
    close_fired_ = true;
    m->closed = true;
    if (engine_->find(id) != nullptr)
      violation("id " + id_text(id) + " still valid inside on_closed");
    ++model_outcomes_[static_cast<std::size_t>(report.outcome)];
    ++coverage_.outcomes[static_cast<std::size_t>(report.outcome)];
    check_report(*m, report);
    live_keys_.erase(std::find(live_keys_.begin(), live_keys_.end(), key_of(id)));
    closed_keys_.push_back(key_of(id));
    expected_generation_[id.slot] = (id.generation + 1) & kGenerationMask;
    if (auto it = fd_owner_.find(m->fd); it != fd_owner_.end() && it->second == key_of(id)) {
      fd_owner_.erase(it);
    }
    log("  on_closed " + id_text(id) + " " + std::string(to_string(report.outcome)));
    m->borrowed.clear();  // the contract: borrowed bytes need to live until on_closed only

    // Reentrancy: the stale id is refused, and a new connection may take the slot at once.
    if (chance(20)) {
      if (engine_->send(id, "late", now_) != std::make_error_code(std::errc::bad_file_descriptor)) {
        violation("send() on the id being closed did not fail with bad_file_descriptor");
      }
    }
    if (chance(10)) {
      do_queued_bytes(id, "on_closed:");
      if (chance(50))
        do_shutdown_write(id, "on_closed: (self)");
      else
        do_pause(id, "on_closed: (self)");
    }
    if (allow_adopt_ && chance(2)) {
      ++coverage_.reentrant_all;
      if (chance(50))
        do_close_all();
      else
        do_abort_all();
    }
    if (allow_adopt_ && chance(30)) {
      ++coverage_.reentrant_adopt;
      if (auto fresh = do_adopt("on_closed: adopt")) {
        if (chance(50)) do_send(*fresh, random_send_size(), chance(50), "on_closed: send(new)");
        if (chance(10)) do_shutdown_write(*fresh, "on_closed: shutdown_write(new)");
        if (chance(10)) do_pause(*fresh, "on_closed: pause_receive(new)");
        if (chance(20)) do_close(*fresh, "on_closed: close(new)");
      }
    }
  }

  void check_report(const Model& m, const CloseReport& report) {
    const std::string who = "report of " + id_text(m.id) + ": ";
    if (!m.expected_outcome) {
      violation(who + "closed but never terminated");
    } else if (report.outcome != *m.expected_outcome) {
      violation(who + "outcome " + std::string(to_string(report.outcome)) + ", expected " +
                std::string(to_string(*m.expected_outcome)));
    }
    if (report.outcome == Outcome::clean && !(m.shutdown_ok && m.eof_seen && m.first_error == 0)) {
      violation(who + "clean without (successful SHUT_WR and EOF and no error)");
    }
    // The close's own error is the first one seen when nothing failed before it.
    const int first_error = m.first_error != 0 ? m.first_error : close_error_;
    if (report.first_error != first_error) {
      violation(who + "first_error " + std::to_string(report.first_error) + ", expected " +
                std::to_string(first_error));
    }
    const bool reset_expected =
        report.outcome == Outcome::aborted || report.outcome == Outcome::stop_deadline ||
        (is_timeout(report.outcome) && config_.on_timeout == OnTimeout::reset) ||
        m.reset_expected_by_abort || m.reset_after_send;
    if (report.reset_sent != m.reset_requested) {
      violation(who + "reset_sent " + std::to_string(report.reset_sent) +
                " but set_reset_on_close called: " + std::to_string(m.reset_requested));
    }
    if (report.reset_sent != reset_expected) {
      violation(who + "reset_sent " + std::to_string(report.reset_sent) + " for outcome " +
                std::string(to_string(report.outcome)) + " with on_timeout " +
                std::string(to_string(config_.on_timeout)));
    }
    // config.hpp, orphan_timeout_ms: only when a timeout closes with FIN, and only if set.
    const bool orphan_limit_expected = is_timeout(report.outcome) &&
                                       config_.on_timeout == OnTimeout::close &&
                                       config_.orphan_timeout_ms > 0 && !m.reset_after_send;
    if (m.orphan_limited != orphan_limit_expected) {
      violation(who + "limit_orphan_time called: " + std::to_string(m.orphan_limited) +
                " for outcome " + std::string(to_string(report.outcome)) + " with on_timeout " +
                std::string(to_string(config_.on_timeout)));
    }
    if (report.bytes_sent != m.sent) {
      violation(who + "bytes_sent " + std::to_string(report.bytes_sent) + ", the fake accepted " +
                std::to_string(m.sent));
    }
    if (report.bytes_sent > m.queued.size()) violation(who + "bytes_sent exceeds what was queued");
    if (report.bytes_received != m.received || m.received != m.callback_bytes) {
      violation(who + "bytes_received " + std::to_string(report.bytes_received) +
                ", delivered while open " + std::to_string(m.received) + ", given to on_receive " +
                std::to_string(m.callback_bytes));
    }
    if (report.bytes_discarded != m.discarded) {
      violation(who + "bytes_discarded " + std::to_string(report.bytes_discarded) +
                ", delivered after close/termination " + std::to_string(m.discarded));
    }
    // Times (outcome.hpp): none negative; teardown is "outcome decided -> fd closed"; with
    // close() requested, open_time + close_latency() covers adopt -> closed exactly and each
    // phase is as documented; without, close_latency() is 0 and there was no flush or drain.
    // Without close(), open_time is adopt -> outcome decided.
    const nanoseconds phases[] = {report.open_time, report.flush_time, report.drain_time,
                                  report.teardown_time};
    for (nanoseconds phase : phases) {
      if (phase < 0ns) violation(who + "a negative duration");
    }
    if (report.close_requested != m.close_requested) {
      violation(who + "close_requested " + std::to_string(report.close_requested) +
                ", close() while open: " + std::to_string(m.close_requested));
    }
    if (report.teardown_time != now_ - m.terminated_at) violation(who + "teardown_time");
    if (m.close_requested) {
      if (report.open_time + report.close_latency() != now_ - m.adopted_at) {
        violation(who + "open_time + close_latency() != adopt -> closed");
      }
      if (report.open_time != m.close_requested_at - m.adopted_at) violation(who + "open_time");
      const TimePoint flushed = m.shutdown_ok ? m.shutdown_ok_at : m.terminated_at;
      if (report.flush_time != flushed - m.close_requested_at) violation(who + "flush_time");
      const nanoseconds drain = m.shutdown_ok ? m.terminated_at - m.shutdown_ok_at : 0ns;
      if (report.drain_time != drain) violation(who + "drain_time");
    } else {
      if (report.open_time != m.terminated_at - m.adopted_at) violation(who + "open_time");
      if (report.close_latency() != 0ns) violation(who + "close_latency() not 0 without close()");
      if (report.flush_time != 0ns || report.drain_time != 0ns) {
        violation(who + "flush or drain time without close()");
      }
    }
  }

  // --- API calls, by the test or by a callback ------------------------------------------------

  ConnectionId pick_id() {
    const auto r = roll(100);
    if (r < 80 && !live_keys_.empty()) return models_.at(live_keys_[below(live_keys_.size())]).id;
    if (r < 95 && !closed_keys_.empty())
      return models_.at(closed_keys_[below(closed_keys_.size())]).id;
    switch (roll(3)) {
      case 0:
        return ConnectionId{};  // never valid
      case 1:
        return ConnectionId{config_.max_connections + static_cast<std::uint32_t>(below(3)), 0};
      default: {
        const auto slot = static_cast<std::uint32_t>(below(config_.max_connections));
        return ConnectionId{slot, (expected_generation_[slot] + 1) & kGenerationMask};  // future
      }
    }
  }

  // Mostly a paused live connection, when there is one: a resume that restarts delivery.
  ConnectionId pick_paused_id() {
    std::vector<ConnectionId> paused;
    for (Model* m : live_models()) {
      if (m->paused) paused.push_back(m->id);
    }
    if (paused.empty() || chance(30)) return pick_id();
    return paused[below(paused.size())];
  }

  // The error an API call on `id` must return: stale ids, then closing ones.
  std::error_code expected_for(const Model* m, bool needs_open) const {
    if (m == nullptr || m->closed) return std::make_error_code(std::errc::bad_file_descriptor);
    if (needs_open && !m->open()) return std::make_error_code(std::errc::broken_pipe);
    return {};
  }

  void check_result(std::error_code got, std::error_code want, const std::string& what) {
    if (got != want) {
      violation(what + " returned '" + got.message() + "', expected '" + want.message() + "'");
    }
  }

  // A scope that says which kind of event runs (callbacks nest inside completions).
  class CauseScope {
   public:
    CauseScope(Fuzzer& fuzzer, Cause cause, std::uint64_t target = 0)
        : fuzzer_(fuzzer), cause_(fuzzer.cause_), target_(fuzzer.cause_target_) {
      fuzzer.cause_ = cause;
      fuzzer.cause_target_ = target;
    }
    ~CauseScope() {
      fuzzer_.cause_ = cause_;
      fuzzer_.cause_target_ = target_;
    }
    CauseScope(const CauseScope&) = delete;
    CauseScope& operator=(const CauseScope&) = delete;

   private:
    Fuzzer& fuzzer_;
    Cause cause_;
    std::uint64_t target_;
  };

  std::optional<ConnectionId> do_adopt(const std::string& who) {
    CauseScope scope(*this, Cause::api);
    if (chance(3)) {
      log(who + "(-1)");
      if (engine_->adopt(-1, now_)) violation("adopt(-1) succeeded");
      return std::nullopt;
    }
    const int fd = io_.open_fd();
    const std::size_t live_before = live_keys_.size();
    for (const auto& request : io_.outstanding()) {
      if (request.tag.op == Op::close && request.fd_released && request.fd == fd) {
        ++coverage_.fd_reused_before_close_completion;
      }
    }
    log(who + "(fd " + std::to_string(fd) + ")");
    adopting_fd_ = fd;
    const std::optional<ConnectionId> id = engine_->adopt(fd, now_);
    adopting_fd_ = -1;
    if (!id) {
      if (live_before < config_.max_connections) violation("adopt refused with a free slot");
      if (live_keys_.size() != live_before) violation("a refused adopt submitted requests");
      ++coverage_.adopt_refused_full;
      io_.forget_fd(fd);
      return std::nullopt;
    }
    if (live_before >= config_.max_connections) violation("adopt succeeded on a full table");
    Model* m = find_model(*id);
    if (m == nullptr) m = &create_model(*id, fd);
    if (m->fd != fd || m->closed) violation("adopt returned " + id_text(*id) + " for another fd");
    log("  -> " + id_text(*id));
    return id;
  }

  void do_send(ConnectionId id, std::size_t size, bool view, const std::string& who) {
    Model* m = find_model(id);
    std::error_code want = expected_for(m, true);
    if (!want && m->write_shutdown_requested) {  // our FIN is due or sent: nothing may follow it
      want = std::make_error_code(std::errc::broken_pipe);
      ++coverage_.sends_after_half_close;
    }
    std::string bytes = random_bytes(size);
    log(who + (view ? " send_view " : " send ") + id_text(id) + " " + std::to_string(size) + " B");
    if (!want && !bytes.empty()) {
      if (m->unsent() == 0) arm_send_timer(*m);  // the queue was empty: the send timeout starts
      m->queued += bytes;
    }
    CauseScope scope(*this, Cause::api);
    std::error_code got;
    if (view) {
      auto storage = std::make_unique<std::vector<std::byte>>(size);
      if (size != 0) std::memcpy(storage->data(), bytes.data(), size);
      const std::span<const std::byte> span(storage->data(), storage->size());
      // Valid until on_closed, as the contract asks; refused sends keep theirs to the end.
      (want ? graveyard_ : m->borrowed).push_back(std::move(storage));
      got = engine_->send_view(id, span, now_);
    } else {
      got = engine_->send(id, std::move(bytes), now_);
    }
    check_result(got, want, who + " send");
  }

  void do_close(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, false);
    log(who + " close " + id_text(id));
    if (!want && m->open()) close_requested(*m);
    CauseScope scope(*this, Cause::api);
    check_result(engine_->close(id, now_), want, who + " close");
  }

  // close() of an open connection: flushing; after a half-close whose SHUT_WR succeeded, no
  // second one: straight to draining (the drain timeout starts, shutdown_at is now).
  void close_requested(Model& m) {
    m.close_requested = true;
    m.close_requested_at = now_;
    m.waiting = false;
    if (m.write_shut_down) {
      m.shutdown_issued = true;
      m.shutdown_issued_at = now_;
      shutdown_succeeded(m);
      ++coverage_.close_after_half_close;
    }
  }

  void do_shutdown_write(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, true);
    log(who + " shutdown_write " + id_text(id));
    if (!want) m->write_shutdown_requested = true;  // before the call: shutdown(2) may come in it
    CauseScope scope(*this, Cause::api);
    check_result(engine_->shutdown_write(id, now_), want, who + " shutdown_write");
  }

  void do_pause(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, false);
    log(who + " pause_receive " + id_text(id));
    if (!want) m->paused = true;
    CauseScope scope(*this, Cause::api);
    check_result(engine_->pause_receive(id), want, who + " pause_receive");
  }

  void do_resume(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, false);
    log(who + " resume_receive " + id_text(id));
    if (!want) m->paused = false;
    const std::uint64_t submissions_before = io_.submissions();
    {
      CauseScope scope(*this, Cause::api);
      check_result(engine_->resume_receive(id), want, who + " resume_receive");
    }
    // Only a delivering receive may start here (an open connection that was paused); whether
    // one had to is checked after the event (check_state).
    if (io_.submissions() != submissions_before) ++coverage_.resumes_restarting;
  }

  // queued_bytes(): what the model counts as unsent (the bytes of a send in flight included: not
  // yet handed to the kernel), 0 for a stale id.
  void do_queued_bytes(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::uint64_t want = m == nullptr || m->closed ? 0 : m->unsent();
    const std::uint64_t got = engine_->queued_bytes(id);
    if (got != want) {
      violation(who + " queued_bytes(" + id_text(id) + ") = " + std::to_string(got) +
                ", the model counts " + std::to_string(want) + " unsent");
    }
  }

  void do_abort(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, false);
    log(who + " abort " + id_text(id));
    if (!want) note_abort(*m);
    CauseScope scope(*this, Cause::abort, key_of(id));
    check_result(engine_->abort(id, now_), want, who + " abort");
  }

  // abort_after_send(): open, or flushing before any SHUT_WR, and our FIN not out.
  void do_abort_after_send(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    std::error_code want = expected_for(m, false);
    const bool flushing = m != nullptr && m->close_requested && !m->shutdown_issued;
    if (!want && !m->terminated && (m->write_shut_down || (!m->open() && !flushing))) {
      want = std::make_error_code(std::errc::broken_pipe);
    }
    log(who + " abort_after_send " + id_text(id));
    if (!want && !m->terminated) {
      if (!m->reset_after_send) ++coverage_.resets_after_send;
      m->reset_after_send = true;
      if (m->open()) close_requested(*m);
    }
    CauseScope scope(*this, Cause::api);
    check_result(engine_->abort_after_send(id, now_), want, who + " abort_after_send");
  }

  void note_abort(Model& m) {
    if (m.terminated && !m.close_submitted) m.reset_expected_by_abort = true;
  }

  void do_close_all() {
    log("close_all");
    for (Model* m : live_models()) {
      if (m->open()) close_requested(*m);
    }
    CauseScope scope(*this, Cause::api);
    engine_->close_all(now_);
  }

  void do_abort_all() {
    log("abort_all(stop_deadline)");
    for (Model* m : live_models()) note_abort(*m);
    CauseScope scope(*this, Cause::abort_all);
    engine_->abort_all(Outcome::stop_deadline, now_);
  }

  void do_advance(nanoseconds by) {
    now_ += by;
    log("advance " + std::to_string(by.count() / 1000) + " us, expire_timers");
    start_ack_poll_if_due();
    CauseScope scope(*this, Cause::expire);
    engine_->expire_timers(now_);
    if (!polling_.empty()) violation("a connection waiting for acknowledgements was not asked");
  }

  void do_retry() {
    log("retry_waiting_receives");
    for (Model* m : live_models()) m->waiting = false;
    CauseScope scope(*this, Cause::retry);
    engine_->retry_waiting_receives();
  }

  // --- completions ---------------------------------------------------------------------------

  // A plausible result for `request`, from a peer that may misbehave.
  std::int32_t choose_result(const Request& request, const Model& m, bool benign) {
    if (options_.wide && !benign) return choose_wide_result(request, m);
    const std::int32_t errors = benign ? 0 : error_weight_;
    if (m.cancel_submitted && request.tag.op != Op::cancel && request.tag.op != Op::close &&
        chance(60)) {
      return -ECANCELED;
    }
    switch (request.tag.op) {
      case Op::recv: {
        const std::uint32_t max =
            request.mode == RecvMode::deliver ? config_.receive_buffer_bytes : request.max_bytes;
        const auto r = static_cast<std::int32_t>(roll(100 + 10 * errors));
        if (r < 45) {
          // The edges matter: `max` crosses a byte cap, `max - 1` lands exactly on it.
          const auto pick = roll(10);
          std::uint64_t size = 1 + below(std::min<std::uint64_t>(max, 2000));
          if (pick < 2) size = max;
          if (pick == 2) size = max > 1 ? max - 1 : 1;
          if (pick == 3) size = 1;
          if (pick == 4) size = 1 + below(max);
          return static_cast<std::int32_t>(size);
        }
        if (r < 70) return 0;  // EOF
        if (r < 85) return request.mode == RecvMode::deliver ? -ENOBUFS : -EAGAIN;
        if (r < 95) return -EAGAIN;
        if (r < 100) return -EINTR;
        if (r < 100 + 6 * errors) return -ECONNRESET;
        return -ETIMEDOUT;  // a receive error that is not a reset
      }
      case Op::send: {
        const auto length = static_cast<std::int32_t>(request.bytes.size());
        const auto r = static_cast<std::int32_t>(roll(100 + 10 * errors));
        if (r < 60 || length == 0) return length;
        if (r < 85)
          return length == 1
                     ? 1
                     : 1 + static_cast<std::int32_t>(below(static_cast<std::uint64_t>(length - 1)));
        if (r < 100) return -EAGAIN;
        if (r < 100 + 4 * errors) return -EPIPE;
        if (r < 100 + 8 * errors) return -ECONNRESET;
        return -ETIMEDOUT;  // a send error that is not a reset
      }
      case Op::shutdown:
        return chance(benign ? 100 : 85) ? 0 : -ENOTCONN;
      case Op::cancel: {
        const auto r = roll(10);
        if (r < 2) return -ENOENT;
        if (r < 3) return -EALREADY;
        return std::popcount(static_cast<unsigned>(io_.outstanding_ops(request.tag.slot)));
      }
      case Op::close:
        return 0;
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
      case Op::wake:
        break;
    }
    return 0;
  }

  // Options::wide: every class of result for every op with even odds, so that the choices (the
  // libFuzzer input) pick the class rather than the odds of a plausible network.
  std::int32_t choose_wide_result(const Request& request, const Model& m) {
    auto error = [this](std::span<const int> errors) {
      return -errors[static_cast<std::size_t>(roll(errors.size()))];
    };
    if (m.cancel_submitted && request.tag.op != Op::cancel && request.tag.op != Op::close &&
        chance(50)) {
      return -ECANCELED;
    }
    switch (request.tag.op) {
      case Op::recv: {
        const std::uint32_t max =
            request.mode == RecvMode::deliver ? config_.receive_buffer_bytes : request.max_bytes;
        switch (roll(7)) {
          case 0:
            return static_cast<std::int32_t>(max);  // crosses a byte cap
          case 1:
            return static_cast<std::int32_t>(max > 1 ? max - 1 : 1);  // lands on it
          case 2:
            return static_cast<std::int32_t>(1 + below(max));  // a short read
          case 3:
            return 0;  // EOF
          case 4:
            return error(kTransientErrors);
          case 5:
            return error(kResetErrors);
          default:
            return error(kOtherErrors);
        }
      }
      case Op::send: {
        const auto length = static_cast<std::int32_t>(request.bytes.size());
        switch (roll(6)) {
          case 0:
            return length;
          case 1:  // a partial send
            return length == 1 ? 1 : 1 + static_cast<std::int32_t>(below(
                                             static_cast<std::uint64_t>(length - 1)));
          case 2:
            return 0;  // nothing sent
          case 3:
            return error(kTransientErrors);
          case 4:
            return error(kResetErrors);
          default:
            return error(kOtherErrors);
        }
      }
      case Op::shutdown:
        return chance(50) ? 0 : error(kShutdownErrors);
      case Op::cancel:
        switch (roll(3)) {
          case 0:
            return -ENOENT;
          case 1:
            return -EALREADY;
          default:
            return std::popcount(static_cast<unsigned>(io_.outstanding_ops(request.tag.slot)));
        }
      case Op::close:
        return chance(50) ? 0 : error(kCloseErrors);
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
      case Op::wake:
        break;
    }
    return 0;
  }

  // Completes the outstanding request at `index` with `result`.
  void deliver(std::size_t index, std::int32_t result) {
    const Request request = io_.take(index);
    ++coverage_.completions;
    const std::uint64_t key = key_of(request.tag.slot, request.tag.generation);
    Model* m = find_model(request.tag);
    if (m == nullptr)
      return violation("outstanding request of an unknown connection: " + fake::describe(request));
    log("complete " + fake::describe(request) + " = " + std::to_string(result));
    Completion completion{request.tag, result, {}};
    pending_receive_.reset();
    pending_drained_.reset();
    switch (request.tag.op) {
      case Op::recv:
        if (result > 0) {
          const auto bytes = static_cast<std::uint32_t>(result);
          if (request.mode == RecvMode::deliver) {
            if (bytes > rx_.size()) return violation("fuzzer bug: recv larger than the buffer");
            for (std::uint32_t i = 0; i < bytes; ++i)
              rx_[i] = static_cast<std::byte>(static_cast<unsigned char>(request.serial + i));
            completion.data = std::span<const std::byte>(rx_.data(), bytes);
          }
          if (m->open()) {
            if (request.mode != RecvMode::deliver)
              violation("a discarding recv was in flight while open");
            m->received += bytes;
            pending_receive_ = PendingReceive{key, bytes, false};
          } else {
            m->discarded += bytes;
            total_discarded_ += bytes;
          }
          // Input is progress for whichever progress timer runs (the byte cap, if passed, then
          // ends the connection, which disarms them).
          if (!m->terminated) {
            if (m->send_armed) arm_send_timer(*m);
            if (m->idle_armed) arm_idle_timer(*m);
          }
        } else if (result == 0) {
          m->eof_seen = true;
          if (m->open() && variant_.with_on_receive)
            pending_receive_ = PendingReceive{key, 0, false};
        } else if (-result == ENOBUFS && m->open()) {
          m->waiting = true;
          ++model_buffer_waits_;
          ++coverage_.buffer_waits;
        } else if (-result != ECANCELED && !is_retry_error(-result)) {
          record_error(*m, -result, ErrorSource::recv);
        }
        break;
      case Op::send:
        if (result > 0) {
          const auto bytes = static_cast<std::uint64_t>(result);
          if (bytes > request.bytes.size()) return violation("fuzzer bug: send result too large");
          if (bytes < request.bytes.size()) ++coverage_.partial_sends;
          // The engine's pointer must still hold the bytes it asked to send.
          if (std::memcmp(request.bytes.data(), m->queued.data() + m->sent, bytes) != 0) {
            violation("bytes of an in-flight send changed before its completion");
          }
          m->sent += bytes;
          total_sent_ += bytes;
          pending_drained_ = PendingDrained{key, false};
          if (!m->terminated) {
            if (m->unsent() == 0) {
              m->send_armed = false;
            } else {
              arm_send_timer(*m);  // progress: the send timeout starts again
            }
          }
        } else if (result < 0 && -result != ECANCELED && !is_retry_error(-result)) {
          record_error(*m, -result, ErrorSource::send);
        }
        break;
      case Op::shutdown:
        if (!m->terminated && result == 0) shutdown_succeeded(*m);
        if (!m->terminated && result < 0 && result != -ECANCELED) {
          record_error(*m, -result, ErrorSource::send);
        }
        break;
      case Op::cancel:
        break;
      case Op::close:
        pending_close_ = key;
        close_fired_ = false;
        close_error_ = result < 0 ? -result : 0;
        break;
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
      case Op::wake:
        break;
    }
    {
      CauseScope scope(*this, Cause::completion);
      engine_->on_completion(completion, now_);
    }
    if (pending_receive_ && !pending_receive_->fired) {
      violation("on_receive not called for a recv completion of an open connection: " +
                fake::describe(request));
    }
    pending_receive_.reset();
    // on_send_drained is due when a send completion with bytes sent leaves the connection open
    // with nothing queued (the callback is the completion's last step: nothing else ran after).
    if (pending_drained_ && !pending_drained_->fired && with_send_drained_ && m->open() &&
        m->unsent() == 0) {
      violation("on_send_drained not called when a send completion left " + id_text(m->id) +
                " open with nothing queued: " + fake::describe(request));
    }
    pending_drained_.reset();
    if (request.tag.op == Op::close) {
      if (!close_fired_)
        violation("on_closed not called for the close completion of " + id_text(m->id));
      pending_close_.reset();
    }
  }

  Model* find_model(OpTag tag) { return find_model(ConnectionId{tag.slot, tag.generation}); }

  bool send_in_flight(const Model& m) const {
    return (io_.outstanding_ops(m.id.slot) & bit(Op::send)) != 0;
  }

  void do_complete_random() {
    const auto& outstanding = io_.outstanding();
    if (outstanding.empty()) return;
    const std::size_t index = below(outstanding.size());
    const Request& request = outstanding[index];
    if (request.tag.op == Op::close && !request.fd_released && chance(40)) {
      log("the kernel runs " + fake::describe(request) + " (completion later)");
      io_.release_fd(index);
      return;
    }
    Model* m = find_model(request.tag);
    if (m == nullptr) return violation("outstanding request of an unknown connection");
    deliver(index, choose_result(request, *m, false));
  }

  // A completion carrying the generation of a connection that is gone: ignored, counted, and
  // nothing else may change.
  void inject_stale() {
    if (closed_keys_.empty()) return;
    // Prefer a slot that was reused by a live connection: the dangerous case.
    std::vector<std::uint64_t> reused;
    for (std::uint64_t key : closed_keys_) {
      const Model& old = models_.at(key);
      const Connection& now_there = engine_->slots()[old.id.slot];
      if (now_there.state != State::free && now_there.generation != old.id.generation)
        reused.push_back(key);
    }
    const bool on_reused = !reused.empty() && chance(80);
    const std::uint64_t key =
        on_reused ? reused[below(reused.size())] : closed_keys_[below(closed_keys_.size())];
    const Model& old = models_.at(key);
    const Op ops[] = {Op::recv, Op::send, Op::shutdown, Op::cancel, Op::close};
    const Op op = ops[below(5)];
    const auto result = static_cast<std::int32_t>(below(3)) - 1;  // -1, 0 or 1
    static const std::byte one_byte[1] = {std::byte{'!'}};
    Completion completion{OpTag{op, old.id.generation, old.id.slot}, result, {}};
    if (op == Op::recv && result > 0) completion.data = one_byte;
    log("inject stale " + std::string(fake::op_name(op)) + " for " + id_text(old.id) + " = " +
        std::to_string(result));

    const auto slots_before = snapshot(*engine_);
    Stats stats_before = stats_;
    const std::size_t outstanding_before = io_.outstanding().size();
    const std::uint64_t submissions_before = io_.submissions();
    const std::uint64_t callbacks_before = callback_calls_;
    {
      CauseScope scope(*this, Cause::completion);
      engine_->on_completion(completion, now_);
    }
    ++injected_stale_;
    ++coverage_.stale_injected;
    if (on_reused) ++coverage_.stale_on_reused_slot;
    ++stats_before.stale_completions;
    if (!same_stats(stats_, stats_before))
      violation("a stale completion changed the stats (or was not counted)");
    if (snapshot(*engine_) != slots_before) violation("a stale completion changed a slot");
    if (io_.outstanding().size() != outstanding_before || io_.submissions() != submissions_before) {
      violation("a stale completion submitted or completed a request");
    }
    if (callback_calls_ != callbacks_before) violation("a stale completion ran a callback");
  }

  // --- the driver ----------------------------------------------------------------------------

  void random_event() {
    const auto r = roll(115);
    if (r < 10) {
      do_adopt("adopt");
    } else if (r < 20) {
      do_send(pick_id(), random_send_size(), false, "test");
    } else if (r < 25) {
      do_send(pick_id(), random_send_size(), true, "test");
    } else if (r < 33) {
      do_close(pick_id(), "test");
    } else if (r < 36) {
      do_abort(pick_id(), "test");
    } else if (r < 37) {
      do_close_all();
    } else if (r < 38) {
      if (chance(50)) do_abort_all();
    } else if (r < 78) {
      do_complete_random();
    } else if (r < 88) {
      do_advance(random_advance());
    } else if (r < 90) {
      do_advance(0ns);
    } else if (r < 96) {
      do_retry();
    } else if (r < 100) {
      inject_stale();
    } else if (r < 104) {
      do_shutdown_write(pick_id(), "test");
    } else if (r < 107) {
      do_pause(pick_id(), "test");
    } else if (r < 110) {
      do_resume(pick_paused_id(), "test");
    } else if (r < 112) {
      do_queued_bytes(pick_id(), "test");
    } else {
      do_abort_after_send(pick_id(), "test");
    }
  }

  nanoseconds random_advance() {
    const auto r = roll(100);
    if (r < 30) return std::chrono::microseconds(below(5000));
    if (r < 60) return milliseconds(below(config_.drain_idle_timeout_ms));
    if (r < 90) {
      // Land exactly on a deadline the model expects (deadline == now must expire).
      std::vector<TimePoint> deadlines;
      for (Model* m : live_models()) {
        if (auto deadline = model_deadline(*m); deadline && *deadline > now_)
          deadlines.push_back(*deadline);
      }
      if (!deadlines.empty()) {
        ++coverage_.exact_deadline_hits;
        return deadlines[below(deadlines.size())] - now_;
      }
      return 1ms;
    }
    return milliseconds(2 * std::max({config_.send_timeout_ms, config_.drain_timeout_ms,
                                      config_.drain_idle_timeout_ms}));
  }

  // Ends the run: every connection must reach on_closed, and every slot must be free.
  void finish() {
    allow_adopt_ = false;
    step_ = -1;
    if (graceful_finish_) {
      // Graceful: close_all, a cooperative peer, and time. Must terminate without abort_all.
      do_close_all();
      check_invariants();
      for (int round = 0; round < 50 && !live_keys_.empty() && violations_.empty(); ++round) {
        for (int i = 0; i < 1000 && !io_.outstanding().empty() && violations_.empty(); ++i) {
          const std::size_t index = below(io_.outstanding().size());
          const Request& request = io_.outstanding()[index];
          Model* m = find_model(request.tag);
          if (m == nullptr) return violation("outstanding request of an unknown connection");
          deliver(index, choose_result(request, *m, true));
          check_invariants();
        }
        do_advance(milliseconds(std::max({config_.send_timeout_ms, config_.drain_timeout_ms,
                                          config_.drain_idle_timeout_ms}) +
                                1));
        check_invariants();
      }
      if (!live_keys_.empty() && violations_.empty()) {
        violation(std::to_string(live_keys_.size()) +
                  " connections still live after a graceful close_all, a cooperative peer and "
                  "every timeout passed: a connection is stuck");
      }
      if (violations_.empty()) ++coverage_.graceful_finishes;
    }
    // abort_all, then complete whatever is outstanding, in random order, with any result.
    do_abort_all();
    check_invariants();
    for (int i = 0; i < 100'000 && !io_.outstanding().empty() && violations_.empty(); ++i) {
      do_complete_random();
      check_invariants();
    }
    if (!violations_.empty()) return;
    if (!io_.outstanding().empty())
      violation("requests still outstanding after abort_all and 100000 completions");
    if (!live_keys_.empty())
      violation(std::to_string(live_keys_.size()) + " connections never reported closed");
    for (const auto& [key, model] : models_) {
      if (!model.closed) violation("connection " + id_text(model.id) + " never reported closed");
    }
    if (engine_->live_connections() != 0) violation("engine still has live connections");
    if (stats_.in_state(State::free) != config_.max_connections)
      violation("not every slot is free");
    if (stats_.closed_connections() != models_.size()) {
      violation("outcomes counted " + std::to_string(stats_.closed_connections()) + " for " +
                std::to_string(models_.size()) + " adopted connections");
    }
    if (io_.fds_in_use() != 0) violation("fds still open or closing at the end");
  }

  // --- invariants, after every event ---------------------------------------------------------

  // Names a slot in a violation: "slot 3 (open, gen 2): " + what. Built only when a violation
  // needs it: the checks run for every slot after every event, and they almost always pass.
  struct SlotWhere {
    std::uint32_t slot;
    const Connection& c;

    friend std::string operator+(const SlotWhere& where, const std::string& what) {
      return "slot " + std::to_string(where.slot) + " (" + std::string(to_string(where.c.state)) +
             ", gen " + std::to_string(where.c.generation) + "): " + what;
    }
  };

  void check_invariants() {
    for (const std::string& v : io_.violations()) violation("FakeIo: " + v);
    io_.clear_violations();

    const auto& slots = engine_->slots();
    if (slots.size() != config_.max_connections) violation("slots() size changed");
    std::array<std::uint64_t, kStateCount> counts{};
    std::size_t live = 0;
    std::optional<TimePoint> earliest;
    for (std::uint32_t slot = 0; slot < slots.size(); ++slot) {
      const Connection& c = slots[slot];
      ++counts[static_cast<std::size_t>(c.state)];
      const std::uint8_t outstanding = io_.outstanding_ops(slot);
      const SlotWhere where{slot, c};
      if (c.state == State::free) {
        if (outstanding != 0) violation(where + "free slot with requests outstanding");
        if (c.in_flight != 0 || c.fd != -1) violation(where + "free slot with in_flight or an fd");
        if (c.generation != expected_generation_[slot])
          violation(where + "generation not advanced on release");
        continue;
      }
      ++live;
      Model* m = find_model(ConnectionId{slot, c.generation});
      if (m == nullptr || m->closed) {
        violation(where + "engine has a live connection the test does not know");
        continue;
      }
      if (c.fd != m->fd)
        violation(where + "fd " + std::to_string(c.fd) + ", adopted " + std::to_string(m->fd));
      if (c.in_flight != outstanding) {
        violation(where + "in_flight bits " + std::to_string(c.in_flight) + " but outstanding " +
                  std::to_string(outstanding));
      }
      if (outstanding != 0 && io_.outstanding_generation(slot) != c.generation) {
        violation(where + "requests of another generation outstanding");
      }
      if (c.bytes_sent != m->sent || c.bytes_received != m->received ||
          c.bytes_discarded != m->discarded) {
        violation(where + "byte counters differ from what the fake delivered");
      }
      if (c.send_queue.queued_bytes() != m->unsent()) {
        violation(where + "send queue holds " + std::to_string(c.send_queue.queued_bytes()) +
                  " bytes, " + std::to_string(m->unsent()) + " unsent");
      }
      if (engine_->queued_bytes(m->id) != m->unsent()) {
        violation(where + "queued_bytes() " + std::to_string(engine_->queued_bytes(m->id)) + ", " +
                  std::to_string(m->unsent()) + " unsent");
      }
      if (c.write_shutdown_requested != m->write_shutdown_requested ||
          c.write_shut_down != m->write_shut_down) {
        violation(where + "half-close flags (requested " +
                  std::to_string(c.write_shutdown_requested) + ", done " +
                  std::to_string(c.write_shut_down) + ") differ from the model's");
      }
      if (c.receive_paused != m->paused) violation(where + "receive_paused differs from the model");
      if (m->open() && m->write_shutdown_requested && m->unsent() == 0 &&
          !m->write_shutdown_issued) {
        violation(where + "shutdown_write() and every byte sent, but no SHUT_WR issued");
      }
      if (c.peer_eof != m->eof_seen) violation(where + "peer_eof differs from the EOFs delivered");
      if (c.reset_on_close != m->reset_requested)
        violation(where + "reset_on_close differs from set_reset_on_close calls");
      if (c.waiting_for_buffer != m->waiting)
        violation(where + "waiting_for_buffer differs from the model");
      if (c.waiting_for_buffer && (c.state != State::open || (outstanding & bit(Op::recv)) != 0)) {
        violation(where + "waiting for a buffer while not open or with a recv in flight");
      }
      if (m->terminated != c.outcome.has_value())
        violation(where + "outcome decided != terminated");
      if (c.outcome && m->expected_outcome && *c.outcome != *m->expected_outcome) {
        violation(where + "outcome " + std::string(to_string(*c.outcome)) + ", expected " +
                  std::string(to_string(*m->expected_outcome)));
      }
      if (config_.drain_max_bytes != 0 && m->discarded > config_.drain_max_bytes &&
          !m->terminated) {
        violation(where + "byte cap passed but the connection goes on");
      }
      if (m->shutdown_ok && m->eof_seen && !m->terminated) {
        violation(where + "SHUT_WR done and EOF seen but not closed cleanly");
      }
      if (m->close_requested && !m->terminated && m->unsent() == 0 && !m->shutdown_issued &&
          !m->reset_after_send) {
        violation(where + "everything sent after close() but no SHUT_WR issued");
      }
      if (m->reset_after_send && !m->terminated && m->unsent() == 0 && !send_in_flight(*m) &&
          !m->ack_wait_armed) {
        violation(where + "abort_after_send(): everything sent but no acknowledgement awaited");
      }
      if (c.reset_after_send != m->reset_after_send)
        violation(where + "reset_after_send differs from the model");
      if (auto deadline = model_deadline(*m)) {
        if (*deadline <= now_)
          violation(where + "a deadline passed and expire_timers() did not act on it");
        if (!earliest || *deadline < *earliest) earliest = *deadline;
      }
      check_state(*m, c, outstanding, where);
    }
    if (live != live_keys_.size()) {
      violation(std::to_string(live) + " live slots, the test has " +
                std::to_string(live_keys_.size()) + " live connections");
    }
    if (engine_->live_connections() != live) violation("live_connections() differs from the slots");
    if (engine_->full() != (live == config_.max_connections)) violation("full() is wrong");
    if (engine_->next_deadline() != earliest)
      violation("next_deadline() differs from the model's timers");

    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < kStateCount; ++i) {
      sum += stats_.connections_in_state[i];
      if (stats_.connections_in_state[i] != counts[i]) {
        violation("gauge connections_in_state[" + std::string(to_string(static_cast<State>(i))) +
                  "] = " + std::to_string(stats_.connections_in_state[i]) + ", recount " +
                  std::to_string(counts[i]));
      }
    }
    if (sum != config_.max_connections) violation("state gauges do not sum to max_connections");
    if (stats_.outcomes != model_outcomes_) violation("outcome counters differ from the reports");
    if (stats_.bytes_sent != total_sent_)
      violation("Stats::bytes_sent differs from the fake's sends");
    if (stats_.bytes_received != total_callback_bytes_)
      violation("Stats::bytes_received differs from on_receive");
    if (stats_.bytes_discarded != total_discarded_)
      violation("Stats::bytes_discarded differs from the fake");
    if (stats_.write_shutdowns != model_write_shutdowns_) {
      violation("Stats::write_shutdowns = " + std::to_string(stats_.write_shutdowns) +
                ", half-close shutdown(2) calls " + std::to_string(model_write_shutdowns_));
    }
    if (stats_.shutdown_syscalls != io_.shutdown_calls() - model_write_shutdowns_)
      violation("Stats::shutdown_syscalls differs");
    if (stats_.drain_idle_extensions != model_idle_extensions_)
      violation("Stats::drain_idle_extensions differs");
    if (stats_.send_timeout_extensions != model_send_extensions_)
      violation("Stats::send_timeout_extensions differs");
    if (stats_.receive_buffer_waits != model_buffer_waits_)
      violation("Stats::receive_buffer_waits differs");
    if (stats_.stale_completions != injected_stale_) {
      violation("stale_completions = " + std::to_string(stats_.stale_completions) + ", injected " +
                std::to_string(injected_stale_) + ": a real completion was taken for stale");
    }
  }

  // What each state promises (state.hpp), and that the state is the one the model predicts.
  void check_state(const Model& m, const Connection& c, std::uint8_t outstanding,
                   const SlotWhere& where) {
    const bool recv = (outstanding & bit(Op::recv)) != 0;
    const bool send = (outstanding & bit(Op::send)) != 0;
    State expected = State::open;
    if (m.terminated) {
      expected = m.close_submitted ? State::closing : State::cancelling;
    } else if (m.close_requested) {
      expected = !m.shutdown_issued ? State::flushing
                 : m.shutdown_ok    ? State::draining
                                    : State::shutting_down;
    }
    if (c.state != expected) {
      violation(where + "state " + std::string(to_string(c.state)) + ", the model expects " +
                std::string(to_string(expected)));
    }
    if (!m.terminated && !send && m.unsent() != 0)
      violation(where + "bytes unsent but no send in flight");
    if (send && m.unsent() == 0) violation(where + "a send in flight with nothing unsent");
    switch (c.state) {
      case State::open:
        if (variant_.with_on_receive && !m.eof_seen && !m.waiting && !m.paused && !recv) {
          violation(where +
                    "open with on_receive, no EOF, not waiting, not paused, but no recv in flight");
        }
        if (!variant_.with_on_receive && recv)
          violation(where + "open without on_receive but a recv in flight");
        break;
      case State::flushing:
      case State::draining:
        if (!m.eof_seen && !recv) violation(where + "reading to EOF but no recv in flight");
        break;
      case State::shutting_down:
        if ((outstanding & bit(Op::shutdown)) == 0)
          violation(where + "shutting_down without a shutdown in flight");
        if (!m.eof_seen && !recv) violation(where + "reading to EOF but no recv in flight");
        break;
      case State::cancelling:
        if (c.in_flight == 0)
          violation(where + "cancelling with nothing in flight (close not submitted)");
        if (!m.cancel_submitted) violation(where + "cancelling without a cancel submitted");
        break;
      case State::closing:
        if (c.in_flight != bit(Op::close))
          violation(where + "closing with other requests in flight");
        break;
      case State::free:
        break;
    }
  }

  struct PendingReceive {
    std::uint64_t key;
    std::size_t size;
    bool fired;
  };

  // A send completion with bytes sent, being handled: on_send_drained may come.
  struct PendingDrained {
    std::uint64_t key;
    bool fired;
  };

  Choices& choices_;
  const Variant variant_;
  const Options options_;
  Config config_;
  int error_weight_ = 1;
  bool graceful_finish_ = true;
  bool allow_adopt_ = true;
  bool with_send_drained_ = true;  // Callbacks::on_send_drained set

  FakeIo io_;
  Callbacks callbacks_;
  Stats stats_;
  std::unique_ptr<Engine> engine_;
  TimePoint now_ = kStart;
  int step_ = 0;

  std::map<std::uint64_t, Model> models_;           // every connection ever adopted, by key
  std::vector<std::uint64_t> live_keys_;            // adopted, not yet reported closed
  std::vector<std::uint64_t> closed_keys_;          // reported closed
  std::map<int, std::uint64_t> fd_owner_;           // fd -> live connection
  std::vector<std::uint32_t> expected_generation_;  // per slot: the next connection's generation
  std::vector<std::unique_ptr<std::vector<std::byte>>> graveyard_;  // refused send_view storage
  std::vector<std::byte> rx_;                                       // the "shared receive buffer"
  int adopting_fd_ = -1;
  Cause cause_ = Cause::none;
  std::uint64_t cause_target_ = 0;
  std::optional<PendingReceive> pending_receive_;
  std::optional<PendingDrained> pending_drained_;
  std::optional<std::uint64_t> pending_close_;
  bool close_fired_ = false;
  int close_error_ = 0;  // of the close completion being handled

  std::array<std::uint64_t, kOutcomeCount> model_outcomes_{};
  std::uint64_t total_sent_ = 0;
  std::uint64_t total_callback_bytes_ = 0;
  std::uint64_t total_discarded_ = 0;
  std::uint64_t model_buffer_waits_ = 0;
  std::uint64_t model_idle_extensions_ = 0;
  std::uint64_t model_send_extensions_ = 0;
  std::uint64_t model_write_shutdowns_ = 0;  // shutdown(2) calls for shutdown_write()
  std::vector<std::uint64_t> awaiting_ack_;  // abort_after_send(): waiting, in the engine's order
  std::vector<std::uint64_t> polling_;       // ... being asked again in this expire_timers()
  TimePoint ack_poll_at_{};                  // ... when they are asked again
  std::uint64_t injected_stale_ = 0;
  std::uint64_t callback_calls_ = 0;

  std::deque<std::string> recent_;
  std::vector<std::string> violations_;
  Coverage coverage_;
};
}  // namespace ringlinger::detail::engine_model
