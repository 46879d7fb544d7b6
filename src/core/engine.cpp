#include "core/engine.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <memory>
#include <utility>

#include "core/assert.hpp"
#include "core/state_machine.hpp"

namespace ringlinger::detail {
namespace {

// The most one file send asks sendfile(2) for (it sends at most 2^31 - 4096 bytes per call).
constexpr std::uint64_t kMaxFileChunk = 1u << 30;

using std::chrono::milliseconds;

// What the API calls return on success: a copy of one made once, where `{}` called
// std::system_category() (out of line in libstdc++) on every call.
const std::error_code kNoError{};

// The drain byte cap as Engine::drain_cap_ keeps it: UINT64_MAX for none (0).
std::uint64_t drain_cap(const Config& config) noexcept {
  return config.drain_max_bytes == 0 ? UINT64_MAX : config.drain_max_bytes;
}

// Errors after which the same request is simply started again.
bool is_transient(int error) noexcept {
  return error == EAGAIN || error == EINTR || error == ENOMEM || error == ENOBUFS;
}

}  // namespace

Engine::Engine(const Config& config, IoPort& io, const Callbacks& callbacks, Stats& stats)
    : config_(config),
      io_(io),
      callbacks_(callbacks),
      stats_(stats),
      slots_(config.max_connections),
      capacity_(config.max_connections),
      send_timers_(config.max_connections, milliseconds(config.send_timeout_ms)),
      drain_idle_timers_(config.max_connections, milliseconds(config.drain_idle_timeout_ms)),
      drain_total_timers_(config.max_connections, milliseconds(config.drain_timeout_ms)),
      drain_cap_(drain_cap(config)) {
  RL_ASSERT(config.validate().empty());
  for (std::uint32_t slot = 0; slot < config.max_connections; ++slot) slots_[slot].slot = slot;
  free_slots_.resize(config.max_connections);
  for (std::uint32_t slot = config.max_connections; slot-- > 0;) free_slots_[free_count_++] = slot;
}

// ---------------------------------------------------------------------------------------------
// API calls

ConnectionId Engine::adopt(int fd, TimePoint now, bool accepted) {
  if (fd < 0 || free_count_ == 0) return {};
  const std::uint32_t slot = free_slots_[--free_count_];
  Connection& connection = slots_[slot];
  RL_ASSERT(connection.state == State::free && connection.in_flight == 0);
  connection.fd = fd;
  connection.accepted = accepted;
  connection.opened_at = now;
  set_state(connection, State::open);
  stats_.peak_live_connections = std::max<std::uint64_t>(stats_.peak_live_connections,
                                                         live_connections());
  // start_receive() for a fresh slot (nothing in flight, paused or waiting): its first delivery.
  if (callbacks_.on_receive) {
    connection.mark_submitted(Op::recv);
    io_.submit_recv(tag(connection, Op::recv), connection.fd, RecvMode::deliver, 0);
  }
  return id_of(connection);
}

std::error_code Engine::send(ConnectionId id, std::string bytes, TimePoint now) {
  return enqueue(id, now, [&](SendQueue& queue) { queue.push(std::move(bytes)); });
}

std::error_code Engine::send_view(ConnectionId id, std::span<const std::byte> bytes,
                                  TimePoint now) {
  return enqueue(id, now, [&](SendQueue& queue) { queue.push_view(bytes); });
}

std::error_code Engine::send_file(ConnectionId id, int file_fd, std::uint64_t offset,
                                  std::uint64_t length, TimePoint now) {
  if (file_fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
  return enqueue(id, now,
                 [&](SendQueue& queue) { queue.push_file(file_fd, offset, length); });
}

template <class Push>
std::error_code Engine::enqueue(ConnectionId id, TimePoint now, Push&& push) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (connection->state != State::open || connection->write_side != WriteSide::open) {
    return std::make_error_code(std::errc::broken_pipe);
  }
  push(connection->send_queue);
  start_send(*connection, now);
  return kNoError;
}

std::error_code Engine::shutdown_write(ConnectionId id, TimePoint now) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (connection->state != State::open) return std::make_error_code(std::errc::broken_pipe);
  if (connection->write_side != WriteSide::open) return kNoError;  // harmless
  set_write_side(*connection, WriteSide::shutdown_requested);
  shut_write_if_flushed(*connection, now);
  return kNoError;
}

std::error_code Engine::pause_receive(ConnectionId id) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  connection->receive_paused = true;
  return kNoError;
}

std::error_code Engine::resume_receive(ConnectionId id) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (!connection->receive_paused) return kNoError;
  connection->receive_paused = false;
  if (connection->state == State::open) start_receive(*connection);
  return kNoError;
}

std::uint64_t Engine::queued_bytes(ConnectionId id) const noexcept {
  const Connection* connection = find(id);
  return connection == nullptr ? 0 : connection->send_queue.queued_bytes();
}

std::error_code Engine::close(ConnectionId id, TimePoint now) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (connection->state != State::open) return kNoError;  // already closing: harmless
  begin_close(*connection, now);
  // The FIN follows the send in flight, unless a reset is to (abort_after_send() before this).
  if (connection->is_in_flight(Op::send) && !connection->reset_after_send) {
    connection->fin_held = io_.fin_follows(tag(*connection, Op::send));
  }
  start_receive(*connection);  // keep reading (and discarding) while the queue drains
  if (!connection->is_in_flight(Op::send) && connection->send_queue.empty()) {
    flushed(*connection, now);
  }
  return kNoError;
}

