// The engine model's one class: the driver, the model and the checker share one state (the
// models of every connection, the time, the event running), so they are one class, its member
// functions defined by idea in the other parts of engine_model/. Part of engine_model.hpp.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "choices.hpp"
#include "core/engine.hpp"
#include "engine_model/basics.hpp"
#include "engine_model/connection.hpp"
#include "engine_model/coverage.hpp"
#include "fake_io.hpp"

namespace ringlinger::detail::engine_model {

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
    io_.closes_unreported = chance(50);  // io_uring's, or a backend's without it

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
  std::vector<std::string> run(int steps);

  const Coverage& coverage() const { return coverage_; }
  std::string describe_run() const;

 private:
  // --- randomness ----------------------------------------------------------------------------

  std::uint64_t roll(std::uint64_t n) { return choices_.below(n); }
  bool chance(int percent) { return static_cast<int>(roll(100)) < percent; }
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : roll(n); }
  std::string random_bytes(std::size_t size);
  std::size_t random_send_size();

  // --- model lookup --------------------------------------------------------------------------

  Model* find_model(ConnectionId id) {
    auto it = models_.find(key_of(id));
    return it == models_.end() ? nullptr : &it->second;
  }
  Model* find_model(OpTag tag) { return find_model(ConnectionId{tag.slot, tag.generation}); }

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

  bool send_in_flight(const Model& m) const {
    return (io_.outstanding_ops(m.id.slot) & bit(Op::send)) != 0;
  }

  nanoseconds send_timeout() const { return milliseconds(config_.send_timeout_ms); }
  nanoseconds idle_timeout() const { return milliseconds(config_.drain_idle_timeout_ms); }
  nanoseconds drain_timeout() const { return milliseconds(config_.drain_timeout_ms); }

  // --- the model's expectations (expectations.hpp): every submission and synchronous call ----

  Model* model_for_submission(const Request& request);
  Model& create_model(ConnectionId id, int fd);
  void on_submit(const Request& request) override;
  void expect_drain_request(const Model& m, const Request& request);
  void expect_unreported_close(const Model& m, const Request& request);
  void on_shutdown_now(int fd, int result) override;
  void on_set_reset_on_close(int fd) override;
  void on_limit_orphan_time(int fd, std::uint32_t timeout_ms) override;
  PeerAcks peer_acks(int fd, TimePoint now);
  void expect_progress_check(Model& m, const PeerAcks& acks, bool send_timer);
  void expect_ack_wait(Model& m, const PeerAcks& acks);
  void start_ack_poll_if_due();
  void forget_ack_wait(Model& m);
  void arm_send_timer(Model& m);
  void arm_idle_timer(Model& m);
  void note_progress(Model& m);
  void rearm_from_progress(Model& m);
  void shutdown_issued(Model& m, const char* how);
  void write_shutdown_issued(Model& m);
  void shutdown_succeeded(Model& m);
  void close_requested(Model& m);
  void note_abort(Model& m);
  void record_error(Model& m, int error, ErrorSource source);
  void terminated(Model& m);
  std::optional<TimePoint> model_deadline(const Model& m) const;

  // --- the callbacks (callbacks.hpp) ---------------------------------------------------------

  void on_receive(ConnectionId id, std::span<const std::byte> data);
  void on_send_drained(ConnectionId id);
  void on_closed(ConnectionId id, const CloseReport& report);

  // --- the report (report.hpp): violations, and each CloseReport checked ---------------------

  void log(std::string event);
  void violation(const std::string& what);
  void check_result(std::error_code got, std::error_code want, const std::string& what);
  void check_report(const Model& m, const CloseReport& report);

  // --- the driver (driver.hpp): API calls, by the test or by a callback; completions ---------

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

  ConnectionId pick_id();
  ConnectionId pick_paused_id();
  std::error_code expected_for(const Model* m, bool needs_open) const;
  std::optional<ConnectionId> do_adopt(const std::string& who);
  void do_send(ConnectionId id, std::size_t size, bool view, const std::string& who);
  void do_close(ConnectionId id, const std::string& who);
  void do_send_view_and_close(ConnectionId id, std::size_t size, const std::string& who);
  void do_send_and_close(ConnectionId id, std::size_t size, const std::string& who);
  std::error_code expect_send_and_close(Model* m, const std::string& bytes);
  void do_shutdown_write(ConnectionId id, const std::string& who);
  void do_pause(ConnectionId id, const std::string& who);
  void do_resume(ConnectionId id, const std::string& who);
  void do_queued_bytes(ConnectionId id, const std::string& who);
  void do_abort(ConnectionId id, const std::string& who);
  void do_abort_after_send(ConnectionId id, const std::string& who);
  void do_close_all();
  void do_abort_all();
  void do_advance(nanoseconds by);
  void do_retry();
  std::uint32_t largest_receive(const Request& request) const;
  std::int32_t choose_result(const Request& request, const Model& m, bool benign);
  std::int32_t choose_wide_result(const Request& request, const Model& m);
  void deliver(std::size_t index, std::int32_t result);
  void do_complete_random();
  std::uint32_t choose_part(const Request& request);
  void deliver_part(std::size_t index, std::uint32_t bytes);
  void inject_stale();
  void random_event();
  nanoseconds random_advance();
  void finish();

  // --- the invariants (invariants.hpp), after every event ------------------------------------

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

  void check_invariants();
  State check_state(const Model& m, const Connection& c, std::uint8_t outstanding,
                    const SlotWhere& where);

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
  bool unreported_close_ = false;          // one was submitted in the completion being handled
  std::optional<std::uint64_t> drain_eof_;  // the connection whose 0-byte receive is completing

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
