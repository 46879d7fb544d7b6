// What this proves: detail::Engine, driven through FakeIo by a seeded fuzzer (random API calls,
// completions of outstanding requests in any order with any plausible result, time jumps,
// expired timers, buffer retries, stale completions, and callbacks that call back into the
// engine), keeps every rule of the connection lifecycle after EVERY event:
//   - at most one request of each op per connection, and the engine's in_flight bits are exactly
//     what the fake holds for that slot; a free slot has nothing outstanding;
//   - nothing is submitted for a connection after its close, and the close is submitted only
//     when nothing else is outstanding on the fd (checked by FakeIo at each submission);
//   - SHUT_WR (either mode) is issued only after every queued byte was sent; sends go out in
//     order and the bytes in each send are the right ones, still valid at completion;
//   - the state of each slot is the one the model predicts, and each state does what it
//     promises (a receive in flight while reading, a send while bytes are queued, ...);
//   - timers: no live connection has a deadline in the past, next_deadline() is the model's, a
//     timeout outcome only when its deadline had passed;
//   - on_receive only for an open connection and never after close()/abort(); on_closed exactly
//     once per adopted connection, only inside its close completion, never for an unknown id;
//   - the CloseReport: outcome as the model predicts it (clean only after a successful SHUT_WR
//     and an EOF with no error), first error, reset, bytes sent/received/discarded, times;
//   - Stats: state gauges sum to max_connections and match the slots; byte and outcome counters
//     match the model; stale_completions counts exactly the stale completions we injected, which
//     change nothing else.
// Every run ends by driving every connection to its close, gracefully (close_all + time, which
// must terminate by itself) or by abort_all, and requires each adopted connection reported once.
// 200 seeds x 8 variants (shutdown mode x on_timeout x with/without on_receive), 300 steps each.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "engine.hpp"
#include "fake_io.hpp"
#include "state_machine.hpp"

namespace ringlinger::detail {
namespace {

using namespace std::chrono_literals;
using fake::FakeIo;
using fake::Request;
using TimePoint = Engine::TimePoint;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// A fixed, non-zero origin: the engine treats TimePoint{} as "never".
const TimePoint kStart = TimePoint{} + 1000h;

std::uint64_t key_of(std::uint32_t slot, std::uint32_t generation) {
  return (std::uint64_t{slot} << 32) | generation;
}
std::uint64_t key_of(ConnectionId id) { return key_of(id.slot, id.generation); }

std::string id_text(ConnectionId id) {
  return "{" + std::to_string(id.slot) + "," + std::to_string(id.generation) + "}";
}

std::uint8_t bit(Op op) { return FakeIo::bit(op); }

// The error classes of the public contract (outcome.hpp, kernel-facts.md).
bool is_reset_error(int error) {
  return error == ECONNRESET || error == EPIPE || error == ENOTCONN || error == ECONNABORTED;
}
bool is_retry_error(int error) {
  return error == EAGAIN || error == EINTR || error == ENOMEM || error == ENOBUFS;
}

bool is_timeout(Outcome outcome) {
  return outcome == Outcome::send_timeout || outcome == Outcome::drain_idle_timeout ||
         outcome == Outcome::drain_timeout;
}

// What the test varies besides the seed.
struct Variant {
  ShutdownMode shutdown_mode;
  OnTimeout on_timeout;
  bool with_on_receive;
};

std::string variant_name(const Variant& variant) {
  return std::string(to_string(variant.shutdown_mode)) + "_" +
         std::string(to_string(variant.on_timeout)) +
         (variant.with_on_receive ? "_recv" : "_norecv");
}

const Variant kVariants[] = {
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

  bool send_armed = false;  // the send timeout runs (bytes queued, not all sent)
  TimePoint send_armed_at{};
  bool idle_armed = false;  // the drain idle timeout runs
  TimePoint idle_armed_at{};

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
  }
};

// Every Stats field, for "nothing else changed" comparisons.
bool same_stats(const Stats& a, const Stats& b) {
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
         a.stale_completions == b.stale_completions;
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
  std::optional<Outcome> outcome;
  int first_error;
  std::uint64_t bytes_sent, bytes_received, bytes_discarded, queued_bytes;
  friend bool operator==(const SlotSnapshot&, const SlotSnapshot&) = default;
};

std::vector<SlotSnapshot> snapshot(const Engine& engine) {
  std::vector<SlotSnapshot> slots;
  for (const Connection& c : engine.slots()) {
    slots.push_back({c.fd, c.generation, c.state, c.in_flight, c.peer_eof, c.reset_on_close,
                     c.waiting_for_buffer, c.outcome, c.first_error, c.bytes_sent, c.bytes_received,
                     c.bytes_discarded, c.send_queue.queued_bytes()});
  }
  return slots;
}

// ---------------------------------------------------------------------------------------------

class Fuzzer final : public FakeIo::Observer {
 public:
  Fuzzer(std::uint64_t seed, const Variant& variant) : seed_(seed), variant_(variant), rng_(seed) {
    config_.shutdown_mode = variant.shutdown_mode;
    config_.on_timeout = variant.on_timeout;
    config_.max_connections = 3 + static_cast<std::uint32_t>(rng_() % 6);  // 3..8
    config_.send_timeout_ms = 20 + static_cast<std::uint32_t>(rng_() % 60);
    config_.drain_idle_timeout_ms = 10 + static_cast<std::uint32_t>(rng_() % 50);
    config_.drain_timeout_ms = 30 + static_cast<std::uint32_t>(rng_() % 120);
    switch (rng_() % 3) {
      case 0:
        config_.drain_max_bytes = 0;
        break;  // unlimited
      case 1:
        config_.drain_max_bytes = 1 + rng_() % 3000;
        break;
      default:
        config_.drain_max_bytes = 16u << 20;
        break;
    }
    config_.receive_buffer_bytes = 64 + static_cast<std::uint32_t>(rng_() % 448);
    error_weight_ = 1 + static_cast<int>(rng_() % 4);  // how hostile the network is
    graceful_finish_ = rng_() % 2 == 0;

    if (variant.with_on_receive) {
      callbacks_.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
        on_receive(id, data);
      };
    }
    callbacks_.on_closed = [this](ConnectionId id, const CloseReport& report) {
      on_closed(id, report);
    };
    io_.observer = this;
    io_.shutdown_result = [this](int) { return chance(85) ? 0 : -ENOTCONN; };
    rx_.resize(config_.receive_buffer_bytes);
    expected_generation_.assign(config_.max_connections, 0);
    engine_ = std::make_unique<Engine>(config_, io_, callbacks_, stats_);
  }