// The response and the close of a server that answers once (serve's): one lookup and one call
// where send_view() and close() took two of each, and the send submitted already marked for the
// FIN, where close() amended it through fin_follows() (bench/callgrind.sh).
std::error_code Engine::send_view_and_close(ConnectionId id, std::span<const std::byte> bytes,
                                            TimePoint now) {
  return enqueue_and_close(id, now, bytes.empty(),
                           [&](SendQueue& queue) { queue.push_view(bytes); });
}

std::error_code Engine::send_and_close(ConnectionId id, std::string bytes, TimePoint now) {
  const bool empty = bytes.empty();
  return enqueue_and_close(id, now, empty,
                           [&](SendQueue& queue) { queue.push(std::move(bytes)); });
}

template <class Push>
inline std::error_code Engine::enqueue_and_close(ConnectionId id, TimePoint now, bool empty,
                                                 Push&& push) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (connection->state != State::open || connection->write_side != WriteSide::open) {
    return std::make_error_code(std::errc::broken_pipe);
  }
  const bool alone = !connection->is_in_flight(Op::send) && connection->send_queue.empty() &&
                     !empty;
  push(connection->send_queue);
  if (!alone) [[unlikely]] {
    start_send(*connection, now);
    return close(id, now);
  }
  begin_close(*connection, now);
  connection->mark_submitted(Op::send);
  if (!send_timers_.armed(slot_of(*connection))) note_progress(*connection, send_timers_, now);
  connection->fin_held = io_.submit_final_send(tag(*connection, Op::send), connection->fd,
                                               connection->send_queue.front());
  // start_receive() with the state known: flushing.
  if (!connection->is_in_flight(Op::recv) && !connection->peer_eof) submit_discard(*connection);
  return kNoError;
}

void Engine::begin_close(Connection& connection, TimePoint now) {
  connection.close_requested_at = now;
  connection.waiting_for_buffer = false;  // from now on receives discard and need no buffer
  set_state(connection, State::flushing);
}

std::error_code Engine::abort_after_send(ConnectionId id, TimePoint now) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  if (is_terminating(connection->state)) return kNoError;  // the outcome is decided: harmless
  // Our FIN tells the peer the stream is complete: once it may be out, a reset comes too late.
  if (connection->write_side == WriteSide::shut_down ||
      (connection->state != State::open && connection->state != State::flushing)) {
    return std::make_error_code(std::errc::broken_pipe);
  }
  connection->reset_after_send = true;
  if (connection->state == State::open) return close(id, now);
  return kNoError;  // flushing: flushed() waits for the acknowledgement instead of shutting down
}

std::error_code Engine::abort(ConnectionId id, TimePoint now) {
  Connection* connection = lookup(id.slot, id.generation);
  if (connection == nullptr) return std::make_error_code(std::errc::bad_file_descriptor);
  switch (connection->state) {
    case State::closing:  // the close is submitted: the fd must not be touched any more
      return kNoError;
    case State::cancelling:  // outcome decided, fd still open: make the close a reset
      if (!connection->reset_on_close) {
        io_.set_reset_on_close(connection->fd);
        connection->reset_on_close = true;
      }
      return kNoError;
    case State::open:
    case State::flushing:
    case State::shutting_down:
    case State::draining:
      terminate(*connection, Outcome::aborted, now);
      return kNoError;
    case State::free:
      break;
  }
  RL_ASSERT(false && "lookup() never returns a free slot");
  return kNoError;
}

void Engine::close_all(TimePoint now) {
  for (Connection& connection : slots_) {
    if (connection.state == State::open) (void)close(id_of(connection), now);
  }
}

void Engine::abort_all(Outcome outcome, TimePoint now) {
  RL_ASSERT(resets_on(outcome));
  for (Connection& connection : slots_) {
    if (connection.state == State::cancelling) {
      (void)abort(id_of(connection), now);  // already ending: make its close a reset too
    } else if (connection.state != State::free && connection.state != State::closing) {
      terminate(connection, outcome, now);
    }
  }
}

// Timers already armed keep their deadlines (TimerQueue::set_duration); the cap, on_timeout,
// orphan_timeout_ms and shutdown_mode are read where they apply, so they take effect at once.
void Engine::reconfigure(const Config& config) {
  RL_ASSERT(config.validate().empty() && config.max_connections == config_.max_connections);
  // Drains whose total timer begin_shutdown() left for later get it now, with the duration they
  // began under (one pass over the table, on a rare call).
  for (Connection& connection : slots_) {
    if (connection.state == State::draining) arm_drain_total_late(connection);
  }
  send_timers_.set_duration(milliseconds(config.send_timeout_ms));
  drain_idle_timers_.set_duration(milliseconds(config.drain_idle_timeout_ms));
  drain_total_timers_.set_duration(milliseconds(config.drain_timeout_ms));
  config_ = config;
  drain_cap_ = drain_cap(config);
}

