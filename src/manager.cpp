// The Manager: the loop step, stop(), and the choice of backend. Connection logic lives in the
// engine, kernel interfaces in the backends (uring_backend, epoll_backend).
#include "ringlinger/manager.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <cerrno>
#include <memory>
#include <stdexcept>

#include "assert.hpp"
#include "backend.hpp"
#include "engine.hpp"
#include "socket_calls.hpp"
#include "epoll_backend.hpp"
#include "uring_backend.hpp"

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

}  // namespace

struct Manager::Impl final : Backend::Host {
  Impl(const Config& config_in, Callbacks callbacks_in)
      : config(checked(config_in)),
        callbacks(std::move(callbacks_in)),
        backend(make_backend(config, stats, fallback_reason)),
        engine(config, backend->io(), callbacks, stats) {
    backend->attach(engine, *this);
  }

  ~Impl() override {
    // Reset what is left and wait for every request in flight to finish, so the kernel never
    // writes into buffers the backend unmaps. No callbacks: the application may be gone.
    callbacks = {};
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
    now = Engine::Clock::now();
    if (stop_requested.load(std::memory_order_acquire) && !stopping) begin_stop();
    if (!finished()) {
      backend->step(wait_time(max_wait), now);
      engine.expire_timers(now);
      engine.retry_waiting_receives();
      adopt_waiting();
      backend->resume_listeners(now);
      if (stopping && !stop_deadline_passed && now >= stop_deadline) {
        stop_deadline_passed = true;
        engine.abort_all(Outcome::stop_deadline, now);
      }
    }
    in_loop = false;
    return !finished();
  }

  std::chrono::nanoseconds wait_time(std::chrono::milliseconds max_wait) const {
    auto deadline = now + max_wait;
    if (auto timer = engine.next_deadline()) deadline = std::min(deadline, *timer);
    if (auto resume = backend->next_listener_deadline(now)) deadline = std::min(deadline, *resume);
    if (stopping && !stop_deadline_passed) deadline = std::min(deadline, stop_deadline);
    return std::max(deadline - now, std::chrono::nanoseconds(0));
  }

  // Backend::Host
  void on_accepted(int fd, Engine::TimePoint at) override {
    if (!stopping && engine.full() && waiting_for_slot.size() < kMaxWaitingForSlot) {
      // Kept, not closed: it is served when a slot frees up (adopt_waiting), as it would have
      // been from the kernel's backlog.
      waiting_for_slot.push_back(fd);
      ++stats.accepts_queued;
      return;
    }
    std::optional<ConnectionId> id;
    if (!stopping) id = engine.adopt(fd, at, /*nonblocking=*/true);  // both backends accept so
    if (!id) {
      reject(fd);  // stopping, or full with a full queue: nothing was read, nothing to lose
      return;
    }
    ++stats.connections_accepted;
    if (callbacks.on_accept) callbacks.on_accept(*id);
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
      on_accepted(fd, now);
    }
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

  bool finished() const {
    return stopping && engine.live_connections() == 0 && !backend->has_open_listeners() &&
           waiting_for_slot.empty();
  }

  const Config config;
  Callbacks callbacks;
  Stats stats;
  std::string fallback_reason;
  std::unique_ptr<Backend> backend;  // before the engine: the engine holds its IoPort
  Engine engine;
  Engine::TimePoint now = Engine::Clock::now();
  bool in_loop = false;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::int64_t> stop_grace_ms{30'000};
  bool stopping = false;
  bool stop_deadline_passed = false;
  // Accepted while the table was full; bounded like a listen backlog (somaxconn is 4096).
  static constexpr std::size_t kMaxWaitingForSlot = 4096;
  std::deque<int> waiting_for_slot;
  Engine::TimePoint stop_deadline{};
};

static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free,
              "stop() must be async-signal-safe");

// --- the public API: thin forwarding ---------------------------------------------------------

Manager::Manager(const Config& config, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(config, std::move(callbacks))) {}

Manager::~Manager() = default;

SocketAddress Manager::listen(const SocketAddress& address, int backlog) {
  return impl_->backend->listen(address, backlog);
}

std::optional<ConnectionId> Manager::adopt(int fd) {
  if (impl_->stopping) return std::nullopt;
  auto id = impl_->engine.adopt(fd, impl_->time());
  if (id) ++impl_->stats.connections_adopted;
  return id;
}

std::error_code Manager::send(ConnectionId id, std::string bytes) {
  return impl_->engine.send(id, std::move(bytes), impl_->time());
}

std::error_code Manager::send_view(ConnectionId id, std::span<const std::byte> bytes) {
  return impl_->engine.send_view(id, bytes, impl_->time());
}

std::error_code Manager::send_file(ConnectionId id, int file_fd, std::uint64_t offset,
                                   std::uint64_t length) {
  if (detail::Connection* connection = impl_->engine.find(id);
      connection != nullptr && connection->state == State::open && !connection->nonblocking &&
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

std::error_code Manager::close(ConnectionId id) {
  return impl_->engine.close(id, impl_->time());
}

std::error_code Manager::abort(ConnectionId id) {
  return impl_->engine.abort(id, impl_->time());
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

void Manager::stop(std::chrono::milliseconds grace) noexcept {
  impl_->stop_grace_ms.store(grace.count(), std::memory_order_relaxed);
  impl_->stop_requested.store(true, std::memory_order_release);
}

Stats Manager::stats() const { return impl_->stats; }

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