  Fuzzer(const Fuzzer&) = delete;
  Fuzzer& operator=(const Fuzzer&) = delete;
  ~Fuzzer() { io_.observer = nullptr; }

  // Runs `steps` random events, then drives every connection to its close. Returns the
  // violations (empty when every invariant held), each with the recent events that led to it.
  std::vector<std::string> run(int steps) {
    check_invariants();
    for (step_ = 0; step_ < steps && violations_.empty(); ++step_) {
      random_event();
      check_invariants();
      ++coverage_.steps;
    }
    if (violations_.empty()) finish();
    return violations_;
  }

  const Coverage& coverage() const { return coverage_; }
  std::string describe_run() const {
    return "seed " + std::to_string(seed_) + " variant " + variant_name(variant_) +
           " max_connections " + std::to_string(config_.max_connections) + " drain_max_bytes " +
           std::to_string(config_.drain_max_bytes) + " timeouts send/idle/total " +
           std::to_string(config_.send_timeout_ms) + "/" +
           std::to_string(config_.drain_idle_timeout_ms) + "/" +
           std::to_string(config_.drain_timeout_ms) + " ms";
  }

 private:
  // --- randomness ----------------------------------------------------------------------------

  bool chance(int percent) { return static_cast<int>(rng_() % 100) < percent; }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  std::string random_bytes(std::size_t size) {
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>('a' + rng_() % 26);
    return bytes;
  }