// ---------------------------------------------------------------------------------------------
// Events

// The send and drain idle timers judge progress: they end a connection only after a whole period
// in which the peer acknowledged none of our bytes and sent none of its own (and, for the send
// timer, no send completed). Input and completed sends only note the time (note_input()); a
// timer that expires after such progress is armed again from it here (rearm_from_progress()).
// Acknowledgements are seen only by asking the kernel, which happens here too, when a timer
// expires with no progress seen (acknowledged_since()). The drain total timer is a hard bound.
void Engine::expire_timers(TimePoint now) {
  if (now < earliest_deadline()) return;  // most loop steps: nothing is due, and no registers
  expire_due(now);                        // are saved for the loops below
}

void Engine::expire_due(TimePoint now) {
  while (auto slot = send_timers_.pop_expired(now)) {
    if (rearm_from_progress(slots_[*slot], send_timers_, now)) continue;
    if (acknowledged_since(slots_[*slot], send_timers_, now)) {
      ++stats_.send_timeout_extensions;
    } else {
      terminate(slots_[*slot], Outcome::send_timeout, now);
    }
  }
  while (auto slot = drain_idle_timers_.pop_expired(now)) {
    Connection& connection = slots_[*slot];
    if (rearm_from_progress(connection, drain_idle_timers_, now)) {
      arm_drain_total_late(connection);
    } else if (acknowledged_since(connection, drain_idle_timers_, now)) {
      ++stats_.drain_idle_extensions;
      arm_drain_total_late(connection);
    } else {
      terminate(connection, Outcome::drain_idle_timeout, now);
    }
  }
  while (auto slot = drain_total_timers_.pop_expired(now)) {
    terminate(slots_[*slot], Outcome::drain_timeout, now);
  }
  if (!awaiting_ack_.empty() && now >= ack_poll_at_) {
    std::vector<ConnectionId> asking;
    asking.swap(awaiting_ack_);
    for (ConnectionId id : asking) {
      Connection* connection = lookup(id.slot, id.generation);
      if (connection != nullptr && connection->state == State::flushing) {
        await_acknowledgement(*connection, now);
      }
    }
  }
}

void Engine::retry_receives_now() {
  for (ConnectionId id : waiting_for_buffer_) {
    Connection* connection = lookup(id.slot, id.generation);
    if (connection == nullptr || !connection->waiting_for_buffer) continue;
    connection->waiting_for_buffer = false;
    start_receive(*connection);
  }
  waiting_for_buffer_.clear();
}

std::optional<Engine::TimePoint> Engine::next_deadline() const noexcept {
  const TimePoint earliest = earliest_deadline();
  if (earliest == TimePoint::max()) return std::nullopt;
  return earliest;
}

// The earliest of the timers' deadlines and the acknowledgement poll, TimePoint::max() for none:
// plain time points compared, where optionals over a list of the queues took 100 instructions
// per loop step (bench/callgrind.sh).
Engine::TimePoint Engine::earliest_deadline() const noexcept {
  TimePoint earliest = std::min({send_timers_.next_deadline_or_max(),
                                 drain_idle_timers_.next_deadline_or_max(),
                                 drain_total_timers_.next_deadline_or_max()});
  if (!awaiting_ack_.empty()) earliest = std::min(earliest, ack_poll_at_);
  return earliest;
}

const Connection* Engine::find(ConnectionId id) const noexcept {
  return const_cast<Engine*>(this)->lookup(id.slot, id.generation);
}

// ---------------------------------------------------------------------------------------------
// Completion handlers

// A close's three receive completions, bytes for the application, bytes to discard and the
// peer's FIN, each take a branch that ends in a tail call, so the handler saves no registers for
// them (its prologue and epilogue took 53 instructions per close). The rest, the errors and what
// a cancelled receive brought, are receive_other()'s, whose saved registers the delivery no
// longer pays (the receive handlers 88 -> 80 instructions per close, bench/callgrind.sh).
template <>
void Engine::complete<Op::recv>(Connection& connection, TimePoint now, std::int32_t result,
                                 const std::byte* data) {
  if (result > 0 && is_lingering(connection.state)) [[likely]] {
    return discard(connection, now, static_cast<std::uint32_t>(result));
  }
  if (result == 0 && connection.state == State::draining) {
    connection.peer_eof = true;
    // Nothing for finish_if_idle() after it: terminate() submitted the close, or the cancel.
    return terminate<true>(connection, Outcome::clean, now);
  }
  if (result > 0 && connection.state == State::open) return deliver(connection, now, result, data);
  return receive_other(connection, now, result);
}

// Received bytes for the application (a delivering receive is only started with on_receive).
void Engine::deliver(Connection& connection, TimePoint now, std::int32_t result,
                     const std::byte* data) {
  RL_ASSERT(callbacks_.on_receive && data != nullptr);
  const auto bytes = static_cast<std::uint32_t>(result);
  note_input(connection, now);
  connection.bytes_received += bytes;
  stats_.bytes_received += bytes;
  callbacks_.on_receive(id_of(connection), {data, bytes});  // may call close() or abort()
  if (is_terminating(connection.state)) return finish_if_idle(connection);
  start_receive(connection);
}

