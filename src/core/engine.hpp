// The engine: every connection's state machine, driven by API calls, completions and timers,
// talking to the kernel only through an IoPort. It knows nothing of io_uring, so the same logic
// runs on the ring, on epoll, and under the test fuzzer's fake completions.
//
// Every completion handler opens the same way: the request was in flight -> mark it done ->
// handle the result -> if the connection is terminating, finish_if_idle() (the single step that
// submits the close once nothing is in flight) -> otherwise start what the state needs next.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "core/assert.hpp"
#include "core/connection.hpp"
#include "core/io_port.hpp"
#include "ringlinger/config.hpp"
#include "ringlinger/connection_id.hpp"
#include "ringlinger/manager.hpp"
#include "ringlinger/stats.hpp"
#include "core/timer_queue.hpp"

namespace ringlinger::detail {

class Engine {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  // `config` must be valid; `io`, `callbacks` and `stats` must outlive the engine.
  //
  // Time never goes back: every call's `now` is at or after the one before it (the timer queues
  // append in deadline order, and TimerQueue asserts it). The Manager's times are steady_clock
  // reads, the loop's once per step and a fresh one for a call outside the loop, so they never
  // do. Taken as given, not checked per call: a clamp to the latest time seen, in every
  // completion and API call, cost 14 instructions per close (bench/callgrind.sh).
  Engine(const Config& config, IoPort& io, const Callbacks& callbacks, Stats& stats);

  // API calls (see Manager for their contracts).
  // `accepted`: the manager's listener accepted it, O_NONBLOCK (Connection::accepted). An invalid
  // ConnectionId when refused (no free slot, or no fd): 8 bytes returned in a register, where
  // an optional was built on the stack and read back (bench/callgrind.sh: 66 -> 59 instructions
  // per accept).
  ConnectionId adopt(int fd, TimePoint now, bool accepted = false);
  std::error_code send(ConnectionId id, std::string bytes, TimePoint now);
  // Out of line, with enqueue() in it: the Manager's call is then a tail call with the bytes in
  // registers, where inlined it kept them in a frame of its own for enqueue() (bench/callgrind.sh).
  [[gnu::noinline]] std::error_code send_view(ConnectionId id, std::span<const std::byte> bytes,
                                              TimePoint now);
  std::error_code send_file(ConnectionId id, int file_fd, std::uint64_t offset,
                            std::uint64_t length, TimePoint now);
  std::error_code shutdown_write(ConnectionId id, TimePoint now);
  std::error_code pause_receive(ConnectionId id);
  std::error_code resume_receive(ConnectionId id);
  std::uint64_t queued_bytes(ConnectionId id) const noexcept;
  std::error_code close(ConnectionId id, TimePoint now);
  // send_view() then close(), in one lookup: with nothing queued or in flight before them, the
  // bytes go out in a send the FIN follows (IoPort::submit_final_send), otherwise as the two
  // calls would send them. Errors as send_view()'s; then nothing is queued or closed.
  // Out of line with enqueue_and_close() in it, as send_view() is with enqueue(): the Manager's
  // call is a tail call (bench/callgrind.sh: 26 more per close when it was inlined there).
  [[gnu::noinline]] std::error_code send_view_and_close(ConnectionId id,
                                                        std::span<const std::byte> bytes,
                                                        TimePoint now);
  // The same with owned bytes (send() then close()).
  std::error_code send_and_close(ConnectionId id, std::string bytes, TimePoint now);
  std::error_code abort(ConnectionId id, TimePoint now);
  std::error_code abort_after_send(ConnectionId id, TimePoint now);
  // close() on every open connection.
  void close_all(TimePoint now);
  // Ends every connection not yet terminating with `outcome`, with RST.
  void abort_all(Outcome outcome, TimePoint now);
  // Manager::reconfigure(): new timeouts and caps (`config` valid, its fixed fields unchanged).
  void reconfigure(const Config& config);

