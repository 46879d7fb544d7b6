// The Manager: the loop step, stop(), and the choice of backend. Connection logic lives in the
// engine, kernel interfaces in the backends (uring_backend, epoll_backend).
#include "ringlinger/manager.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <cerrno>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/assert.hpp"
#include "kernel/backend.hpp"
#include "core/engine.hpp"
#include "kernel/socket_calls.hpp"
#include "kernel/epoll_backend.hpp"
#include "kernel/uring_backend.hpp"

namespace ringlinger {

using detail::Backend;
using detail::Engine;
using namespace std::chrono_literals;

namespace {

// How long the destructor waits for requests in flight to be cancelled.
constexpr auto kTeardownLimit = 2s;

Config checked(const Config& config) {
  if (std::string error = config.validate(); !error.empty()) throw std::invalid_argument(error);
  return config;
}

// The first field reconfigure() cannot change that differs between `now` and `next`, or null:
// the ring, the slot table and the receive buffers are set up with these once.
const char* fixed_field_changed(const Config& now, const Config& next) {
  static_assert(sizeof(void*) != 8 || sizeof(Config) == 64,
                "a field was added to Config: say here whether reconfigure() may change it");
  if (next.backend != now.backend) return "backend";
  if (next.ring_entries != now.ring_entries) return "ring_entries";
  if (next.max_connections != now.max_connections) return "max_connections";
  if (next.receive_buffer_bytes != now.receive_buffer_bytes) return "receive_buffer_bytes";
  if (next.receive_buffer_count != now.receive_buffer_count) return "receive_buffer_count";
  if (next.batch_wait_us != now.batch_wait_us) return "batch_wait_us";
  if (next.defer_taskrun != now.defer_taskrun) return "defer_taskrun";
  return nullptr;
}

// The backend the configuration asks for; `automatic` falls back to epoll when io_uring cannot
// be set up, and says why in `fallback_reason`.
std::unique_ptr<Backend> make_backend(const Config& config, Stats& stats,
                                      std::string& fallback_reason) {
  switch (config.backend) {
    case IoBackend::io_uring:
      return std::make_unique<detail::UringBackend>(config, stats);
    case IoBackend::epoll:
      return std::make_unique<detail::EpollBackend>(config, stats);
    case IoBackend::automatic:
      try {
        return std::make_unique<detail::UringBackend>(config, stats);
      } catch (const std::system_error& error) {
        fallback_reason = error.what();
        stats = Stats{};  // forget what the failed setup counted
        return std::make_unique<detail::EpollBackend>(config, stats);
      }
  }
  RL_ASSERT(false && "unknown IoBackend");
  return nullptr;
}

// The pipe other threads write to wake the manager (handoff(), stop()); closed last. A pipe, not
// an eventfd: on 6.18 with DEFER_TASKRUN, a request completed by an eventfd write signals the
// ring's registered eventfd (Manager::event_fd()) only the first time (the kernel defers that
// signal when it happens inside an eventfd wakeup), so a host loop would miss every later wake.
// A pipe write wakes both a waiting ring and the host's epoll every time (docs/EMBEDDING.md).
struct WakePipe {
  WakePipe() {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      throw std::system_error(errno, std::system_category(), "pipe2");
    }
    read_fd = fds[0];
    write_fd = fds[1];
  }
  ~WakePipe() {
    ::close(read_fd);
    ::close(write_fd);
  }
  WakePipe(const WakePipe&) = delete;
  WakePipe& operator=(const WakePipe&) = delete;
  // Async-signal-safe. A full pipe (EAGAIN) already holds a pending wake.
  void signal() const noexcept {
    const char byte = 1;
    (void)!::write(write_fd, &byte, 1);
  }
  int read_fd = -1;
  int write_fd = -1;
};

// A connection given with handoff(), until the manager's thread adopts it.
struct Handoff {
  int fd;
  std::string final_bytes;
  HandoffDone on_done;
};

using Task = std::function<void()>;

// What snapshot() waits for, shared by the waiting thread and the task it posted, so that either
// may go first: the caller gives up after its wait, or the manager finishes or is destroyed with
// the task still queued (the task is then destroyed unrun, which ends the wait at once).
struct SnapshotReply {
  std::mutex mutex;
  std::condition_variable done_changed;
  std::optional<Stats> stats;  // guarded by mutex
  bool done = false;           // guarded by mutex: the task ran or was destroyed