void Engine::receive_other(Connection& connection, TimePoint now, std::int32_t result) {
  if (result > 0) {
    // Arrived before the cancel (the open and lingering states' bytes are handled above): still
    // accounted.
    RL_ASSERT(connection.state == State::cancelling);
    note_input(connection, now);
    connection.bytes_discarded += static_cast<std::uint32_t>(result);
    stats_.bytes_discarded += static_cast<std::uint32_t>(result);
  } else if (result == 0) {
    connection.peer_eof = true;
    if (connection.state == State::open && callbacks_.on_receive) {
      callbacks_.on_receive(id_of(connection), {});
    }
    // flushing / shutting_down: remembered; on_shutdown_done() then ends cleanly.
  } else {
    const int error = -result;
    if (error == ECANCELED) {
      // We cancelled it: the connection is terminating.
    } else if (error == ENOBUFS && connection.state == State::open) {
      ++stats_.receive_buffer_waits;
      connection.waiting_for_buffer = true;
      waiting_for_buffer_.push_back(id_of(connection));
    } else if (is_transient(error)) {
      // Started again below.
    } else {
      fail(connection, error, is_peer_reset_error(error) ? Outcome::peer_reset : Outcome::receive_error, now);
    }
  }
  if (is_terminating(connection.state)) return finish_if_idle(connection);
  start_receive(connection);
}

// What follows a send of `result` bytes (0 or more), once the queue has consumed them.
inline void Engine::after_send(Connection& connection, TimePoint now, std::int32_t result) {
  if (result > 0 && !is_terminating(connection.state)) {
    if (connection.send_queue.empty()) {
      send_timers_.disarm(slot_of(connection));
    } else {
      note_input(connection, now);  // progress: the send timeout starts again (lazily)
    }
  }
  // result == 0 sent nothing: started again below; the send timer is not re-armed, so a send
  // that never progresses still times out.
  if (is_terminating(connection.state)) return finish_if_idle(connection);
  // This send is done, so the next one starts exactly when bytes are left: checked here, where a
  // call to start_send() found out for each response's last send.
  if (!connection.send_queue.empty()) return start_send(connection, now);
  if (connection.state == State::flushing) return flushed(connection, now);
  if (connection.state == State::open && result > 0) return sent_all_while_open(connection, now);
}

template <>
void Engine::complete<Op::send>(Connection& connection, TimePoint now, std::int32_t result,
                                 const std::byte*) {
  if (result < 0) [[unlikely]] return send_failed(connection, -result, now);
  if (result > 0) {
    const auto bytes = static_cast<std::uint32_t>(result);
    connection.bytes_sent += bytes;
    stats_.bytes_sent += bytes;
    if (!connection.send_queue.consume_if_inline(bytes)) {
      return sent_from_node(connection, now, bytes);
    }
  }
  after_send(connection, now, result);
}

// complete<send> for a queue in node form: the node's bytes consumed with a call (which may free
// the node), then the same as for an inline piece. Apart, so that complete<send> makes no call
// but its tail calls and saves no registers (bench/callgrind.sh: 74 -> 62 instructions per close).
void Engine::sent_from_node(Connection& connection, TimePoint now, std::uint32_t bytes) {
  connection.send_queue.consume(bytes);
  after_send(connection, now, static_cast<std::int32_t>(bytes));
}

// A send failed: ended by the error, or started again after a transient one, whose bytes are
// still queued. Out of line, like sent_all_while_open(), so that the success path makes no call.
void Engine::send_failed(Connection& connection, int error, TimePoint now) {
  if (error != ECANCELED && !is_transient(error)) {
    fail(connection, error, is_peer_reset_error(error) ? Outcome::peer_reset : Outcome::send_error, now);
  }
  if (is_terminating(connection.state)) return finish_if_idle(connection);
  start_send(connection, now);
}

// An open connection's queue emptied: a half-close asked for waits for this, and the application
// may want to know. Out of line (and a tail call), as send_failed() and sent_from_node() are:
// complete<send> saved three registers where it saved six (77 -> 71 instructions per close,
// bench/callgrind.sh), and none since the node form's call went to sent_from_node().
void Engine::sent_all_while_open(Connection& connection, TimePoint now) {
  shut_write_if_flushed(connection, now);
  if (connection.state == State::open && callbacks_.on_send_drained) {
    callbacks_.on_send_drained(id_of(connection));  // may call anything
  }
}

template <>
void Engine::complete<Op::shutdown>(Connection& connection, TimePoint now, std::int32_t result,
                                     const std::byte*) {
  if (result != -ECANCELED && !is_terminating(connection.state)) {
    on_shutdown_done(connection, result, now);
  }
  if (is_terminating(connection.state)) finish_if_idle(connection);
}

template <>
void Engine::complete<Op::cancel>(Connection& connection, TimePoint, std::int32_t,
                                   const std::byte*) {
  // The cancel's own result: how many requests it found, or -ENOENT (they had completed) or
  // -EALREADY (one was running and completes by itself). Either way we wait for their
  // completions, which the in-flight bits track.
  RL_ASSERT(connection.state == State::cancelling);
  finish_if_idle(connection);
}

