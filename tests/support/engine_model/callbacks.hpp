// The engine's callbacks, checked against the completion being handled, and acting on the engine
// again from inside them (reentrancy). Part of engine_model.hpp.
#pragma once

#include <algorithm>
#include <string>

#include "engine_model/fuzzer.hpp"

namespace ringlinger::detail::engine_model {

inline void Fuzzer::on_receive(ConnectionId id, std::span<const std::byte> data) {
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
    if (chance(50)) {
      do_send_view_and_close(id, random_send_size(), "on_receive: send_view_and_close(self)");
    } else {
      do_send(id, random_send_size(), false, "on_receive: send(self)");
      do_close(id, "on_receive: then close(self)");
    }
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
inline void Fuzzer::on_send_drained(ConnectionId id) {
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

inline void Fuzzer::on_closed(ConnectionId id, const CloseReport& report) {
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
  if (report.outcome == Outcome::drain_byte_cap && m->recv_parts != 0)
    ++coverage_.byte_caps_after_parts;
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

}  // namespace ringlinger::detail::engine_model