  std::size_t random_send_size() {
    const auto r = rng_() % 100;
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
    ADD_FAILURE() << text;
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
        violation("the engine submitted a backend-only op: " + what);
        break;
    }
  }

  void on_shutdown_now(int fd, int result) override {
    if (config_.shutdown_mode != ShutdownMode::syscall) violation("shutdown(2) in ring mode");
    Model* m = live_model_by_fd(fd);
    if (m == nullptr)
      return violation("shutdown_now on fd " + std::to_string(fd) + " of no live connection");
    shutdown_issued(*m, "shutdown(2)");
    log("  shutdown_now(fd " + std::to_string(fd) + ") -> " + std::to_string(result));
    if (result == 0) {
      shutdown_succeeded(*m);
    } else {
      record_error(*m, -result, ErrorSource::send);
    }
  }

  void on_set_reset_on_close(int fd) override {
    Model* m = live_model_by_fd(fd);
    if (m == nullptr)
      return violation("set_reset_on_close on fd " + std::to_string(fd) + " of no live connection");
    if (m->close_submitted) violation("set_reset_on_close after the close was submitted");
    m->reset_requested = true;
  }

  // SHUT_WR must follow every queued byte (the whole point of the library).
  void shutdown_issued(Model& m, const char* how) {
    if (m.shutdown_issued) violation(std::string(how) + " issued twice for " + id_text(m.id));
    if (!m.close_requested) violation(std::string(how) + " before close() for " + id_text(m.id));
    if (m.terminated) violation(std::string(how) + " while terminating " + id_text(m.id));
    if (m.unsent() != 0) {
      violation(std::string(how) + " with " + std::to_string(m.unsent()) +
                " queued bytes not yet sent: the FIN would cut them off");
    }
    m.shutdown_issued = true;
    m.shutdown_issued_at = now_;
  }

  void shutdown_succeeded(Model& m) {
    m.shutdown_ok = true;
    m.shutdown_ok_at = now_;
    if (!m.eof_seen) {
      m.idle_armed = true;
      m.idle_armed_at = now_;
    }
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
        if (m.send_armed && m.send_armed_at + send_timeout() <= now_) {
          expected = Outcome::send_timeout;
        } else if (m.idle_armed && m.idle_armed_at + idle_timeout() <= now_) {
          expected = Outcome::drain_idle_timeout;
        } else if (m.shutdown_issued && m.shutdown_issued_at + drain_timeout() <= now_) {
          expected = Outcome::drain_timeout;
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
        } else {
          violation("connection " + id_text(m.id) +
                    " terminated with no reason (no error, no EOF " +
                    "after a successful shutdown, byte cap not passed)");
        }
        break;
    }
    m.expected_outcome = expected;
    m.send_armed = m.idle_armed = false;
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
    if (m.send_armed) consider(m.send_armed_at + send_timeout());
    if (m.idle_armed) consider(m.idle_armed_at + idle_timeout());
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

    // Reentrancy: the callback acts on the engine.
    const auto r = rng_() % 100;
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
    if (report.first_error != m.first_error) {
      violation(who + "first_error " + std::to_string(report.first_error) + ", expected " +
                std::to_string(m.first_error));
    }
    const bool reset_expected =
        report.outcome == Outcome::aborted || report.outcome == Outcome::stop_deadline ||
        (is_timeout(report.outcome) && config_.on_timeout == OnTimeout::reset) ||
        m.reset_expected_by_abort;
    if (report.reset_sent != m.reset_requested) {
      violation(who + "reset_sent " + std::to_string(report.reset_sent) +
                " but set_reset_on_close called: " + std::to_string(m.reset_requested));
    }
    if (report.reset_sent != reset_expected) {
      violation(who + "reset_sent " + std::to_string(report.reset_sent) + " for outcome " +
                std::string(to_string(report.outcome)) + " with on_timeout " +
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
    const auto r = rng_() % 100;
    if (r < 80 && !live_keys_.empty()) return models_.at(live_keys_[below(live_keys_.size())]).id;
    if (r < 95 && !closed_keys_.empty())
      return models_.at(closed_keys_[below(closed_keys_.size())]).id;
    switch (rng_() % 3) {
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
    const std::error_code want = expected_for(m, true);
    std::string bytes = random_bytes(size);
    log(who + (view ? " send_view " : " send ") + id_text(id) + " " + std::to_string(size) + " B");
    if (!want && !bytes.empty()) {
      if (m->unsent() == 0) {  // the queue was empty: the send timeout starts now
        m->send_armed = true;
        m->send_armed_at = now_;
      }
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
    if (!want && m->open()) {
      m->close_requested = true;
      m->close_requested_at = now_;
      m->waiting = false;
    }
    CauseScope scope(*this, Cause::api);
    check_result(engine_->close(id, now_), want, who + " close");
  }

  void do_abort(ConnectionId id, const std::string& who) {
    Model* m = find_model(id);
    const std::error_code want = expected_for(m, false);
    log(who + " abort " + id_text(id));
    if (!want) note_abort(*m);
    CauseScope scope(*this, Cause::abort, key_of(id));
    check_result(engine_->abort(id, now_), want, who + " abort");
  }

  void note_abort(Model& m) {
    if (m.terminated && !m.close_submitted) m.reset_expected_by_abort = true;
  }

  void do_close_all() {
    log("close_all");
    for (Model* m : live_models()) {
      if (m->open()) {
        m->close_requested = true;
        m->close_requested_at = now_;
        m->waiting = false;
      }
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
    CauseScope scope(*this, Cause::expire);
    engine_->expire_timers(now_);
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
    const std::int32_t errors = benign ? 0 : error_weight_;
    if (m.cancel_submitted && request.tag.op != Op::cancel && request.tag.op != Op::close &&
        chance(60)) {
      return -ECANCELED;
    }
    switch (request.tag.op) {
      case Op::recv: {
        const std::uint32_t max =
            request.mode == RecvMode::deliver ? config_.receive_buffer_bytes : request.max_bytes;
        const auto r = static_cast<std::int32_t>(rng_() % (100 + 10 * errors));
        if (r < 45) {
          // The edges matter: `max` crosses a byte cap, `max - 1` lands exactly on it.
          const auto pick = rng_() % 10;
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
        const auto r = static_cast<std::int32_t>(rng_() % (100 + 10 * errors));
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
        const auto r = rng_() % 10;
        if (r < 2) return -ENOENT;
        if (r < 3) return -EALREADY;
        return std::popcount(static_cast<unsigned>(io_.outstanding_ops(request.tag.slot)));
      }
      case Op::close:
        return 0;
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
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
            const bool capped =
                config_.drain_max_bytes != 0 && m->discarded > config_.drain_max_bytes;
            if (m->draining() && !capped) m->idle_armed_at = now_;  // input: not idle
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
          if (!m->terminated) {
            if (m->unsent() == 0) {
              m->send_armed = false;
            } else {
              m->send_armed_at = now_;  // progress: the send timeout starts again
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
        break;
      case Op::accept:
      case Op::accept_cancel:
      case Op::send_file_poll:
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
    if (request.tag.op == Op::close) {
      if (!close_fired_)
        violation("on_closed not called for the close completion of " + id_text(m->id));
      pending_close_.reset();
    }
  }

  Model* find_model(OpTag tag) { return find_model(ConnectionId{tag.slot, tag.generation}); }

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
    const auto r = rng_() % 100;
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
    } else {
      inject_stale();
    }
  }

  nanoseconds random_advance() {
    const auto r = rng_() % 100;
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
      const std::string where = "slot " + std::to_string(slot) + " (" +
                                std::string(to_string(c.state)) + ", gen " +
                                std::to_string(c.generation) + "): ";
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
      if (m->close_requested && !m->terminated && m->unsent() == 0 && !m->shutdown_issued) {
        violation(where + "everything sent after close() but no SHUT_WR issued");
      }
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
    if (stats_.shutdown_syscalls != io_.shutdown_calls())
      violation("Stats::shutdown_syscalls differs");
    if (stats_.receive_buffer_waits != model_buffer_waits_)
      violation("Stats::receive_buffer_waits differs");
    if (stats_.stale_completions != injected_stale_) {
      violation("stale_completions = " + std::to_string(stats_.stale_completions) + ", injected " +
                std::to_string(injected_stale_) + ": a real completion was taken for stale");
    }
  }

  // What each state promises (state.hpp), and that the state is the one the model predicts.
  void check_state(const Model& m, const Connection& c, std::uint8_t outstanding,
                   const std::string& where) {
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
        if (variant_.with_on_receive && !m.eof_seen && !m.waiting && !recv) {
          violation(where + "open with on_receive, no EOF, not waiting, but no recv in flight");
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

  const std::uint64_t seed_;
  const Variant variant_;
  std::mt19937_64 rng_;
  Config config_;
  int error_weight_ = 1;
  bool graceful_finish_ = true;
  bool allow_adopt_ = true;

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
  std::optional<std::uint64_t> pending_close_;
  bool close_fired_ = false;

  std::array<std::uint64_t, kOutcomeCount> model_outcomes_{};
  std::uint64_t total_sent_ = 0;
  std::uint64_t total_callback_bytes_ = 0;
  std::uint64_t total_discarded_ = 0;
  std::uint64_t model_buffer_waits_ = 0;
  std::uint64_t injected_stale_ = 0;
  std::uint64_t callback_calls_ = 0;

  std::deque<std::string> recent_;
  std::vector<std::string> violations_;
  Coverage coverage_;
};

// ---------------------------------------------------------------------------------------------

constexpr int kSeeds = 200;
constexpr int kSteps = 300;

Coverage& total_coverage() {
  static Coverage coverage;
  return coverage;
}

class EngineFuzz : public testing::TestWithParam<std::tuple<int, int>> {
 public:
  static void TearDownTestSuite() {
    const Coverage& c = total_coverage();
    std::printf(
        "[ fuzz     ] %llu steps, %llu completions, %llu stale injected (%llu on reused slots)\n",
        static_cast<unsigned long long>(c.steps), static_cast<unsigned long long>(c.completions),
        static_cast<unsigned long long>(c.stale_injected),
        static_cast<unsigned long long>(c.stale_on_reused_slot));
    std::printf("[ fuzz     ] outcomes:");
    for (std::size_t i = 0; i < kOutcomeCount; ++i) {
      std::printf(" %s=%llu", std::string(to_string(static_cast<Outcome>(i))).c_str(),
                  static_cast<unsigned long long>(c.outcomes[i]));
    }
    std::printf("\n");
  }
};

TEST_P(EngineFuzz, InvariantsHoldAfterEveryEvent) {
  const auto [seed, variant] = GetParam();
  Fuzzer fuzzer(static_cast<std::uint64_t>(seed), kVariants[variant]);
  EXPECT_TRUE(fuzzer.run(kSteps).empty());  // each violation was reported as it happened
  total_coverage().add(fuzzer.coverage());
}

INSTANTIATE_TEST_SUITE_P(Seeds, EngineFuzz,
                         testing::Combine(testing::Range(1, kSeeds + 1), testing::Range(0, 8)),
                         [](const testing::TestParamInfo<std::tuple<int, int>>& param_info) {
                           return "seed" + std::to_string(std::get<0>(param_info.param)) + "_" +
                                  variant_name(kVariants[std::get<1>(param_info.param)]);
                         });

// A longer campaign on demand: RINGLINGER_FUZZ_SEEDS=5000 RINGLINGER_FUZZ_STEPS=1000 (the seeds
// start at RINGLINGER_FUZZ_FIRST_SEED, default 1'000'000, so they differ from the ones above).
TEST(EngineFuzzCampaign, ManySeedsOnDemand) {
  const char* seeds_text = std::getenv("RINGLINGER_FUZZ_SEEDS");
  if (seeds_text == nullptr) GTEST_SKIP() << "set RINGLINGER_FUZZ_SEEDS to run";
  const char* steps_text = std::getenv("RINGLINGER_FUZZ_STEPS");
  const char* first_text = std::getenv("RINGLINGER_FUZZ_FIRST_SEED");
  const std::uint64_t seeds = std::strtoull(seeds_text, nullptr, 10);
  const int steps = steps_text != nullptr ? std::atoi(steps_text) : kSteps;
  const std::uint64_t first =
      first_text != nullptr ? std::strtoull(first_text, nullptr, 10) : 1'000'000;
  Coverage coverage;
  int failures = 0;
  for (std::uint64_t seed = first; seed < first + seeds && failures < 3; ++seed) {
    for (int variant = 0; variant < 8; ++variant) {
      Fuzzer fuzzer(seed, kVariants[variant]);
      if (!fuzzer.run(steps).empty()) ++failures;
      coverage.add(fuzzer.coverage());
    }
  }
  std::printf("[ campaign ] %llu steps, %llu completions\n",
              static_cast<unsigned long long>(coverage.steps),
              static_cast<unsigned long long>(coverage.completions));
}

// The fuzzer reaches what it claims to check: every outcome, the reentrant paths, stale
// completions on reused slots, an fd number reused before the old close's completion, partial
// sends, buffer waits, exact deadline hits, graceful finishes.
TEST(EngineFuzzCoverage, EveryOutcomeAndEveryTrickyPathIsExercised) {
  Coverage coverage;
  for (int seed = 1000; seed < 1040; ++seed) {
    for (int variant = 0; variant < 8; ++variant) {
      Fuzzer fuzzer(static_cast<std::uint64_t>(seed), kVariants[variant]);
      EXPECT_TRUE(fuzzer.run(kSteps).empty());
      coverage.add(fuzzer.coverage());
    }
  }
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    EXPECT_GT(coverage.outcomes[i], 0u)
        << "outcome never reached: " << to_string(static_cast<Outcome>(i));
  }
  EXPECT_GT(coverage.stale_on_reused_slot, 0u);
  EXPECT_GT(coverage.fd_reused_before_close_completion, 0u);
  EXPECT_GT(coverage.reentrant_close, 0u);
  EXPECT_GT(coverage.reentrant_send, 0u);
  EXPECT_GT(coverage.reentrant_abort, 0u);
  EXPECT_GT(coverage.reentrant_adopt, 0u);
  EXPECT_GT(coverage.reentrant_all, 0u);
  EXPECT_GT(coverage.buffer_waits, 0u);
  EXPECT_GT(coverage.partial_sends, 0u);
  EXPECT_GT(coverage.adopt_refused_full, 0u);
  EXPECT_GT(coverage.exact_deadline_hits, 0u);
  EXPECT_GT(coverage.graceful_finishes, 0u);
}

// ---------------------------------------------------------------------------------------------
// Directed scenarios: single paths the fuzzer reaches at random, pinned down step by step.

class Harness {
 public:
  explicit Harness(Config config, bool with_on_receive = false) : config_(config) {
    if (with_on_receive) {
      callbacks.on_receive = [this](ConnectionId id, std::span<const std::byte> data) {
        received.emplace_back(id, data.size());
        if (on_receive) on_receive(id, data);
      };
    }
    callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      closed.emplace_back(id, report);
      if (on_closed) on_closed(id, report);
    };
    engine = std::make_unique<Engine>(config_, io, callbacks, stats);
  }

  // The index of the outstanding request of `op` for `id`; -1 if none.
  int find(Op op, ConnectionId id) const {
    const auto& outstanding = io.outstanding();
    for (std::size_t i = 0; i < outstanding.size(); ++i) {
      const OpTag tag = outstanding[i].tag;
      if (tag.op == op && tag.slot == id.slot && tag.generation == id.generation)
        return static_cast<int>(i);
    }
    return -1;
  }
  bool outstanding(Op op, ConnectionId id) const { return find(op, id) >= 0; }

  // Completes the outstanding `op` of `id` with `result` (a delivering recv gets that many bytes).
  void complete(Op op, ConnectionId id, std::int32_t result) {
    const int index = find(op, id);
    ASSERT_GE(index, 0) << "no " << fake::op_name(op) << " outstanding for " << id_text(id);
    const Request request = io.take(static_cast<std::size_t>(index));
    Completion completion{request.tag, result, {}};
    if (op == Op::recv && request.mode == RecvMode::deliver && result > 0) {
      buffer.assign(static_cast<std::size_t>(result), std::byte{'d'});
      completion.data = buffer;
    }
    engine->on_completion(completion, now);
  }

  State state(ConnectionId id) const {
    const Connection* connection = engine->find(id);
    return connection == nullptr ? State::free : connection->state;
  }

  Config config_;
  FakeIo io;
  Stats stats;
  Callbacks callbacks;
  std::unique_ptr<Engine> engine;
  TimePoint now = kStart;
  std::vector<std::byte> buffer;
  std::vector<std::pair<ConnectionId, std::size_t>> received;
  std::vector<std::pair<ConnectionId, CloseReport>> closed;
  std::function<void(ConnectionId, std::span<const std::byte>)> on_receive;
  std::function<void(ConnectionId, const CloseReport&)> on_closed;
};

Config small_config(ShutdownMode mode = ShutdownMode::syscall, std::uint32_t max_connections = 4) {
  Config config;
  config.shutdown_mode = mode;
  config.max_connections = max_connections;
  return config;
}

TEST(EngineScenario, GracefulCloseIsCleanOnlyAfterFlushShutdownAndEof) {
  for (ShutdownMode mode : {ShutdownMode::syscall, ShutdownMode::ring}) {
    SCOPED_TRACE(std::string(to_string(mode)));
    Harness h(small_config(mode));
    const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
    ASSERT_FALSE(h.engine->send(id, "hello", h.now));
    ASSERT_FALSE(h.engine->close(id, h.now));
    EXPECT_EQ(h.state(id), State::flushing);
    EXPECT_TRUE(h.outstanding(Op::send, id));
    EXPECT_TRUE(h.outstanding(Op::recv, id));  // discarding while the queue drains
    EXPECT_EQ(h.io.shutdown_calls(), 0u) << "no FIN before the data";
    EXPECT_FALSE(h.outstanding(Op::shutdown, id));

    h.complete(Op::send, id, 2);  // short send: the rest goes again
    EXPECT_EQ(h.state(id), State::flushing);
    EXPECT_EQ(h.io.shutdown_calls(), 0u);
    h.complete(Op::send, id, 3);
    if (mode == ShutdownMode::ring) {
      EXPECT_EQ(h.state(id), State::shutting_down);
      h.complete(Op::shutdown, id, 0);
    } else {
      EXPECT_EQ(h.io.shutdown_calls(), 1u);
    }
    EXPECT_EQ(h.state(id), State::draining);
    h.complete(Op::recv, id, 0);  // the peer's EOF
    EXPECT_EQ(h.state(id), State::closing);
    EXPECT_TRUE(h.closed.empty()) << "reported before the close completed";
    h.now += 3ms;
    h.complete(Op::close, id, 0);
    ASSERT_EQ(h.closed.size(), 1u);
    const CloseReport& report = h.closed[0].second;
    EXPECT_EQ(report.outcome, Outcome::clean);
    EXPECT_EQ(report.bytes_sent, 5u);
    EXPECT_FALSE(report.reset_sent);
    EXPECT_EQ(report.teardown_time, 3ms);
    EXPECT_EQ(h.stats.in_state(State::free), 4u);
    EXPECT_TRUE(h.io.violations().empty());
  }
}

TEST(EngineScenario, EofWithoutSuccessfulShutdownIsNotClean) {
  Harness h(small_config(ShutdownMode::ring));
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::recv, id, 0);  // EOF while our shutdown is in flight
  h.complete(Op::shutdown, id, -ENOTCONN);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::peer_reset);
  EXPECT_EQ(h.closed[0].second.first_error, ENOTCONN);
}

TEST(EngineScenario, StaleCompletionForAReusedSlotIsIgnored) {
  Harness h(small_config(ShutdownMode::syscall, 1));  // one slot: reuse is certain
  const ConnectionId old_id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(old_id, "abc", h.now));
  ASSERT_FALSE(h.engine->abort(old_id, h.now));
  EXPECT_EQ(h.state(old_id), State::cancelling);
  h.complete(Op::send, old_id, -ECANCELED);
  h.complete(Op::cancel, old_id, 1);
  h.complete(Op::close, old_id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.closed[0].second.reset_sent);

  const ConnectionId new_id = *h.engine->adopt(h.io.open_fd(), h.now);
  EXPECT_EQ(new_id.slot, old_id.slot);
  EXPECT_EQ(new_id.generation, old_id.generation + 1);
  ASSERT_FALSE(h.engine->send(new_id, "xyz", h.now));
  ASSERT_TRUE(h.outstanding(Op::send, new_id));

  // The old connection's send "completes" again, as a late CQE would.
  const auto before = snapshot(*h.engine);
  h.engine->on_completion(Completion{OpTag{Op::send, old_id.generation, old_id.slot}, 3, {}},
                          h.now);
  EXPECT_EQ(h.stats.stale_completions, 1u);
  EXPECT_EQ(snapshot(*h.engine), before);
  EXPECT_TRUE(h.outstanding(Op::send, new_id));
  EXPECT_EQ(h.engine->find(new_id)->bytes_sent, 0u);
  EXPECT_EQ(h.engine->send(old_id, "x", h.now),
            std::make_error_code(std::errc::bad_file_descriptor));

  h.complete(Op::send, new_id, 3);  // the real one still works
  EXPECT_EQ(h.engine->find(new_id)->bytes_sent, 3u);
}

TEST(EngineScenario, OnReceiveMaySendAndCloseReentrantly) {
  Harness h(small_config(), /*with_on_receive=*/true);
  h.on_receive = [&h](ConnectionId id, std::span<const std::byte> data) {
    if (data.empty()) return;
    EXPECT_FALSE(h.engine->send(id, "reply", h.now));
    EXPECT_FALSE(h.engine->close(id, h.now));
    EXPECT_EQ(h.engine->send(id, "too late", h.now), std::make_error_code(std::errc::broken_pipe));
  };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_TRUE(h.outstanding(Op::recv, id));
  EXPECT_EQ(h.io.outstanding()[static_cast<std::size_t>(h.find(Op::recv, id))].mode,
            RecvMode::deliver);
  h.complete(Op::recv, id, 10);
  ASSERT_EQ(h.received.size(), 1u);
  EXPECT_EQ(h.state(id), State::flushing);
  ASSERT_TRUE(h.outstanding(Op::recv, id));
  EXPECT_EQ(h.io.outstanding()[static_cast<std::size_t>(h.find(Op::recv, id))].mode,
            RecvMode::discard);
  h.complete(Op::recv, id, 7);  // discarded, not delivered
  EXPECT_EQ(h.received.size(), 1u);
  h.complete(Op::send, id, 5);
  EXPECT_EQ(h.state(id), State::draining);
  h.complete(Op::recv, id, 0);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_EQ(report.outcome, Outcome::clean);
  EXPECT_EQ(report.bytes_received, 10u);
  EXPECT_EQ(report.bytes_discarded, 7u);
  EXPECT_EQ(report.bytes_sent, 5u);
}

TEST(EngineScenario, OnReceiveMayAbortItsOwnConnection) {
  Harness h(small_config(), /*with_on_receive=*/true);
  h.on_receive = [&h](ConnectionId id, std::span<const std::byte>) {
    (void)h.engine->abort(id, h.now);
  };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  h.complete(Op::recv, id, 1);
  EXPECT_EQ(h.state(id), State::closing);  // nothing else was in flight
  EXPECT_FALSE(h.outstanding(Op::recv, id));
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::aborted);
  EXPECT_TRUE(h.io.violations().empty());
}

TEST(EngineScenario, OnClosedMayAdoptIntoTheSlotJustFreed) {
  Harness h(small_config(ShutdownMode::syscall, 1), /*with_on_receive=*/true);
  std::optional<ConnectionId> successor;
  h.on_closed = [&](ConnectionId, const CloseReport&) {
    successor = h.engine->adopt(h.io.open_fd(), h.now);
  };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  EXPECT_FALSE(h.engine->adopt(h.io.open_fd(), h.now)) << "the table is full";
  (void)h.engine->abort(id, h.now);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_TRUE(successor.has_value());
  EXPECT_EQ(successor->slot, id.slot);
  EXPECT_NE(successor->generation, id.generation);
  EXPECT_EQ(h.state(*successor), State::open);
  EXPECT_TRUE(h.outstanding(Op::recv, *successor));
  EXPECT_EQ(h.stats.in_state(State::open), 1u);
  EXPECT_EQ(h.stats.in_state(State::free), 0u);
}

// outcome.hpp, for a connection ended without close() (here: abort at 10 ms, fd closed 5 ms
// later): close_latency() is 0 and close_requested is false; open_time is "adopt -> outcome
// decided" (10 ms) and teardown_time "outcome decided -> fd closed" (5 ms): the phases still add
// up to the whole lifetime.
TEST(EngineScenario, CloseReportTimesWithoutClose) {
  Harness h(small_config());
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abc", h.now));
  h.now += 10ms;
  (void)h.engine->abort(id, h.now);  // close() is never called
  h.now += 5ms;
  h.complete(Op::send, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_FALSE(report.close_requested);
  EXPECT_EQ(report.close_latency(), 0ns) << "documented: 0 when close() was never requested";
  EXPECT_EQ(report.teardown_time, 5ms) << "documented: outcome decided -> fd closed";
  EXPECT_EQ(report.open_time, 10ms) << "documented: adopt -> outcome decided without close()";
  EXPECT_EQ(report.open_time + report.flush_time + report.drain_time + report.teardown_time, 15ms)
      << "documented: the phases add up to the whole lifetime";
}

// With close(): the phases add up to the close latency and, with open_time, to the lifetime.
TEST(EngineScenario, CloseReportTimesWithClose) {
  Harness h(small_config());
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "abc", h.now));
  h.now += 10ms;
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.now += 1ms;
  h.complete(Op::send, id, 3);  // flushed: shutdown(2) now
  h.now += 2ms;
  h.complete(Op::recv, id, 0);  // EOF: outcome decided
  h.now += 4ms;
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  const CloseReport& report = h.closed[0].second;
  EXPECT_TRUE(report.close_requested);
  EXPECT_EQ(report.open_time, 10ms);
  EXPECT_EQ(report.flush_time, 1ms);
  EXPECT_EQ(report.drain_time, 2ms);
  EXPECT_EQ(report.teardown_time, 4ms);
  EXPECT_EQ(report.close_latency(), 7ms);
}