template <>
void Engine::complete<Op::close>(Connection& connection, TimePoint now, std::int32_t result,
                                  const std::byte*) {
  RL_ASSERT(connection.state == State::closing && connection.in_flight == 0);
  RL_ASSERT(connection.outcome.has_value());
  CloseReport report;
  report.outcome = *connection.outcome;
  report.first_error = connection.first_error != 0 ? connection.first_error
                                                   : (result < 0 ? -result : 0);
  report.reset_sent = connection.reset_on_close;
  report.bytes_sent = connection.bytes_sent;
  report.bytes_received = connection.bytes_received;
  report.bytes_discarded = connection.bytes_discarded;
  const bool close_requested = connection.close_requested_at != TimePoint{};
  report.close_requested = close_requested;
  const bool shut_down = connection.shutdown_at != TimePoint{};
  const TimePoint end_of_open = close_requested ? connection.close_requested_at
                                                : connection.teardown_at;
  report.open_time = end_of_open - connection.opened_at;
  if (close_requested) {
    const TimePoint end_of_flush = shut_down ? connection.shutdown_at : connection.teardown_at;
    report.flush_time = end_of_flush - connection.close_requested_at;
  }
  if (shut_down) report.drain_time = connection.teardown_at - connection.shutdown_at;
  report.teardown_time = now - connection.teardown_at;
  report.bytes_unsent = connection.send_queue.queued_bytes();  // nothing in flight: final
  ++stats_.outcomes[static_cast<std::size_t>(report.outcome)];
  if (close_requested) {
    const std::chrono::nanoseconds latency = report.close_latency();
    ++stats_.close_latency_counts[close_latency_bucket(latency)];
    stats_.close_latency_sum_ns += static_cast<std::uint64_t>(latency.count());
  }

  const ConnectionId id = id_of(connection);
  release(connection);
  if (callbacks_.on_closed) callbacks_.on_closed(id, report);
}

// The completion handler of each Op, by the op table: a connection's op marks its request done
// and calls its complete<op>, each with the op's in-flight bit as a constant; an op that is not a
// connection's (its completions are the backend's) has not_a_connection_op().
template <Op op>
constexpr Engine::CompletionHandler Engine::handler_for() noexcept {
  if constexpr (belongs_to_connection(op)) {
    return [](Engine& engine, Connection& connection, TimePoint now, std::int32_t result,
              const std::byte* data) {
      RL_ASSERT(connection.is_in_flight(op));
      connection.mark_completed(op);
      engine.complete<op>(connection, now, result, data);
    };
  } else {
    return &not_a_connection_op;
  }
}

// A part of a multishot request (its op byte with kPartBit): the same complete<op>, with the
// request left in flight. Only the op table's multishot ops have parts.
template <Op op>
constexpr Engine::CompletionHandler Engine::part_handler_for() noexcept {
  if constexpr (belongs_to_connection(op) && op_def(op).multishot) {
    return [](Engine& engine, Connection& connection, TimePoint now, std::int32_t result,
              const std::byte* data) {
      RL_ASSERT(connection.is_in_flight(op) && result > 0);
      engine.complete<op>(connection, now, result, data);
    };
  } else {
    return &not_a_connection_op;
  }
}

void Engine::not_a_connection_op(Engine&, Connection&, TimePoint, std::int32_t,
                                 const std::byte*) {
  RL_ASSERT(false && "listener, backend-only and unknown ops, and parts of an op that has none, "
                     "never reach the engine");
}

// The handlers by every value of the op byte (a byte that names no Op has not_a_connection_op()),
// so that a completion is dispatched with one load and no range check or null test: 38
// instructions per completion before, with those checks and the in-flight bit from the op
// table, 23 after (bench/callgrind.sh).
constinit const std::array<Engine::CompletionHandler, 256> Engine::kHandlers =
    []<std::size_t... I>(std::index_sequence<I...>) {
      std::array<CompletionHandler, 256> handlers{handler_for<static_cast<Op>(I)>()...};
      for (std::size_t byte = sizeof...(I); byte < handlers.size(); ++byte) {
        handlers[byte] = &not_a_connection_op;
      }
      ((handlers[I | kPartBit] = part_handler_for<static_cast<Op>(I)>()), ...);
      return handlers;
    }(std::make_index_sequence<kOpCount>{});

// ---------------------------------------------------------------------------------------------
// Steps

void Engine::start_send(Connection& connection, TimePoint now) {
  if (connection.is_in_flight(Op::send) || connection.send_queue.empty()) return;
  RL_ASSERT(connection.state == State::open || connection.state == State::flushing);
  connection.mark_submitted(Op::send);
  if (!send_timers_.armed(slot_of(connection))) note_progress(connection, send_timers_, now);
  // The request last, as a tail call (here and in every step that submits one): nothing is
  // left to do after it, so the step keeps no registers across it.
  if (connection.send_queue.front_is_file()) {
    const SendQueue::FileRange range = connection.send_queue.front_file();
    const auto length = static_cast<std::uint32_t>(std::min(range.length, kMaxFileChunk));
    return io_.submit_send_file(tag(connection, Op::send), connection.fd, range.fd, range.offset,
                                length);
  }
  io_.submit_send(tag(connection, Op::send), connection.fd, connection.send_queue.front(),
                  connection.send_queue.more_after_front());
}

