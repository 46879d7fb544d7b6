// The model's expectations: what the engine must do on every submission and synchronous call it
// makes through FakeIo (the observer), when its timers expire, and which outcome ends each
// connection. Part of engine_model.hpp.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "engine_model/fuzzer.hpp"

namespace ringlinger::detail::engine_model {

// The model for a submission's tag; created here for the connection adopt() is creating.
inline Model* Fuzzer::model_for_submission(const Request& request) {
  const std::uint64_t key = key_of(request.tag.slot, request.tag.generation);
  if (auto it = models_.find(key); it != models_.end()) return &it->second;
  if (request.fd != adopting_fd_) return nullptr;
  return &create_model(ConnectionId{request.tag.slot, request.tag.generation}, request.fd);
}

inline Model& Fuzzer::create_model(ConnectionId id, int fd) {
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

inline void Fuzzer::on_submit(const Request& request) {
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
        expect_drain_request(*m, request);
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
      if (request.unreported) expect_unreported_close(*m, request);
      if (!m->terminated) terminated(*m);
      m->close_submitted = true;
      if (request.unreported) {  // reported at once, inside the receive's completion
        pending_close_ = key_of(m->id);
        close_fired_ = false;
        close_error_ = 0;
        unreported_close_ = true;
        ++coverage_.unreported_closes;
      }
      break;
    case Op::accept:
    case Op::accept_cancel:
    case Op::listen_poll:
    case Op::send_file_poll:
    case Op::wake:
      violation("the engine submitted a backend-only op: " + what);
      break;
  }
}

// An unreported close (IoPort::submit_close_unreported) only ends a drain the peer's FIN ended:
// inside the completion of the connection's receive with 0 bytes, nothing else in flight, clean
// (no error, no reset to send), and of a connection the manager accepted itself.
inline void Fuzzer::expect_unreported_close(const Model& m, const Request& request) {
  const std::string what = fake::describe(request);
  if (!drain_eof_ || *drain_eof_ != key_of(m.id))
    violation("unreported close outside the completion of the drain's EOF: " + what);
  if (m.terminated) violation("unreported close after a cancel or another end: " + what);
  if (!m.accepted)
    violation("unreported close of an adopted fd, whose number its owner knows: " + what);
  if (m.first_error != 0 || m.reset_after_send || io_.reset_requested(m.fd))
    violation("unreported close of a connection that does not end clean: " + what);
  if ((io_.outstanding_ops(request.tag.slot) & ~bit(Op::close)) != 0)
    violation("unreported close with requests in flight: " + what);
}

// A discarding recv may take, in all its parts, one byte more than the byte cap leaves (so that
// crossing it is seen at once), at most UINT32_MAX (the kernel's limit is 32 bits); no cap, so
// UINT32_MAX. More would drop bytes past the cap; less would end a multishot drain early.
inline void Fuzzer::expect_drain_request(const Model& m, const Request& request) {
  const std::string what = fake::describe(request);
  if (request.max_bytes == 0) violation("discarding recv of 0 bytes: " + what);
  const std::uint64_t cap =
      config_.drain_max_bytes != 0 ? config_.drain_max_bytes : UINT64_MAX;
  const std::uint64_t left = cap - std::min(cap, m.discarded);
  if (config_.drain_max_bytes != 0 && request.max_bytes > left + 1) {
    violation("discarding recv asks more than the byte cap allows + 1: " + what);
  }
  if (request.max_bytes != std::min<std::uint64_t>(left, UINT32_MAX - 1) + 1) {
    violation("discarding recv asks " + std::to_string(request.max_bytes) + " bytes, " +
              (config_.drain_max_bytes != 0 ? std::to_string(left) + " left under the cap"
                                            : std::string("no cap")) +
              ": not min(left, UINT32_MAX - 1) + 1: " + what);
  }
}

inline void Fuzzer::on_shutdown_now(int fd, int result) {
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
inline PeerAcks Fuzzer::peer_acks(int fd, TimePoint now) {
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

inline void Fuzzer::expect_progress_check(Model& m, const PeerAcks& acks, bool send_timer) {
  if (!acks.known) return;  // idle: the engine ends the connection
  const bool moved = m.acked_asked ? acks.bytes_acked > *m.acked_asked
                                   : acks.last_ack_by > m.progress_at;
  m.acked_asked = acks.bytes_acked;
  if (!moved) return;
  m.progress_at = std::max(m.progress_at, std::min(acks.last_ack_by, now_));
  const nanoseconds period = send_timer ? send_timeout() : idle_timeout();
  const TimePoint deadline = m.progress_at + period;
  if (deadline <= now_) return;
  (send_timer ? m.send_deadline : m.idle_deadline) =
      engine_model::lane_deadline(now_, deadline, period);
  ++(send_timer ? model_send_extensions_ : model_idle_extensions_);
  ++coverage_.progress_extensions;
}

// Engine::await_acknowledgement(): one list of the connections waiting, asked again together
// kAckWaitInterval after the first one joined it.
inline void Fuzzer::expect_ack_wait(Model& m, const PeerAcks& acks) {
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
inline void Fuzzer::start_ack_poll_if_due() {
  if (awaiting_ack_.empty() || now_ < ack_poll_at_) return;
  polling_ = std::move(awaiting_ack_);
  awaiting_ack_.clear();
  for (std::uint64_t key : polling_) models_.at(key).ack_wait_armed = false;
}

inline void Fuzzer::forget_ack_wait(Model& m) {
  const std::uint64_t key = key_of(m.id);
  awaiting_ack_.erase(std::remove(awaiting_ack_.begin(), awaiting_ack_.end(), key),
                      awaiting_ack_.end());
  polling_.erase(std::remove(polling_.begin(), polling_.end(), key), polling_.end());
  m.ack_wait_armed = false;
}

// The progress timers start a new period now (engine.cpp, note_progress()).
inline void Fuzzer::arm_send_timer(Model& m) {
  m.send_armed = true;
  m.send_deadline = now_ + send_timeout();
  m.progress_at = now_;
  m.progress_noted = false;
}

inline void Fuzzer::arm_idle_timer(Model& m) {
  m.idle_armed = true;
  m.idle_deadline = now_ + idle_timeout();
  m.progress_at = now_;
  m.progress_noted = false;
}

// Input and completed sends only note the time (engine.cpp, note_input()): the timer keeps its
// deadline.
inline void Fuzzer::note_progress(Model& m) {
  m.progress_at = now_;
  m.progress_noted = true;
}

// Engine::expire_timers(): a progress timer that expires after progress the engine saw since it
// was armed starts a new period from it (with the timeout in force now), armed to the first
// lane deadline at or after its end, with no TCP_INFO.
inline void Fuzzer::rearm_from_progress(Model& m) {
  if (m.terminated) return;
  const auto rearm = [&](bool armed, TimePoint& deadline, nanoseconds period) {
    if (!armed || deadline > now_ || !m.progress_noted) return;
    m.progress_noted = false;
    if (m.progress_at + period <= now_) return;
    deadline = engine_model::lane_deadline(now_, m.progress_at + period, period);
    ++coverage_.progress_rearms;
  };
  rearm(m.send_armed, m.send_deadline, send_timeout());
  rearm(m.idle_armed, m.idle_deadline, idle_timeout());
}

inline void Fuzzer::on_set_reset_on_close(int fd) {
  Model* m = live_model_by_fd(fd);
  if (m == nullptr)
    return violation("set_reset_on_close on fd " + std::to_string(fd) + " of no live connection");
  if (m->close_submitted) violation("set_reset_on_close after the close was submitted");
  m->reset_requested = true;
}

// TCP_USER_TIMEOUT, once, before the close of a connection a timeout ends with FIN; checked
// against the outcome in check_report().
inline void Fuzzer::on_limit_orphan_time(int fd, std::uint32_t timeout_ms) {
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
inline void Fuzzer::shutdown_issued(Model& m, const char* how) {
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
inline void Fuzzer::write_shutdown_issued(Model& m) {
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

inline void Fuzzer::shutdown_succeeded(Model& m) {
  m.shutdown_ok = true;
  m.shutdown_ok_at = now_;
  if (!m.eof_seen) arm_idle_timer(m);
}

inline void Fuzzer::record_error(Model& m, int error, ErrorSource source) {
  if (m.first_error == 0) {
    m.first_error = error;
    m.first_error_source = source;
  }
}

// The engine decided this connection's outcome (its first cancel or close was submitted).
inline void Fuzzer::terminated(Model& m) {
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

// The earliest deadline the model expects for a connection still deciding its outcome.
inline std::optional<TimePoint> Fuzzer::model_deadline(const Model& m) const {
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

// close() of an open connection: flushing; after a half-close whose SHUT_WR succeeded, no
// second one: straight to draining (the drain timeout starts, shutdown_at is now).
inline void Fuzzer::close_requested(Model& m) {
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

inline void Fuzzer::note_abort(Model& m) {
  if (m.terminated && !m.close_submitted) m.reset_expected_by_abort = true;
}

}  // namespace ringlinger::detail::engine_model