TEST(EngineDeathTest, ACompletionForAnOpNotInFlightAborts) {
  EXPECT_DEATH(
      {
        Harness h(small_config());
        const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);  // no on_receive: idle
        h.engine->on_completion(Completion{OpTag{Op::send, id.generation, id.slot}, 1, {}}, h.now);
      },
      "assertion failed");
}

// ---------------------------------------------------------------------------------------------
// FakeIo's own checks fire: the rules it enforces for the fuzzer are not vacuous.

TEST(FakeIoChecks, FlagsACloseWithARequestInFlight) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_close({Op::close, 0, 0}, fd);
  ASSERT_FALSE(io.violations().empty());
  EXPECT_NE(io.violations()[0].find("other requests outstanding"), std::string::npos)
      << io.violations()[0];
}

TEST(FakeIoChecks, FlagsASecondRequestOfTheSameOp) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  ASSERT_EQ(io.violations().size(), 1u);
  EXPECT_NE(io.violations()[0].find("already outstanding"), std::string::npos);
}

TEST(FakeIoChecks, FlagsARequestAfterTheClose) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_close({Op::close, 0, 0}, fd);
  EXPECT_TRUE(io.violations().empty());
  io.submit_cancel({Op::cancel, 0, 0}, fd);
  EXPECT_FALSE(io.violations().empty());
}