void Engine::submit_receive(Connection& connection) {
  switch (connection.state) {
    case State::open:
      if (!callbacks_.on_receive || connection.waiting_for_buffer || connection.receive_paused) {
        return;
      }
      connection.mark_submitted(Op::recv);
      return io_.submit_recv(tag(connection, Op::recv), connection.fd, RecvMode::deliver, 0);
    case State::flushing:
    case State::shutting_down:
    case State::draining:
      return submit_discard(connection);
    case State::free:
    case State::cancelling:
    case State::closing:
      return;
  }
}

// The drain's receive (MSG_TRUNC), of a lingering connection with none in flight.
void Engine::submit_discard(Connection& connection) {
  connection.mark_submitted(Op::recv);
  io_.submit_recv(tag(connection, Op::recv), connection.fd, RecvMode::discard,
                  drain_request_bytes(connection));
}

// Everything queued was handed to the kernel after close() (or abort_after_send()).
void Engine::flushed(Connection& connection, TimePoint now) {
  if (connection.reset_after_send) return push_then_await_acknowledgement(connection, now);
  begin_shutdown(connection, now);
}

// The drain's total timeout starts now. When SHUT_WR is done at once (here) and the total is
// longer than the idle timeout, its timer is armed only at the drain's first idle expiry
// (expire_timers(): it comes first, and most drains end well before it), to the same deadline:
// an arm and a disarm fewer per close (bench/callgrind.sh: 56 instructions).
void Engine::begin_shutdown(Connection& connection, TimePoint now) {
  RL_ASSERT(connection.state == State::flushing);
  RL_ASSERT(connection.send_queue.empty() && !connection.is_in_flight(Op::send));
  const bool now_done = connection.write_side == WriteSide::shut_down ||
                        config_.shutdown_mode == ShutdownMode::syscall;
  if (!now_done || config_.drain_timeout_ms <= config_.drain_idle_timeout_ms) {
    drain_total_timers_.arm(slot_of(connection), now);
  }
  if (connection.write_side == WriteSide::shut_down) {
    return on_shutdown_done(connection, 0, now);  // shutdown_write() did it
  }
  switch (config_.shutdown_mode) {
    case ShutdownMode::ring:
      set_state(connection, State::shutting_down);
      connection.mark_submitted(Op::shutdown);
      return io_.submit_shutdown(tag(connection, Op::shutdown), connection.fd);
    case ShutdownMode::syscall:
      ++stats_.shutdown_syscalls;
      return on_shutdown_done(connection, io_.shutdown_now(connection.fd), now);
  }
}

// shutdown_write()'s SHUT_WR, once everything queued was sent. Always the direct call: a
// half-close is rare enough that the ring's io-wq punt would buy nothing.
void Engine::shut_write_if_flushed(Connection& connection, TimePoint now) {
  if (connection.state != State::open ||
      connection.write_side != WriteSide::shutdown_requested ||
      connection.is_in_flight(Op::send) || !connection.send_queue.empty()) {
    return;
  }
  ++stats_.write_shutdowns;
  if (const int result = io_.shutdown_now(connection.fd); result < 0) {
    return fail(connection, -result,
                is_peer_reset_error(-result) ? Outcome::peer_reset : Outcome::send_error, now);
  }
  set_write_side(connection, WriteSide::shut_down);
}

inline void Engine::on_shutdown_done(Connection& connection, int result, TimePoint now) {
  if (result < 0) {
    // ENOTCONN: the peer's RST arrived before our FIN could go out.
    return fail(connection, -result, is_peer_reset_error(-result) ? Outcome::peer_reset : Outcome::send_error,
                now);
  }
  connection.shutdown_at = now;
  set_state(connection, State::draining);
  if (connection.peer_eof) return terminate(connection, Outcome::clean, now);
  note_progress(connection, drain_idle_timers_, now);
  start_receive(connection);
}

// abort_after_send(): the reset must not overtake our bytes (a reset discards what is still in
// the socket's send queue), so it waits until the peer acknowledged all of them (they are then in
// its receive queue, which an incoming reset leaves readable). No event says so: the kernel is
// asked again kAckWaitInterval after the first connection joined the list of those waiting (one
// list and one deadline for them all: no per-slot timer for a rare case); the send timer, a
// progress timer like any other, bounds the wait.
void Engine::await_acknowledgement(Connection& connection, TimePoint now) {
  RL_ASSERT(connection.state == State::flushing && connection.reset_after_send);
  const PeerAcks acks = io_.peer_acks(connection.fd, now);
  if (!acks.known || acks.all_acknowledged) return terminate(connection, Outcome::aborted, now);
  if (awaiting_ack_.empty()) ack_poll_at_ = now + kAckWaitInterval;
  awaiting_ack_.push_back(id_of(connection));
  if (!send_timers_.armed(slot_of(connection))) note_progress(connection, send_timers_, now);
}

// The first wait: what close() had the kernel hold for a FIN (IoPort::fin_follows) goes out now,
// since no FIN will come to push it (one system call, only where something was held). Out of
// line, so that flushed() stays small.
void Engine::push_then_await_acknowledgement(Connection& connection, TimePoint now) {
  if (connection.fin_held) io_.push_held(connection.fd);
  await_acknowledgement(connection, now);
}