  void finish(const Stats* read) {
    std::lock_guard lock(mutex);
    if (read != nullptr) stats = *read;
    done = true;
    done_changed.notify_all();
  }
};

// Held by the posted task only (copies of it share this): its destruction, run or not, ends the
// wait.
struct SnapshotTicket {
  explicit SnapshotTicket(std::shared_ptr<SnapshotReply> reply_in) : reply(std::move(reply_in)) {}
  ~SnapshotTicket() { reply->finish(nullptr); }
  SnapshotTicket(const SnapshotTicket&) = delete;
  SnapshotTicket& operator=(const SnapshotTicket&) = delete;
  std::shared_ptr<SnapshotReply> reply;
};

}  // namespace

struct Manager::Impl final : Backend::Host {
  Impl(const Config& config_in, Callbacks callbacks_in)
      : config(checked(config_in)),
        callbacks(std::move(callbacks_in)),
        engine_callbacks(callbacks),
        backend(make_backend(config, stats, fallback_reason)),
        engine(config, backend->io(), engine_callbacks, stats) {
    backend->attach(engine, *this);
    backend->watch_wake(wake.read_fd);
  }

  // engine_callbacks, what the engine calls, are the application's callbacks. Once a connection
  // was handed off, the close of a handed-off connection goes to its on_done instead (the
  // application never saw its id): route_closes_through_handoffs() puts a lookup in front of
  // on_closed then, not before, so a manager without handoffs calls the application's on_closed
  // straight (21 instructions per close less, bench/callgrind.sh).
  void route_closes_through_handoffs() {
    if (routing_closes_through_handoffs) return;
    routing_closes_through_handoffs = true;
    engine_callbacks.on_closed = [this](ConnectionId id, const CloseReport& report) {
      if (!handoff_done.empty()) {
        if (auto it = handoff_done.find(id.slot); it != handoff_done.end()) {
          HandoffDone done = std::move(it->second);
          handoff_done.erase(it);
          if (done) done(report);
          return;
        }
      }
      if (callbacks.on_closed) callbacks.on_closed(id, report);
    };
  }

  ~Impl() override {
    // Reset what is left and wait for every request in flight to finish, so the kernel never
    // writes into buffers the backend unmaps. No application callbacks: the application may be
    // gone. Handoffs still get their on_done (their producers wait for it).
    callbacks = {};
    route_closes_through_handoffs();  // handoffs' on_done only, from here
    engine_callbacks.on_accept = {};
    engine_callbacks.on_receive = {};
    engine_callbacks.on_send_drained = {};
    close_posting();  // no task runs in the teardown below: the application may be gone
    std::vector<Task> unrun = take_posted();  // destroyed unrun, at the end of this scope
    for (Handoff& handoff : handoffs_ready) abandon(handoff);
    handoffs_ready.clear();
    if (engine.live_connections() == 0 && !backend->has_open_listeners() &&
        waiting_for_slot.empty()) {
      return;
    }
    stop_requested.store(true);
    stop_grace_ms.store(0);
    const auto limit = Engine::Clock::now() + kTeardownLimit;
    while (run_once(10ms) && Engine::Clock::now() < limit) {
    }
  }

  // One loop step: submit and wait, dispatch completions and accepts (the backend), timers,
  // then the work that waits for the end of a batch.
  bool run_once(std::chrono::milliseconds max_wait) {
    RL_ASSERT(!in_loop && "run_once() called from a callback");
    in_loop = true;
    // snapshot() answers at once on this thread; one relaxed load per step, a store only when
    // another thread takes over.
    if (const std::thread::id self = std::this_thread::get_id();
        driver.load(std::memory_order_relaxed) != self) {
      driver.store(self, std::memory_order_relaxed);
    }
    now = Engine::Clock::now();
    if (stop_requested.load(std::memory_order_acquire) && !stopping) begin_stop();
    if (!finished()) {
      // The timers' deadline, read once for the wait and the expiry (one look at the three
      // queues fewer per step: the engine's deadline 115 -> 63 instructions per loop step,
      // bench/callgrind.sh). A timer armed during the step expires after the step's time
      // (every timeout is at least 1 ms), so nothing is due after the step that was not due
      // at this deadline.
      const Engine::TimePoint timers_due = engine.earliest_deadline();
      backend->step(wait_from(now, max_wait, timers_due), now);
      if (now >= timers_due) engine.expire_timers(now);
      engine.retry_waiting_receives();
      // Both rare, and tested here: adopt_handoffs()'s call cost 20 instructions a loop step,
      // retry_waiting_receives()'s (now tested inline) 11 (bench/callgrind.sh, 2026-12-06).
      if (!waiting_for_slot.empty()) adopt_waiting();
      if (!handoffs_ready.empty()) adopt_handoffs();
      backend->resume_listeners(now);
      if (stopping && !stop_deadline_passed && now >= stop_deadline) {
        stop_deadline_passed = true;
        engine.abort_all(Outcome::stop_deadline, now);
      }
    }
    in_loop = false;
    if (!finished()) return true;
    backend->submit_prepared();  // the last closes, unreported, run before run() returns
    if (!posting_closed_seen) close_posting();
    return false;
  }

