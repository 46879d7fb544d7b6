// The driver: it chooses every event (API calls, completions and their results, time, stale
// completions), tells the model what the test did, and ends each run by closing everything.
// Part of engine_model.hpp.
#pragma once

#include <algorithm>
#include <bit>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine_model/fuzzer.hpp"
#include "engine_model/invariants.hpp"

namespace ringlinger::detail::engine_model {

inline std::vector<std::string> Fuzzer::run(int steps) {
  check_invariants();
  for (step_ = 0; step_ < steps && violations_.empty() && !choices_.exhausted(); ++step_) {
    random_event();
    check_invariants();
    ++coverage_.steps;
  }
  if (violations_.empty()) finish();
  return violations_;
}

inline std::string Fuzzer::random_bytes(std::size_t size) {
  std::string bytes(size, '\0');
  choices_.fill(bytes);
  return bytes;
}

inline std::size_t Fuzzer::random_send_size() {
  const auto r = roll(100);
  if (r < 10) return 0;              // ignored by the queue
  if (r < 40) return 1 + below(15);  // fits std::string's small buffer (SSO)
  if (r < 90) return 16 + below(300);
  return 1000 + below(4000);
}

inline ConnectionId Fuzzer::pick_id() {
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
inline ConnectionId Fuzzer::pick_paused_id() {
  std::vector<ConnectionId> paused;
  for (Model* m : live_models()) {
    if (m->paused) paused.push_back(m->id);
  }
  if (paused.empty() || chance(30)) return pick_id();
  return paused[below(paused.size())];
}

// The error an API call on `id` must return: stale ids, then closing ones.
inline std::error_code Fuzzer::expected_for(const Model* m, bool needs_open) const {
  if (m == nullptr || m->closed) return std::make_error_code(std::errc::bad_file_descriptor);
  if (needs_open && !m->open()) return std::make_error_code(std::errc::broken_pipe);
  return {};
}

inline std::optional<ConnectionId> Fuzzer::do_adopt(const std::string& who) {
  CauseScope scope(*this, Cause::api);
  if (chance(3)) {
    log(who + "(-1)");
    if (engine_->adopt(-1, now_).valid()) violation("adopt(-1) succeeded");
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
  const bool accepted = chance(50);  // by the manager's listener: the fd's number is private
  const ConnectionId adopted = engine_->adopt(fd, now_, accepted);
  const std::optional<ConnectionId> id =
      adopted.valid() ? std::optional<ConnectionId>(adopted) : std::nullopt;
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
  m->accepted = accepted;
  log("  -> " + id_text(*id));
  return id;
}

inline void Fuzzer::do_send(ConnectionId id, std::size_t size, bool view, const std::string& who) {
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

inline void Fuzzer::do_close(ConnectionId id, const std::string& who) {
  Model* m = find_model(id);
  const std::error_code want = expected_for(m, false);
  log(who + " close " + id_text(id));
  if (!want && m->open()) close_requested(*m);
  CauseScope scope(*this, Cause::api);
  check_result(engine_->close(id, now_), want, who + " close");
}

// send_view() (or send()) then close() in one call: refused as a send is (then nothing is
// queued and nothing closed); accepted, the two calls' model.
inline void Fuzzer::do_send_view_and_close(ConnectionId id, std::size_t size,
                                           const std::string& who) {
  if (chance(50)) return do_send_and_close(id, size, who);
  Model* m = find_model(id);
  const std::string bytes = random_bytes(size);
  log(who + " send_view_and_close " + id_text(id) + " " + std::to_string(size) + " B");
  const std::error_code want = expect_send_and_close(m, bytes);
  auto storage = std::make_unique<std::vector<std::byte>>(size);
  if (size != 0) std::memcpy(storage->data(), bytes.data(), size);
  const std::span<const std::byte> span(storage->data(), storage->size());
  (want ? graveyard_ : m->borrowed).push_back(std::move(storage));
  CauseScope scope(*this, Cause::api);
  check_result(engine_->send_view_and_close(id, span, now_), want, who + " send_view_and_close");
}

inline void Fuzzer::do_send_and_close(ConnectionId id, std::size_t size, const std::string& who) {
  Model* m = find_model(id);
  std::string bytes = random_bytes(size);
  log(who + " send_and_close " + id_text(id) + " " + std::to_string(size) + " B");
  const std::error_code want = expect_send_and_close(m, bytes);
  CauseScope scope(*this, Cause::api);
  check_result(engine_->send_and_close(id, std::move(bytes), now_), want, who + " send_and_close");
}

// What a send and close() in one call of `bytes` should return; the model's side of it when it
// is accepted: the bytes queued (the send timeout starting if the queue was empty), then the
// close.
inline std::error_code Fuzzer::expect_send_and_close(Model* m, const std::string& bytes) {
  std::error_code want = expected_for(m, true);
  if (!want && m->write_shutdown_requested) want = std::make_error_code(std::errc::broken_pipe);
  if (want) return want;
  ++coverage_.sends_and_closes;
  if (!bytes.empty()) {
    if (m->unsent() == 0) arm_send_timer(*m);
    m->queued += bytes;
  }
  if (m->open()) close_requested(*m);
  return want;
}

inline void Fuzzer::do_shutdown_write(ConnectionId id, const std::string& who) {
  Model* m = find_model(id);
  const std::error_code want = expected_for(m, true);
  log(who + " shutdown_write " + id_text(id));
  if (!want) m->write_shutdown_requested = true;  // before the call: shutdown(2) may come in it
  CauseScope scope(*this, Cause::api);
  check_result(engine_->shutdown_write(id, now_), want, who + " shutdown_write");
}

inline void Fuzzer::do_pause(ConnectionId id, const std::string& who) {
  Model* m = find_model(id);
  const std::error_code want = expected_for(m, false);
  log(who + " pause_receive " + id_text(id));
  if (!want) m->paused = true;
  CauseScope scope(*this, Cause::api);
  check_result(engine_->pause_receive(id), want, who + " pause_receive");
}

inline void Fuzzer::do_resume(ConnectionId id, const std::string& who) {
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
inline void Fuzzer::do_queued_bytes(ConnectionId id, const std::string& who) {
  Model* m = find_model(id);
  const std::uint64_t want = m == nullptr || m->closed ? 0 : m->unsent();
  const std::uint64_t got = engine_->queued_bytes(id);
  if (got != want) {
    violation(who + " queued_bytes(" + id_text(id) + ") = " + std::to_string(got) +
              ", the model counts " + std::to_string(want) + " unsent");
  }
}

inline void Fuzzer::do_abort(ConnectionId id, const std::string& who) {
  Model* m = find_model(id);
  const std::error_code want = expected_for(m, false);
  log(who + " abort " + id_text(id));
  if (!want) note_abort(*m);
  CauseScope scope(*this, Cause::abort, key_of(id));
  check_result(engine_->abort(id, now_), want, who + " abort");
}

// abort_after_send(): open, or flushing before any SHUT_WR, and our FIN not out.
inline void Fuzzer::do_abort_after_send(ConnectionId id, const std::string& who) {
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

inline void Fuzzer::do_close_all() {
  log("close_all");
  for (Model* m : live_models()) {
    if (m->open()) close_requested(*m);
  }
  CauseScope scope(*this, Cause::api);
  engine_->close_all(now_);
}

inline void Fuzzer::do_abort_all() {
  log("abort_all(stop_deadline)");
  for (Model* m : live_models()) note_abort(*m);
  CauseScope scope(*this, Cause::abort_all);
  engine_->abort_all(Outcome::stop_deadline, now_);
}

inline void Fuzzer::do_advance(nanoseconds by) {
  now_ += by;
  log("advance " + std::to_string(by.count() / 1000) + " us, expire_timers");
  start_ack_poll_if_due();
  for (Model* m : live_models()) rearm_from_progress(*m);
  CauseScope scope(*this, Cause::expire);
  engine_->expire_timers(now_);
  if (!polling_.empty()) violation("a connection waiting for acknowledgements was not asked");
}

inline void Fuzzer::do_retry() {
  log("retry_waiting_receives");
  for (Model* m : live_models()) m->waiting = false;
  CauseScope scope(*this, Cause::retry);
  engine_->retry_waiting_receives();
}

// The most a recv's completion (or a part of it) may carry: a shared buffer's worth when
// delivering; when discarding, what the request may still take, at most kDiscardChunkBytes
// (its max_bytes is the total of all its parts, up to UINT32_MAX).
inline std::uint32_t Fuzzer::largest_receive(const Request& request) const {
  if (request.mode == RecvMode::deliver) return config_.receive_buffer_bytes;
  return std::min(request.max_bytes, kDiscardChunkBytes);
}

// A plausible result for `request`, from a peer that may misbehave.
inline std::int32_t Fuzzer::choose_result(const Request& request, const Model& m, bool benign) {
  if (options_.wide && !benign) return choose_wide_result(request, m);
  const std::int32_t errors = benign ? 0 : error_weight_;
  if (m.cancel_submitted && request.tag.op != Op::cancel && request.tag.op != Op::close &&
      chance(60)) {
    return -ECANCELED;
  }
  switch (request.tag.op) {
    case Op::recv: {
      const std::uint32_t max = largest_receive(request);
      const auto r = static_cast<std::int32_t>(roll(100 + 10 * errors));
      if (r < 45) {
        // The edges matter: `max` crosses a byte cap, `max - 1` lands exactly on it (a
        // discarding recv's, when what it may still take is less than a chunk).
        const auto pick = roll(10);
        std::uint64_t size = 1 + below(std::min<std::uint64_t>(max, 2000));
        if (pick < 2) size = max;
        if (pick == 2) size = max > 1 ? max - 1 : 1;
        if (pick == 3) size = 1;
        if (pick == 4) size = 1 + below(max);
        return static_cast<std::int32_t>(size);
      }
      if (r < 70) return 0;  // EOF
      // ENOBUFS: no shared buffer for a delivering receive; for a drain, its multishot
      // receive found none of its ring's entries left (the engine starts it again).
      if (r < 85) return request.mode == RecvMode::deliver || chance(50) ? -ENOBUFS : -EAGAIN;
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
    case Op::listen_poll:
    case Op::send_file_poll:
    case Op::wake:
      break;
  }
  return 0;
}

// Options::wide: every class of result for every op with even odds, so that the choices (the
// libFuzzer input) pick the class rather than the odds of a plausible network.
inline std::int32_t Fuzzer::choose_wide_result(const Request& request, const Model& m) {
  auto error = [this](std::span<const int> errors) {
    return -errors[static_cast<std::size_t>(roll(errors.size()))];
  };
  if (m.cancel_submitted && request.tag.op != Op::cancel && request.tag.op != Op::close &&
      chance(50)) {
    return -ECANCELED;
  }
  switch (request.tag.op) {
    case Op::recv: {
      const std::uint32_t max = largest_receive(request);
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
    case Op::listen_poll:
    case Op::send_file_poll:
    case Op::wake:
      break;
  }
  return 0;
}

// Completes the outstanding request at `index` with `result`.
inline void Fuzzer::deliver(std::size_t index, std::int32_t result) {
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
        // ends the connection, which disarms them): noted, the deadline kept (note_input()).
        if (!m->terminated) note_progress(*m);
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
            note_progress(*m);  // progress: the send timeout starts again, lazily
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
    case Op::listen_poll:
    case Op::send_file_poll:
    case Op::wake:
      break;
  }
  if (request.tag.op == Op::recv && result == 0) drain_eof_ = key;
  {
    CauseScope scope(*this, Cause::completion);
    engine_->on_completion(completion, now_);
  }
  drain_eof_.reset();
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
  if (request.tag.op == Op::close || unreported_close_) {
    if (!close_fired_)
      violation("on_closed not called for the close completion of " + id_text(m->id));
    pending_close_.reset();
    unreported_close_ = false;
  }
}

inline void Fuzzer::do_complete_random() {
  const auto& outstanding = io_.outstanding();
  if (outstanding.empty()) return;
  const std::size_t index = below(outstanding.size());
  const Request& request = outstanding[index];
  if (request.tag.op == Op::close && !request.fd_released && chance(40)) {
    log("the kernel runs " + fake::describe(request) + " (completion later)");
    io_.release_fd(index);
    return;
  }
  if (request.tag.op == Op::recv && request.mode == RecvMode::discard && request.max_bytes > 1 &&
      chance(25)) {
    return deliver_part(index, choose_part(request));
  }
  Model* m = find_model(request.tag);
  if (m == nullptr) return violation("outstanding request of an unknown connection");
  deliver(index, choose_result(request, *m, false));
}

// A part's size: 1 byte or more, at most kDiscardChunkBytes, and less than what the request may
// still take (its last bytes end it). The edges: the most (with a cap near, the part lands on
// it, and the final completion's one byte crosses it), and one byte.
inline std::uint32_t Fuzzer::choose_part(const Request& request) {
  const std::uint32_t most = std::min(request.max_bytes - 1, kDiscardChunkBytes);
  switch (roll(5)) {
    case 0:
      return most;
    case 1:
      return 1;
    case 2:
      return 1 + static_cast<std::uint32_t>(below(std::min<std::uint32_t>(most, 2000)));
    default:
      return 1 + static_cast<std::uint32_t>(below(most));
  }
}

// A part of the outstanding discarding recv at `index` (Completion::more, the io_uring backend's
// multishot drain): `bytes` of what it may still take, the request staying outstanding. The model
// learns it as any discarded input (the count, progress for the drain idle timer); the engine
// must keep the recv in flight (the invariants compare its in_flight bits with the fake) and
// submit nothing. A part never crosses the byte cap: the request asked for one byte more than it
// left, and a part leaves at least one (only its final completion, or a cap lowered by
// reconfigure(), which the fuzzer does not call, crosses it).
inline void Fuzzer::deliver_part(std::size_t index, std::uint32_t bytes) {
  const Request request = io_.outstanding().at(index);
  Model* m = find_model(request.tag);
  if (m == nullptr)
    return violation("outstanding request of an unknown connection: " + fake::describe(request));
  log("part of " + fake::describe(request) + " = " + std::to_string(bytes) + " (more)");
  io_.take_part(index, bytes);
  if (m->open()) return violation("a discarding recv was in flight while open");
  ++coverage_.recv_parts;
  if (m->terminated) ++coverage_.recv_parts_after_cancel;
  ++m->recv_parts;
  m->discarded += bytes;
  total_discarded_ += bytes;
  if (!m->terminated) note_progress(*m);
  const std::uint64_t submissions_before = io_.submissions();
  pending_receive_.reset();
  pending_drained_.reset();
  {
    CauseScope scope(*this, Cause::completion);
    engine_->on_completion(
        Completion{request.tag, static_cast<std::int32_t>(bytes), {}, /*more=*/true}, now_);
  }
  if (io_.submissions() != submissions_before) {
    violation("a part of " + fake::describe(request) + " submitted " +
              std::to_string(io_.submissions() - submissions_before) + " requests");
  }
}

// A completion carrying the generation of a connection that is gone: ignored, counted, and
// nothing else may change.
inline void Fuzzer::inject_stale() {
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
  if (op == Op::recv && result > 0) {
    // A part of a discarding recv (no data) is as stale as a whole completion.
    completion.more = chance(50);
    if (!completion.more) completion.data = one_byte;
  }
  log("inject stale " + std::string(fake::op_name(op)) + " for " + id_text(old.id) + " = " +
      std::to_string(result) + (completion.more ? " (more)" : ""));

  const auto slots_before = snapshot(*engine_);
  Stats stats_before = stats_;
  engine_->count_states(stats_before);
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
  Stats stats_after = stats_;
  engine_->count_states(stats_after);
  if (!same_stats(stats_after, stats_before))
    violation("a stale completion changed the stats (or was not counted)");
  if (snapshot(*engine_) != slots_before) violation("a stale completion changed a slot");
  if (io_.outstanding().size() != outstanding_before || io_.submissions() != submissions_before) {
    violation("a stale completion submitted or completed a request");
  }
  if (callback_calls_ != callbacks_before) violation("a stale completion ran a callback");
}

inline void Fuzzer::random_event() {
  const auto r = roll(115);
  if (r < 10) {
    do_adopt("adopt");
  } else if (r < 20) {
    do_send(pick_id(), random_send_size(), false, "test");
  } else if (r < 25) {
    do_send(pick_id(), random_send_size(), true, "test");
  } else if (r < 31) {
    do_close(pick_id(), "test");
  } else if (r < 33) {
    do_send_view_and_close(pick_id(), random_send_size(), "test");
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

inline nanoseconds Fuzzer::random_advance() {
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
inline void Fuzzer::finish() {
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
  engine_->count_states(stats_);  // the gauges, as Manager::stats() counts them
  if (stats_.in_state(State::free) != config_.max_connections)
    violation("not every slot is free");
  if (stats_.closed_connections() != models_.size()) {
    violation("outcomes counted " + std::to_string(stats_.closed_connections()) + " for " +
              std::to_string(models_.size()) + " adopted connections");
  }
  if (io_.fds_in_use() != 0) violation("fds still open or closing at the end");
}

}  // namespace ringlinger::detail::engine_model