// A drain outlived its first idle period: its total timer, if begin_shutdown() left it unarmed,
// is armed now to the deadline it would have had (the drain began when SHUT_WR was done). The
// drain total loop of expire_timers() runs after this one, so a deadline already passed still
// ends the drain in this call, as it would have.
void Engine::arm_drain_total_late(Connection& connection) {
  const std::uint32_t slot = slot_of(connection);
  if (!drain_total_timers_.armed(slot)) drain_total_timers_.arm_from(slot, connection.shutdown_at);
}

// Bytes a lingering connection received and dropped (MSG_TRUNC): progress for the drain idle
// timer, counted against the byte cap; then the next receive. A cap crossed ends the drain
// (nothing for finish_if_idle() after terminate()).
void Engine::discard(Connection& connection, TimePoint now, std::uint32_t bytes) {
  note_input(connection, now);
  connection.bytes_discarded += bytes;
  stats_.bytes_discarded += bytes;
  if (connection.bytes_discarded > drain_cap_) {
    return terminate(connection, Outcome::drain_byte_cap, now);
  }
  start_receive(connection);
}

void Engine::fail(Connection& connection, int error, Outcome outcome, TimePoint now) {
  if (connection.first_error == 0) connection.first_error = static_cast<std::uint16_t>(error);
  terminate(connection, outcome, now);
}

template <bool kDrainEnded>
void Engine::terminate(Connection& connection, Outcome outcome, TimePoint now) {
  if (is_terminating(connection.state)) return;  // the first decision stands
  RL_ASSERT(connection.state != State::free);
  connection.outcome = outcome;
  connection.teardown_at = now;
  const std::uint32_t slot = slot_of(connection);
  send_timers_.disarm(slot);
  drain_idle_timers_.disarm(slot);
  drain_total_timers_.disarm(slot);
  connection.waiting_for_buffer = false;
  if (outcome != Outcome::clean || connection.reset_after_send) [[unlikely]] {
    prepare_unclean_close(connection, outcome);
  }
  if (connection.in_flight != 0) {
    set_state(connection, State::cancelling);
    connection.mark_submitted(Op::cancel);
    return io_.submit_cancel(tag(connection, Op::cancel), connection.fd);
  }
  set_state(connection, State::closing);
  if constexpr (kDrainEnded) {
    // The usual end of a close: one completion fewer, and the report now (the fd is closed by
    // the backend's next io_uring_enter, which nothing can stop).
    if (connection.accepted &&
        io_.submit_close_unreported(tag(connection, Op::close), connection.fd)) [[likely]] {
      return complete<Op::close>(connection, now, 0, nullptr);
    }
  }
  connection.mark_submitted(Op::close);
  io_.submit_close(tag(connection, Op::close), connection.fd);
}

// terminate()'s work for any end but a clean one, out of line: a clean end tests its outcome
// once, where it asked resets_on() and is_timeout() (bench/callgrind.sh: 93 -> 89 instructions
// per close).
void Engine::prepare_unclean_close(Connection& connection, Outcome outcome) {
  if (connection.reset_after_send) std::erase(awaiting_ack_, id_of(connection));  // rare, short
  if (resets_on(outcome) || connection.reset_after_send) {
    io_.set_reset_on_close(connection.fd);
    connection.reset_on_close = true;
  } else if (is_timeout(outcome) && config_.orphan_timeout_ms > 0) {
    // Closed with FIN after a timeout: whatever is still queued may never be taken by the peer.
    io_.limit_orphan_time(connection.fd, config_.orphan_timeout_ms);
  }
}

void Engine::finish_if_idle(Connection& connection) {
  if (connection.state != State::cancelling || connection.in_flight != 0) return;
  set_state(connection, State::closing);
  connection.mark_submitted(Op::close);
  io_.submit_close(tag(connection, Op::close), connection.fd);
}

inline void Engine::release(Connection& connection) {
  const std::uint32_t generation = (connection.generation + 1) & kGenerationMask;
  const std::uint32_t slot = connection.slot;
  set_state(connection, State::free);
  // Built again in place (state free, fd -1): stores straight into the slot, where assigning a
  // Connection{} built one on the stack and copied it over (bench/callgrind.sh: 84 -> 65
  // instructions per close).
  std::destroy_at(&connection);
  std::construct_at(&connection);
  connection.generation = generation;
  connection.slot = slot;
  RL_ASSERT(free_count_ < capacity_);
  free_slots_[free_count_++] = slot;
}

// A progress timer starts: its first period runs from now.
inline void Engine::note_progress(Connection& connection, TimerQueue& timers, TimePoint now) {
  connection.progress_at = now;
  connection.progress_noted = false;
  timers.arm(slot_of(connection), now);
}

// Input, or a completed send, is progress for whichever progress timer runs (at most one does).
// Only the time is noted: the timer keeps its deadline, and when it expires, expire_timers()
// arms it again from here. Two stores per input instead of a disarm and an insert; the period
// still ends a whole timeout after the last progress (and at most 1/64 of it later).
void Engine::note_input(Connection& connection, TimePoint now) {
  connection.progress_at = now;
  connection.progress_noted = true;
}