TEST(FakeIoChecks, FlagsMixedGenerationsAndSyncCallsOnClosedFds) {
  FakeIo io;
  const int fd = io.open_fd();
  io.submit_recv({Op::recv, 0, 0}, fd, RecvMode::discard, 10);
  io.submit_send({Op::send, 1, 0}, fd, std::as_bytes(std::span("x", 1)), false);
  EXPECT_EQ(io.violations().size(), 1u);
  io.clear_violations();
  const int other = io.open_fd();
  io.submit_close({Op::close, 0, 1}, other);
  (void)io.shutdown_now(other);
  io.set_reset_on_close(other);
  EXPECT_EQ(io.violations().size(), 2u);
}

TEST(FakeIoChecks, ReusesTheLowestFdOnlyOnceItsCloseRan) {
  FakeIo io;
  const int a = io.open_fd();
  const int b = io.open_fd();
  EXPECT_EQ(b, a + 1);
  io.submit_close({Op::close, 0, 0}, a);
  EXPECT_EQ(io.open_fd(), b + 1) << "reused while the close had not run";
  io.release_fd(0);  // the kernel runs the close; its completion is still due
  EXPECT_EQ(io.open_fd(), a);
  EXPECT_EQ(io.outstanding().size(), 1u);
  (void)io.take(0);
  EXPECT_TRUE(io.violations().empty());
}

}  // namespace
}  // namespace ringlinger::detail