  // The wait from `from` until the earliest of max_wait, the timers' deadline `timers_due` and
  // the listeners' and the stop's deadlines.
  std::chrono::nanoseconds wait_from(Engine::TimePoint from, std::chrono::milliseconds max_wait,
                                     Engine::TimePoint timers_due) const {
    auto deadline = std::min(from + max_wait, timers_due);
    if (auto resume = backend->next_listener_deadline(from)) deadline = std::min(deadline, *resume);
    if (stopping && !stop_deadline_passed) deadline = std::min(deadline, stop_deadline);
    return std::max(deadline - from, std::chrono::nanoseconds(0));
  }

  // Backend::Host
  bool on_accepted(int fd, Engine::TimePoint at) override {
    if (!stopping && engine.full()) {
      // Kept, not closed: it is served when a slot frees up (adopt_waiting), as it would have
      // been from the kernel's backlog. Only the io_uring backend's overshoot lands here (its
      // accept drains the backlog in the kernel; the epoll backend stops accepting when the
      // table is full): the burst accepted in one run before the pause took effect, which can
      // exceed any backlog-like bound (7538 of 8000 at once, measured); these are open sockets
      // already, bounded by RLIMIT_NOFILE.
      waiting_for_slot.push_back(fd);
      ++stats.accepts_queued;
      return false;
    }
    ConnectionId id;
    if (!stopping) id = engine.adopt(fd, at, /*accepted=*/true);  // O_NONBLOCK, as both accept
    if (!id.valid()) {
      reject(fd);  // stopping: nothing was read, nothing to lose
      return false;
    }
    ++stats.connections_accepted;
    if (callbacks.on_accept) callbacks.on_accept(id);
    return can_accept();
  }

  void reject(int fd) {
    ++stats.syscalls;
    ::close(fd);
    ++stats.accepts_rejected;
  }

  // Connections accepted while the table was full get the slots that freed up, oldest first.
  void adopt_waiting() {
    while (!waiting_for_slot.empty() && (stopping || !engine.full())) {
      const int fd = waiting_for_slot.front();
      waiting_for_slot.pop_front();
      (void)on_accepted(fd, now);  // the loop checks the table itself
    }
  }

  // --- handoff() and post() ---

  void on_wake() override {
    ++stats.handoff_wakes;
    const std::vector<Task> tasks = take_posted();
    adopt_handoffs();
    for (const Task& task : tasks) task();  // like a callback: in the loop step
  }

  // Queues what another thread gives the manager's thread; wakes it when both queues were empty
  // (it takes both at once on each wake, so a later producer needs no write until then).
  template <class Push>
  std::error_code enqueue_posted(Push&& push) {
    bool was_empty = false;
    {
      std::lock_guard lock(posted_mutex);
      if (posting_closed) return std::make_error_code(std::errc::operation_canceled);
      was_empty = handoff_queue.empty() && task_queue.empty();
      push();
    }
    if (was_empty) wake.signal();
    return {};
  }

  // Moves the queued handoffs to the manager's own list and returns the queued tasks (one lock
  // per wake, not per fd or task).
  std::vector<Task> take_posted() {
    std::vector<Handoff> taken;
    std::vector<Task> tasks;
    {
      std::lock_guard lock(posted_mutex);
      taken.swap(handoff_queue);
      tasks.swap(task_queue);
    }
    for (Handoff& handoff : taken) handoffs_ready.push_back(std::move(handoff));
    return tasks;
  }