// A progress timer expired, but the engine saw progress after its period began: a new period
// runs from that progress, with the timeout in force now (a reconfigure() in between applies to
// it, as to any timer armed after it). False when the period passed without progress seen.
bool Engine::rearm_from_progress(Connection& connection, TimerQueue& timers, TimePoint now) {
  if (!connection.progress_noted) return false;
  connection.progress_noted = false;
  return restart_period(connection, timers, now);
}

// Arms the timer to progress_at + its timeout; false if that moment has passed.
bool Engine::restart_period(Connection& connection, TimerQueue& timers, TimePoint now) {
  const TimePoint deadline = connection.progress_at + timers.duration();
  if (deadline <= now) return false;
  timers.arm_at(slot_of(connection), now, deadline);
  return true;
}

// A progress timer expired: nothing the engine sees happened for a whole period. Did the peer
// acknowledge any of our bytes since (the kernel's counter moved since it was last asked, or,
// never asked, an acknowledgement came after the period began)? Then the period restarts at that
// acknowledgement (an upper bound on its time) and the timer is armed again, returning true;
// false when the peer made no progress for the whole period: it is idle.
bool Engine::acknowledged_since(Connection& connection, TimerQueue& timers, TimePoint now) {
  const PeerAcks acks = io_.peer_acks(connection.fd, now);
  if (!acks.known) return false;
  const auto acked = static_cast<std::uint32_t>(acks.bytes_acked);
  const bool moved = connection.acked_known ? acked != connection.acked_when_asked
                                            : acks.last_ack_by > connection.progress_at;
  connection.acked_when_asked = acked;
  connection.acked_known = true;
  if (!moved) return false;
  connection.progress_at = std::max(connection.progress_at, std::min(acks.last_ack_by, now));
  return restart_period(connection, timers, now);
}

bool Engine::is_timeout(Outcome outcome) noexcept {
  return outcome == Outcome::send_timeout || outcome == Outcome::drain_idle_timeout ||
         outcome == Outcome::drain_timeout;
}

bool Engine::resets_on(Outcome outcome) const noexcept {
  switch (outcome) {
    case Outcome::aborted:
    case Outcome::stop_deadline:
      return true;
    case Outcome::send_timeout:
    case Outcome::drain_idle_timeout:
    case Outcome::drain_timeout:
      return config_.on_timeout == OnTimeout::reset;
    case Outcome::clean:
    case Outcome::peer_reset:
    case Outcome::drain_byte_cap:
    case Outcome::send_error:
    case Outcome::receive_error:
      return false;
  }
  return false;
}

// What a discarding receive may take in all its parts: one byte more than the cap allows, so
// crossing it is seen at once, and at most UINT32_MAX (the kernel's limit is 32 bits; without a
// cap, a multishot drain ends after 4 GiB and the next one starts).
std::uint32_t Engine::drain_request_bytes(const Connection& connection) const noexcept {
  const std::uint64_t left = drain_cap_ - std::min(drain_cap_, connection.bytes_discarded);
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(left, UINT32_MAX - 1) + 1);
}

// ---------------------------------------------------------------------------------------------
// Slot bookkeeping

Connection* Engine::lookup(std::uint32_t slot, std::uint32_t generation) noexcept {
  if (slot >= capacity_) return nullptr;
  Connection& connection = slots_[slot];
  if (connection.state == State::free || connection.generation != generation) return nullptr;
  return &connection;
}

ConnectionId Engine::id_of(const Connection& connection) const noexcept {
  return ConnectionId{slot_of(connection), connection.generation};
}

std::uint32_t Engine::slot_of(const Connection& connection) const noexcept {
  return connection.slot;  // the fuzzer's invariants check it against the table
}

OpTag Engine::tag(const Connection& connection, Op op) const noexcept {
  return OpTag{op, connection.generation, slot_of(connection)};
}

// The write side changes only while the connection is open (then it is part of the state
// `open`); each edge is checked against its table.
void Engine::set_write_side(Connection& connection, WriteSide to) noexcept {
  RL_ASSERT(connection.state == State::open);
  WriteSide side = connection.write_side;
  transition(side, to);
  connection.write_side = side;
}

inline void Engine::set_state(Connection& connection, State to) noexcept {
  transition(connection.state, to);
}

// The per-state gauges, counted from the table when asked (Manager::stats() and snapshot(): a
// metrics scrape, SIGUSR1, the end of a run), where keeping them current cost two counter
// updates on each state change (bench/callgrind.sh: 16 instructions per close, in adopt(),
// release(), terminate() and on_shutdown_done()). One pass over the slots: 5 instructions and a
// cache line each. bench/micro's BM_Engine_CountStates: 137 us for 20000 slots out of the
// caches, 52 us in them; 653 and 347 us for 100000.
void Engine::count_states(Stats& stats) const noexcept {
  stats.connections_in_state.fill(0);
  for (const Connection& connection : slots_) {
    ++stats.connections_in_state[static_cast<std::size_t>(connection.state)];
  }
}

}  // namespace ringlinger::detail