  // Events.
  // A request's completion, its parts in registers down to the op's handler: the backend's
  // completion loop builds no Completion in memory, and the handlers load nothing from one
  // (bench/callgrind.sh: UringBackend::step 165 -> 133 instructions per close, on_completion and
  // the handlers +7).
  // `data`: for a delivering recv, the `result` bytes received (valid while the completion is
  // handled), else unused. A tag with kPartBit is a part of a multishot request, which stays in
  // flight (user_data.hpp). `now` comes second here and in every handler, so that the handlers'
  // tail calls move no registers.
  // Inline in the backends' completion loops: a call and its argument moves fewer per
  // completion (bench/callgrind.sh).
  //
  // lookup() without its look at the state: a tag's generation names one connection of its slot
  // (release() moves the slot to a generation no tag has yet, and a free slot submits nothing),
  // so a free slot's generation never matches; were one to, the handler's in-flight assertion
  // would stop it (a free slot has nothing in flight). The range check stays: the tag came back
  // from the kernel.
  void on_completion(OpTag tag, TimePoint now, std::int32_t result, const std::byte* data) {
    if (tag.slot >= capacity_ || slots_[tag.slot].generation != tag.generation) [[unlikely]] {
      ++stats_.stale_completions;
      return;
    }
    kHandlers[static_cast<std::uint8_t>(tag.op)](*this, slots_[tag.slot], now, result, data);
  }
  void on_completion(const Completion& completion, TimePoint now) {
    RL_ASSERT(completion.data.empty() ||
              completion.data.size() == static_cast<std::size_t>(completion.result));
    on_completion(completion.more ? as_part(completion.tag) : completion.tag, now,
                  completion.result, completion.data.data());
  }
  void expire_timers(TimePoint now);
  // Restarts delivering receives that found no shared buffer. Inline: once a loop step, and
  // almost always none is waiting.
  void retry_waiting_receives() {
    if (!waiting_for_buffer_.empty()) retry_receives_now();
  }
  // The earliest timer deadline, if any.
  std::optional<TimePoint> next_deadline() const noexcept;
  // The same, with TimePoint::max() for none.
  TimePoint earliest_deadline() const noexcept;

  // Queries.
  const Connection* find(ConnectionId id) const noexcept;
  Connection* find(ConnectionId id) noexcept { return lookup(id.slot, id.generation); }
  std::size_t live_connections() const noexcept { return capacity_ - free_count_; }
  bool full() const noexcept { return free_count_ == 0; }
  std::uint32_t capacity() const noexcept { return capacity_; }
  // Sets stats.connections_in_state from the table (the engine does not keep it current).
  void count_states(Stats& stats) const noexcept;
  // Every slot, for invariant checks in tests.
  const std::vector<Connection>& slots() const noexcept { return slots_; }

 private:
  void retry_receives_now();
  // The part of send() and send_view() they share; `push` adds the bytes to the queue.
  template <class Push>
  std::error_code enqueue(ConnectionId id, TimePoint now, Push&& push);
  // The part of send_view_and_close() and send_and_close() they share; `empty`: no bytes.
  template <class Push>
  [[gnu::always_inline]] std::error_code enqueue_and_close(ConnectionId id, TimePoint now,
                                                           bool empty, Push&& push);
  Connection* lookup(std::uint32_t slot, std::uint32_t generation) noexcept;
  ConnectionId id_of(const Connection& connection) const noexcept;
  std::uint32_t slot_of(const Connection& connection) const noexcept;
  OpTag tag(const Connection& connection, Op op) const noexcept;
  // Inlined everywhere (always_inline): each caller's target state is a constant, and the
  // transition's check is then one bit test (state_machine.hpp).
  [[gnu::always_inline]] void set_state(Connection& connection, State to) noexcept;
  void set_write_side(Connection& connection, WriteSide to) noexcept;

  // Completion handlers: one per connection Op of the op table (op_table.hpp), each an explicit
  // specialization in engine.cpp (a connection op without one does not compile). on_completion()
  // calls them through a table built from the op table, so a new connection op needs its row
  // there and its handler, nothing else.
  template <Op op>
  void complete(Connection& connection, TimePoint now, std::int32_t result,
                const std::byte* data) = delete;
  using CompletionHandler = void (*)(Engine&, Connection&, TimePoint now, std::int32_t result,
                                     const std::byte* data);
  template <Op op>
  static constexpr CompletionHandler handler_for() noexcept;
  template <Op op>
  static constexpr CompletionHandler part_handler_for() noexcept;
  static void not_a_connection_op(Engine&, Connection&, TimePoint, std::int32_t, const std::byte*);
  // The handlers by every value of the op byte (engine.cpp).
  static const std::array<CompletionHandler, 256> kHandlers;

  // expire_timers() once something is due.
  [[gnu::noinline]] void expire_due(TimePoint now);

