// The Manager: the ring loop, the listeners and stop(). Connection logic lives in the engine.
#include "ringlinger/manager.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <stdexcept>
#include <vector>

#include "assert.hpp"
#include "engine.hpp"
#include "ring.hpp"
#include "uring_backend.hpp"

namespace ringlinger {

using detail::Engine;
using detail::Op;
using detail::OpTag;
using namespace std::chrono_literals;

namespace {

// How long a listener waits before accepting again after an error such as EMFILE.
constexpr auto kAcceptBackoff = 100ms;
// How long the destructor waits for requests in flight to be cancelled.
constexpr auto kTeardownLimit = 2s;

// A listening socket and its multishot accept.
struct Listener {
  int fd = -1;
  std::uint32_t generation = 0;
  bool accept_in_flight = false;  // the multishot accept is armed
  bool cancel_in_flight = false;  // a cancel of that accept is in flight (pause or stop)
  Engine::TimePoint resume_at{};  // after an accept error, not before this
};

std::uint32_t completion_queue_entries(const Config& config) {
  // Room for every request that can be in flight at once (about three per connection), so the
  // completion queue does not overflow even when every connection completes in the same step.
  const std::uint64_t wanted = std::max<std::uint64_t>(std::uint64_t{config.ring_entries} * 4,
                                                       std::uint64_t{config.max_connections} * 3);
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(std::bit_ceil(wanted), 65536));
}

Config checked(const Config& config) {
  if (std::string error = config.validate(); !error.empty()) throw std::invalid_argument(error);
  return config;
}

}  // namespace

struct Manager::Impl {
  Impl(const Config& config_in, Callbacks callbacks_in)
      : config(checked(config_in)),
        callbacks(std::move(callbacks_in)),
        ring({config.ring_entries, completion_queue_entries(config), config.defer_taskrun,
              config.batch_wait_us},
             stats),
        backend(ring, config.receive_buffer_count, config.receive_buffer_bytes),
        engine(config, backend, callbacks, stats) {
    batch.reserve(completion_queue_entries(config));
  }

  ~Impl() {
    // Reset what is left and wait for every request in flight to finish, so the kernel never
    // writes into buffers unmapped below. No callbacks: the application may be gone.
    callbacks = {};
    if (engine.live_connections() == 0 && !has_open_listeners()) return;
    stop_requested.store(true);
    stop_grace_ms.store(0);
    const auto limit = Engine::Clock::now() + kTeardownLimit;
    while (run_once(10ms) && Engine::Clock::now() < limit) {
    }
  }

  // One loop step: submit and wait (one io_uring_enter), reap a batch, dispatch, timers, deferred.
  bool run_once(std::chrono::milliseconds max_wait) {
    RL_ASSERT(!in_loop && "run_once() called from a callback");
    in_loop = true;
    now = Engine::Clock::now();
    if (stop_requested.load(std::memory_order_acquire) && !stopping) begin_stop();
    if (!finished()) {
      ring.submit_and_wait(wait_time(max_wait));
      now = Engine::Clock::now();
      batch.clear();
      ring.reap(batch);
      for (const io_uring_cqe& cqe : batch) dispatch(cqe);
      engine.expire_timers(now);
      run_deferred();
    }
    in_loop = false;
    return !finished();
  }

  void dispatch(const io_uring_cqe& cqe) {
    const OpTag tag = detail::decode(cqe.user_data);
    switch (tag.op) {
      case Op::accept:
        return handle_accept(tag, cqe.res, cqe.flags);
      case Op::accept_cancel:
        return handle_accept_cancel(tag);
      case Op::recv:
      case Op::send:
      case Op::shutdown:
      case Op::cancel:
      case Op::close:
        return backend.complete(cqe, engine, now);
    }
    RL_ASSERT(false && "a completion with an unknown op in its user_data");
  }

  // Work that waits for the end of a batch: receives that found no buffer, listeners to resume,
  // the stop deadline.
  void run_deferred() {
    engine.retry_waiting_receives();
    for (std::uint32_t index = 0; index < listeners.size(); ++index) resume_if_possible(index);
    if (stopping && !stop_deadline_passed && now >= stop_deadline) {
      stop_deadline_passed = true;
      engine.abort_all(Outcome::stop_deadline, now);
    }
  }

  std::chrono::nanoseconds wait_time(std::chrono::milliseconds max_wait) const {
    auto deadline = now + max_wait;
    if (auto timer = engine.next_deadline()) deadline = std::min(deadline, *timer);
    if (stopping && !stop_deadline_passed) deadline = std::min(deadline, stop_deadline);
    for (const Listener& listener : listeners) {
      if (listener.fd >= 0 && !listener.accept_in_flight && listener.resume_at > now) {
        deadline = std::min(deadline, listener.resume_at);
      }
    }
    return std::max(deadline - now, std::chrono::nanoseconds(0));
  }

  // --- listeners -------------------------------------------------------------------------------