  // The manager finished: post() fails from now on (no step will run a task). Handoffs are still
  // taken: they are closed gracefully or, once it is destroyed, reset.
  void close_posting() {
    std::lock_guard lock(posted_mutex);
    posting_closed = true;
    posting_closed_seen = true;
  }

  // The counters, with the per-state gauges counted now (the engine does not keep them).
  Stats current_stats() const {
    Stats counted = stats;
    engine.count_states(counted);
    return counted;
  }

  std::optional<Stats> snapshot(std::chrono::milliseconds wait) {
    if (driver.load(std::memory_order_relaxed) == std::this_thread::get_id()) return current_stats();
    auto reply = std::make_shared<SnapshotReply>();
    auto ticket = std::make_shared<SnapshotTicket>(reply);
    const std::error_code error = enqueue_posted([&] {
      task_queue.push_back([this, ticket] {
        const Stats counted = current_stats();
        ticket->reply->finish(&counted);
      });
    });
    if (error) return std::nullopt;
    ticket.reset();  // the queued task holds it alone now
    std::unique_lock lock(reply->mutex);
    reply->done_changed.wait_for(lock, wait, [&] { return reply->done; });
    return reply->stats;
  }

  void reconfigure(const Config& next) {
    if (std::string error = next.validate(); !error.empty()) throw std::invalid_argument(error);
    if (const char* field = fixed_field_changed(config, next)) {
      throw std::invalid_argument(std::string(field) +
                                  " cannot change while the manager runs (restart to change it)");
    }
    engine.reconfigure(next);
    config = next;
  }

  // Adopts handed-off connections while slots are free: send the final bytes, close gracefully.
  void adopt_handoffs() {
    while (!handoffs_ready.empty() && !engine.full()) {
      Handoff handoff = std::move(handoffs_ready.front());
      handoffs_ready.pop_front();
      const ConnectionId id = engine.adopt(handoff.fd, now);
      RL_ASSERT(id.valid());
      ++stats.connections_handed_off;
      route_closes_through_handoffs();
      handoff_done.emplace(id.slot, std::move(handoff.on_done));
      if (!handoff.final_bytes.empty()) (void)engine.send(id, std::move(handoff.final_bytes), now);
      (void)engine.close(id, now);
    }
  }

  // The manager is destroyed before it could take this one: reset, close, report.
  void abandon(Handoff& handoff) {
    detail::set_reset_on_close(handoff.fd, stats.syscalls);
    ++stats.syscalls;
    ::close(handoff.fd);
    CloseReport report;
    report.outcome = Outcome::aborted;
    report.reset_sent = true;
    if (handoff.on_done) handoff.on_done(report);
  }

  bool can_accept() const override {
    return !stopping && !engine.full() && waiting_for_slot.empty();
  }

  void begin_stop() {
    stopping = true;
    stop_deadline = now + std::chrono::milliseconds(stop_grace_ms.load());
    backend->close_listeners();
    engine.close_all(now);
    if (now >= stop_deadline) {
      stop_deadline_passed = true;
      engine.abort_all(Outcome::stop_deadline, now);
    }
  }

  // The time for a request made through the public API: inside a callback, the loop's clock
  // (read once per step, right after the wait: a batch takes microseconds to dispatch), saving a
  // clock read per call; outside, a fresh one.
  Engine::TimePoint time() const { return in_loop ? now : Engine::Clock::now(); }

  // engine.*request(args..., time()), for the calls a callback makes on every connection: the
  // loop's clock and a tail call, and the clock read (outside a callback) out of line, so that
  // the common case keeps nothing across a call (bench/callgrind.sh: Manager::send_view 23 -> 7,
  // Manager::close 11 -> 6 instructions per close).
  template <auto request, class... Args>
  std::error_code at_time(Args... args) {
    if (in_loop) [[likely]] return (engine.*request)(args..., now);
    return at_fresh_time<request>(args...);
  }
  template <auto request, class... Args>
  [[gnu::noinline]] std::error_code at_fresh_time(Args... args) {
    return (engine.*request)(args..., Engine::Clock::now());
  }