namespace ringlinger::detail {
namespace {

// engine.cpp, peer_still_reading(): a drain idle timer that fires while the peer is still
// acknowledging our data is put off (the peer is reading, not idle); once its acknowledgements
// stall, the next expiry ends the drain; a lone unacknowledged FIN does not count as data.
TEST(EngineScenario, DrainIdleTimeoutWaitsForAPeerStillAcknowledgingOurData) {
  Config config = small_config();
  config.drain_idle_timeout_ms = 100;
  Harness h(config);
  std::uint32_t unacknowledged = 50'000;
  h.io.unacknowledged_result = [&](int) { return unacknowledged; };
  const ConnectionId id = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->send(id, "response", h.now));
  ASSERT_FALSE(h.engine->close(id, h.now));
  h.complete(Op::send, id, 8);  // flushed; shutdown(2); draining with a recv outstanding
  ASSERT_EQ(h.state(id), State::draining);

  h.now += 100ms;
  h.engine->expire_timers(h.now);  // first expiry: data in flight, one more idle period
  EXPECT_EQ(h.state(id), State::draining);
  unacknowledged = 20'000;
  h.now += 100ms;
  h.engine->expire_timers(h.now);  // progress: 50000 -> 20000
  EXPECT_EQ(h.state(id), State::draining);
  EXPECT_EQ(h.stats.drain_idle_extensions, 2u);
  h.now += 100ms;
  h.engine->expire_timers(h.now);  // no progress: 20000 -> 20000, idle for real
  EXPECT_EQ(h.state(id), State::cancelling);
  h.complete(Op::recv, id, -ECANCELED);
  h.complete(Op::cancel, id, 1);
  h.complete(Op::close, id, 0);
  ASSERT_EQ(h.closed.size(), 1u);
  EXPECT_EQ(h.closed[0].second.outcome, Outcome::drain_idle_timeout);

  // Only our FIN unacknowledged: the peer has everything, the first expiry ends the drain.
  unacknowledged = 1;
  const ConnectionId second = *h.engine->adopt(h.io.open_fd(), h.now);
  ASSERT_FALSE(h.engine->close(second, h.now));
  ASSERT_EQ(h.state(second), State::draining);
  h.now += 100ms;
  h.engine->expire_timers(h.now);
  EXPECT_EQ(h.state(second), State::cancelling);
  EXPECT_EQ(h.stats.drain_idle_extensions, 2u);
}

}  // namespace
}  // namespace ringlinger::detail