  SocketAddress listen(const SocketAddress& address, int backlog) {
    const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::system_error(errno, std::system_category(), "socket");
    const int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, address.data(), address.size()) != 0 || ::listen(fd, backlog) != 0) {
      const int error = errno;
      ::close(fd);
      throw std::system_error(error, std::system_category(), "listen on " + address.to_string());
    }
    auto bound = SocketAddress::local_of(fd);
    RL_ASSERT(bound.has_value());
    listeners.push_back(Listener{fd, 0, false, false, {}});
    arm_accept(static_cast<std::uint32_t>(listeners.size() - 1));
    return *bound;
  }

  void arm_accept(std::uint32_t index) {
    Listener& listener = listeners[index];
    RL_ASSERT(listener.fd >= 0 && !listener.accept_in_flight && !listener.cancel_in_flight);
    io_uring_sqe* sqe = ring.get_sqe();
    io_uring_prep_multishot_accept(sqe, listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, detail::encode({Op::accept, listener.generation, index}));
    listener.accept_in_flight = true;
  }

  // Cancels the multishot accept: the table is full, or we are stopping.
  void pause_accept(std::uint32_t index) {
    Listener& listener = listeners[index];
    if (!listener.accept_in_flight || listener.cancel_in_flight) return;
    io_uring_sqe* sqe = ring.get_sqe();
    io_uring_prep_cancel64(sqe, detail::encode({Op::accept, listener.generation, index}), 0);
    io_uring_sqe_set_data64(sqe, detail::encode({Op::accept_cancel, listener.generation, index}));
    listener.cancel_in_flight = true;
  }

  void handle_accept(OpTag tag, int result, unsigned flags) {
    Listener& listener = listeners[tag.slot];
    RL_ASSERT(listener.accept_in_flight);
    if ((flags & IORING_CQE_F_MORE) == 0) listener.accept_in_flight = false;
    if (result >= 0) {
      accept_connection(tag.slot, result);
    } else if (result != -ECANCELED) {
      ++stats.accept_errors;  // EMFILE, ENFILE, ENOMEM...: try again a little later
      listener.resume_at = now + kAcceptBackoff;
    }
    close_listener_if_done(tag.slot);
  }

  void accept_connection(std::uint32_t index, int fd) {
    std::optional<ConnectionId> id;
    if (!stopping) id = engine.adopt(fd, now);
    if (!id) {
      ::close(fd);  // full or stopping: nothing was read, nothing to lose but this connection
      ++stats.accepts_rejected;
    } else {
      ++stats.connections_accepted;
      if (callbacks.on_accept) callbacks.on_accept(*id);
    }
    if (engine.full()) pause_accept(index);
  }

  void handle_accept_cancel(OpTag tag) {
    listeners[tag.slot].cancel_in_flight = false;
    close_listener_if_done(tag.slot);
  }

  void resume_if_possible(std::uint32_t index) {
    const Listener& listener = listeners[index];
    if (stopping || listener.fd < 0 || listener.accept_in_flight || listener.cancel_in_flight ||
        engine.full() || now < listener.resume_at) {
      return;
    }
    arm_accept(index);
  }

  void close_listener_if_done(std::uint32_t index) {
    Listener& listener = listeners[index];
    if (!stopping || listener.fd < 0 || listener.accept_in_flight || listener.cancel_in_flight) {
      return;
    }
    ::close(listener.fd);  // nothing of ours is in flight on it any more
    listener.fd = -1;
  }

  bool has_open_listeners() const {
    return std::any_of(listeners.begin(), listeners.end(),
                       [](const Listener& listener) { return listener.fd >= 0; });
  }

  // --- stop ------------------------------------------------------------------------------------

  void begin_stop() {
    stopping = true;
    stop_deadline = now + std::chrono::milliseconds(stop_grace_ms.load());
    for (std::uint32_t index = 0; index < listeners.size(); ++index) {
      pause_accept(index);
      close_listener_if_done(index);
    }
    engine.close_all(now);
    if (now >= stop_deadline) {
      stop_deadline_passed = true;
      engine.abort_all(Outcome::stop_deadline, now);
    }
  }

  bool finished() const {
    return stopping && engine.live_connections() == 0 && !has_open_listeners();
  }

  const Config config;
  Callbacks callbacks;
  Stats stats;
  detail::Ring ring;
  detail::UringBackend backend;
  Engine engine;
  std::vector<Listener> listeners;
  std::vector<io_uring_cqe> batch;
  Engine::TimePoint now = Engine::Clock::now();
  bool in_loop = false;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::int64_t> stop_grace_ms{30'000};
  bool stopping = false;
  bool stop_deadline_passed = false;
  Engine::TimePoint stop_deadline{};
};

static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free,
              "stop() must be async-signal-safe");

// --- the public API: thin forwarding ---------------------------------------------------------

Manager::Manager(const Config& config, Callbacks callbacks)
    : impl_(std::make_unique<Impl>(config, std::move(callbacks))) {}

Manager::~Manager() = default;

SocketAddress Manager::listen(const SocketAddress& address, int backlog) {
  return impl_->listen(address, backlog);
}

std::optional<ConnectionId> Manager::adopt(int fd) {
  if (impl_->stopping) return std::nullopt;
  auto id = impl_->engine.adopt(fd, Engine::Clock::now());
  if (id) ++impl_->stats.connections_adopted;
  return id;
}

std::error_code Manager::send(ConnectionId id, std::string bytes) {
  return impl_->engine.send(id, std::move(bytes), Engine::Clock::now());
}

std::error_code Manager::send_view(ConnectionId id, std::span<const std::byte> bytes) {
  return impl_->engine.send_view(id, bytes, Engine::Clock::now());
}

std::error_code Manager::close(ConnectionId id) {
  return impl_->engine.close(id, Engine::Clock::now());
}

std::error_code Manager::abort(ConnectionId id) {
  return impl_->engine.abort(id, Engine::Clock::now());
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

std::string Manager::describe_ring() const { return impl_->ring.describe_flags(); }

}  // namespace ringlinger