  bool finished() const {
    return stopping && engine.live_connections() == 0 && !backend->has_open_listeners() &&
           waiting_for_slot.empty() && handoffs_ready.empty();
  }

  Config config;  // changed by reconfigure() only
  Callbacks callbacks;
  Callbacks engine_callbacks;  // what the engine calls (route_closes_through_handoffs)
  Stats stats;
  std::string fallback_reason;
  WakePipe wake;  // before the backend: its ring reads the pipe until it is torn down
  std::unique_ptr<Backend> backend;  // before the engine: the engine holds its IoPort
  Engine engine;
  Engine::TimePoint now = Engine::Clock::now();
  bool in_loop = false;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::int64_t> stop_grace_ms{30'000};
  bool stopping = false;
  bool stop_deadline_passed = false;
  // Accepted while the table was full (on_accepted), served oldest first as slots free up.
  std::deque<int> waiting_for_slot;
  Engine::TimePoint stop_deadline{};
  // handoff() and post(): producers append under the mutex and signal `wake` when both queues
  // were empty; the manager's thread takes both whole on each wake (enqueue_posted, take_posted).
  std::mutex posted_mutex;
  std::vector<Handoff> handoff_queue;  // guarded by posted_mutex
  std::vector<Task> task_queue;        // guarded by posted_mutex
  bool posting_closed = false;         // guarded by posted_mutex: finished, post() refused
  bool posting_closed_seen = false;    // the manager's thread's copy, read without the lock
  // The thread that drives the loop: the last to call run_once() or poll(). None until then: the
  // creating thread may hand the manager to another before its first step, and a snapshot() it
  // took as "its own" would then race with that thread.
  std::atomic<std::thread::id> driver{};
  std::deque<Handoff> handoffs_ready;  // the manager's thread's: waiting for a free slot
  std::unordered_map<std::uint32_t, HandoffDone> handoff_done;  // by slot, while adopted
  bool routing_closes_through_handoffs = false;  // route_closes_through_handoffs() ran
};

static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free,
              "stop() must be async-signal-safe");

// --- the public API: thin forwarding ---------------------------------------------------------

Manager::Manager(const Config& config, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(config, std::move(callbacks))) {}

Manager::~Manager() = default;

SocketAddress Manager::listen(const SocketAddress& address, const ListenOptions& options) {
  return impl_->backend->listen(address, options);
}

SocketAddress Manager::listen(const SocketAddress& address, int backlog, bool reuse_port) {
  return listen(address, ListenOptions{.backlog = backlog, .reuse_port = reuse_port});
}

std::error_code Manager::handoff(int fd, std::string final_bytes, HandoffDone on_done) {
  if (fd < 0) return std::make_error_code(std::errc::bad_file_descriptor);
  bool was_empty = false;
  {
    std::lock_guard lock(impl_->posted_mutex);
    was_empty = impl_->handoff_queue.empty() && impl_->task_queue.empty();
    impl_->handoff_queue.push_back(Handoff{fd, std::move(final_bytes), std::move(on_done)});
  }
  // One wake per batch: the manager's thread takes the whole queue when it wakes, so later
  // producers find it non-empty and need not write until it was taken.
  if (was_empty) impl_->wake.signal();
  return {};
}

std::error_code Manager::post(std::function<void()> task) {
  if (!task) return std::make_error_code(std::errc::invalid_argument);
  return impl_->enqueue_posted([&] { impl_->task_queue.push_back(std::move(task)); });
}

std::optional<ConnectionId> Manager::adopt(int fd) {
  if (impl_->stopping) return std::nullopt;
  const ConnectionId id = impl_->engine.adopt(fd, impl_->time());
  if (!id.valid()) return std::nullopt;
  ++impl_->stats.connections_adopted;
  return id;
}

std::error_code Manager::send(ConnectionId id, std::string bytes) {
  return impl_->engine.send(id, std::move(bytes), impl_->time());
}

std::error_code Manager::send_view(ConnectionId id, std::span<const std::byte> bytes) {
  return impl_->at_time<&Engine::send_view>(id, bytes);
}

std::error_code Manager::send_view_and_close(ConnectionId id, std::span<const std::byte> bytes) {
  return impl_->at_time<&Engine::send_view_and_close>(id, bytes);
}

std::error_code Manager::send_and_close(ConnectionId id, std::string bytes) {
  return impl_->engine.send_and_close(id, std::move(bytes), impl_->time());
}