  // Steps.
  void start_send(Connection& connection, TimePoint now);
  // Starts the receive the state calls for, unless one is in flight or the peer's FIN came: that
  // check inline at each caller (most calls find a receive in flight), the rest in
  // submit_receive().
  void start_receive(Connection& connection) {
    if (!connection.is_in_flight(Op::recv) && !connection.peer_eof) submit_receive(connection);
  }
  void submit_receive(Connection& connection);
  void submit_discard(Connection& connection);
  // close()'s work on an open connection, after its lookup (shared with send_view_and_close()).
  void begin_close(Connection& connection, TimePoint now);
  void flushed(Connection& connection, TimePoint now);
  void send_failed(Connection& connection, int error, TimePoint now);
  [[gnu::noinline]] void sent_from_node(Connection& connection, TimePoint now,
                                        std::uint32_t bytes);
  [[gnu::always_inline]] void after_send(Connection& connection, TimePoint now,
                                         std::int32_t result);
  void sent_all_while_open(Connection& connection, TimePoint now);
  void begin_shutdown(Connection& connection, TimePoint now);
  [[gnu::noinline]] void push_then_await_acknowledgement(Connection& connection, TimePoint now);
  void await_acknowledgement(Connection& connection, TimePoint now);
  void shut_write_if_flushed(Connection& connection, TimePoint now);
  // Inlined (always_inline) in begin_shutdown(), where the shutdown(2) of almost every close is
  // done, and in complete<shutdown>.
  [[gnu::always_inline]] void on_shutdown_done(Connection& connection, int result, TimePoint now);
  void arm_drain_total_late(Connection& connection);
  // The receive's handlers take `now` second, as complete<op>() does: its tail calls to them
  // move no registers.
  void discard(Connection& connection, TimePoint now, std::uint32_t bytes);
  void deliver(Connection& connection, TimePoint now, std::int32_t result, const std::byte* data);
  void receive_other(Connection& connection, TimePoint now, std::int32_t result);
  void fail(Connection& connection, int error, Outcome outcome, TimePoint now);
  // The outcome is decided: cancel what is in flight, then close. kDrainEnded: called by the
  // drain's receive completion for the peer's FIN, with no application call on the stack, so the
  // close may go without a completion and be reported at once (IoPort::submit_close_unreported).
  // Out of line: complete<recv>, which calls it for the peer's FIN, stays a function of tail
  // calls that saves no registers.
  template <bool kDrainEnded = false>
  [[gnu::noinline]] void terminate(Connection& connection, Outcome outcome, TimePoint now);
  [[gnu::noinline]] void prepare_unclean_close(Connection& connection, Outcome outcome);
  void finish_if_idle(Connection& connection);
  // Inlined (always_inline) in complete<close>, its one caller.
  [[gnu::always_inline]] void release(Connection& connection);
  bool resets_on(Outcome outcome) const noexcept;
  static bool is_timeout(Outcome outcome) noexcept;
  // Inlined (always_inline): a few stores and an append to a timer lane.
  [[gnu::always_inline]] void note_progress(Connection& connection, TimerQueue& timers,
                                            TimePoint now);
  void note_input(Connection& connection, TimePoint now);
  bool rearm_from_progress(Connection& connection, TimerQueue& timers, TimePoint now);
  bool restart_period(Connection& connection, TimerQueue& timers, TimePoint now);
  bool acknowledged_since(Connection& connection, TimerQueue& timers, TimePoint now);
  std::uint32_t drain_request_bytes(const Connection& connection) const noexcept;

  Config config_;  // changed by reconfigure() only
  IoPort& io_;
  const Callbacks& callbacks_;
  Stats& stats_;
  std::vector<Connection> slots_;
  // slots_.size(), kept: the vector's size is a division by sizeof(Connection), on every lookup.
  const std::uint32_t capacity_;
  // A stack of the free slots, the most recently freed on top (reused first): its first
  // free_count_ entries. Sized for every slot, so pushing never grows it.
  std::vector<std::uint32_t> free_slots_;
  std::uint32_t free_count_ = 0;
  std::vector<ConnectionId> waiting_for_buffer_;
  TimerQueue send_timers_;
  TimerQueue drain_idle_timers_;
  TimerQueue drain_total_timers_;
  // abort_after_send(): connections waiting for the peer's acknowledgement of everything, and
  // when to ask the kernel again (kAckWaitInterval after the first one joined).
  std::vector<ConnectionId> awaiting_ack_;
  TimePoint ack_poll_at_{};
  // config_.drain_max_bytes, or UINT64_MAX for none (0): one compare per discard, where the
  // cap's 0 was tested first (bench/callgrind.sh). Set with config_, and only with it.
  std::uint64_t drain_cap_;
};

// Largest receive of a drain, or part of a multishot one. With MSG_TRUNC nothing is copied, so a
// large receive means fewer completions for a peer that keeps sending.
inline constexpr std::uint32_t kDiscardChunkBytes = 256 * 1024;

// How often abort_after_send() asks the kernel whether the peer acknowledged everything (no event
// says so). The send timeout bounds the wait.
inline constexpr std::chrono::milliseconds kAckWaitInterval{5};

}  // namespace ringlinger::detail