std::error_code Manager::send_file(ConnectionId id, int file_fd, std::uint64_t offset,
                                   std::uint64_t length) {
  if (detail::Connection* connection = impl_->engine.find(id);
      connection != nullptr && connection->state == State::open && !connection->accepted &&
      !connection->nonblocking &&
      file_fd >= 0 && length > 0) {
    // sendfile needs a non-blocking socket. Accepted ones are; an adopted one is asked once.
    if (const int error = detail::make_nonblocking(connection->fd, impl_->stats.syscalls);
        error < 0) {
      return std::error_code(-error, std::system_category());
    }
    connection->nonblocking = true;
  }
  return impl_->engine.send_file(id, file_fd, offset, length, impl_->time());
}

std::error_code Manager::shutdown_write(ConnectionId id) {
  return impl_->at_time<&Engine::shutdown_write>(id);
}

std::error_code Manager::pause_receive(ConnectionId id) { return impl_->engine.pause_receive(id); }

std::error_code Manager::resume_receive(ConnectionId id) {
  return impl_->engine.resume_receive(id);
}

std::uint64_t Manager::queued_bytes(ConnectionId id) const noexcept {
  return impl_->engine.queued_bytes(id);
}

std::error_code Manager::close(ConnectionId id) {
  return impl_->at_time<&Engine::close>(id);
}

std::error_code Manager::abort(ConnectionId id) {
  return impl_->at_time<&Engine::abort>(id);
}

std::error_code Manager::abort_after_send(ConnectionId id) {
  return impl_->at_time<&Engine::abort_after_send>(id);
}

int Manager::fd(ConnectionId id) const noexcept {
  const detail::Connection* connection = impl_->engine.find(id);
  return connection == nullptr ? -1 : connection->fd;
}

std::optional<State> Manager::state(ConnectionId id) const noexcept {
  const detail::Connection* connection = impl_->engine.find(id);
  if (connection == nullptr) return std::nullopt;
  return connection->state;
}

bool Manager::run_once(std::chrono::milliseconds max_wait) { return impl_->run_once(max_wait); }

void Manager::run() {
  while (impl_->run_once(1s)) {
  }
}

int Manager::event_fd() { return impl_->backend->notification_fd(); }

bool Manager::poll() {
  // Cleared before the step: whatever is signalled from here on is seen by the host's next wait.
  impl_->backend->clear_notification();
  return impl_->run_once(std::chrono::milliseconds(0));
}

std::chrono::milliseconds Manager::poll_timeout(std::chrono::milliseconds max) const {
  const Impl& impl = *impl_;
  if (impl.stop_requested.load(std::memory_order_acquire) && !impl.stopping) return {};
  if (impl.backend->has_unsubmitted_work()) return {};
  if (!impl.engine.full() && (!impl.handoffs_ready.empty() || !impl.waiting_for_slot.empty())) {
    return {};
  }
  const auto wait = impl.wait_from(Engine::Clock::now(), max, impl.engine.earliest_deadline());
  return std::chrono::ceil<std::chrono::milliseconds>(wait);  // never wake just before a timer
}

void Manager::stop(std::chrono::milliseconds grace) noexcept {
  impl_->stop_grace_ms.store(grace.count(), std::memory_order_relaxed);
  impl_->stop_requested.store(true, std::memory_order_release);
  impl_->wake.signal();  // write(2): async-signal-safe; ends a wait in run() or the host's loop
}

Stats Manager::stats() const { return impl_->current_stats(); }

std::optional<Stats> Manager::snapshot(std::chrono::milliseconds wait) const {
  return impl_->snapshot(wait);
}

void Manager::reconfigure(const Config& config) { impl_->reconfigure(config); }

const Config& Manager::config() const noexcept { return impl_->config; }

IoBackend Manager::backend() const noexcept {
  return dynamic_cast<const detail::UringBackend*>(impl_->backend.get()) != nullptr
             ? IoBackend::io_uring
             : IoBackend::epoll;
}

std::string Manager::describe_backend() const {
  std::string text = impl_->backend->describe();
  if (!impl_->fallback_reason.empty()) text += " (io_uring unavailable: " + impl_->fallback_reason + ")";
  return text;
}

}  // namespace ringlinger
