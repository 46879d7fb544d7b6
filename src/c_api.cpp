// The C API (include/ringlinger/ringlinger.h) over the public C++ API: conversions of structs,
// ids and errors, and a catch around every call so that no C++ exception reaches C.
#include "ringlinger/ringlinger.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "ringlinger/manager.hpp"

namespace rl = ringlinger;

// The header's constants are the C++ enums' values.
static_assert(RL_OUTCOME_COUNT == rl::kOutcomeCount && RL_OUTCOME_COUNT <= RL_OUTCOME_SLOTS);
static_assert(RL_OUTCOME_CLEAN == static_cast<int>(rl::Outcome::clean));
static_assert(RL_OUTCOME_PEER_RESET == static_cast<int>(rl::Outcome::peer_reset));
static_assert(RL_OUTCOME_DRAIN_IDLE_TIMEOUT == static_cast<int>(rl::Outcome::drain_idle_timeout));
static_assert(RL_OUTCOME_DRAIN_TIMEOUT == static_cast<int>(rl::Outcome::drain_timeout));
static_assert(RL_OUTCOME_DRAIN_BYTE_CAP == static_cast<int>(rl::Outcome::drain_byte_cap));
static_assert(RL_OUTCOME_SEND_TIMEOUT == static_cast<int>(rl::Outcome::send_timeout));
static_assert(RL_OUTCOME_SEND_ERROR == static_cast<int>(rl::Outcome::send_error));
static_assert(RL_OUTCOME_RECEIVE_ERROR == static_cast<int>(rl::Outcome::receive_error));
static_assert(RL_OUTCOME_ABORTED == static_cast<int>(rl::Outcome::aborted));
static_assert(RL_OUTCOME_STOP_DEADLINE == static_cast<int>(rl::Outcome::stop_deadline));
static_assert(RL_CLOSE_LATENCY_BUCKETS == rl::kCloseLatencyBuckets);
static_assert(RL_BACKEND_AUTOMATIC == static_cast<int>(rl::IoBackend::automatic));
static_assert(RL_BACKEND_IO_URING == static_cast<int>(rl::IoBackend::io_uring));
static_assert(RL_BACKEND_EPOLL == static_cast<int>(rl::IoBackend::epoll));
static_assert(RL_ON_TIMEOUT_CLOSE == static_cast<int>(rl::OnTimeout::close));
static_assert(RL_ON_TIMEOUT_RESET == static_cast<int>(rl::OnTimeout::reset));
static_assert(RL_SHUTDOWN_SYSCALL == static_cast<int>(rl::ShutdownMode::syscall));
static_assert(RL_SHUTDOWN_RING == static_cast<int>(rl::ShutdownMode::ring));

// A manager and the C callbacks its C++ callbacks forward to.
struct rl_manager {
  rl_manager(const rl::Config& config, const rl_callbacks& c_callbacks)
      : callbacks(c_callbacks), manager(config, forwarding_callbacks()) {}

  // Runs a C callback, counting the depth so that poll/run_once from inside one is refused.
  template <class F>
  void call(F&& f) noexcept {
    ++callback_depth;
    f();
    --callback_depth;
  }

  rl::Callbacks forwarding_callbacks();

  rl_callbacks callbacks;
  int callback_depth = 0;  // only touched on the manager's thread
  rl::Manager manager;     // last: destroyed first, while `callbacks` is still there
};

namespace {

// What each version of a struct must hold at least: up to the end of its last field in the
// first version. A later version appends fields and leaves these as they are.
constexpr std::size_t kConfigSizeV1 = offsetof(rl_config, defer_taskrun) + sizeof(int);
constexpr std::size_t kCallbacksSizeV1 =
    offsetof(rl_callbacks, on_send_drained) + sizeof(rl_callbacks::on_send_drained);
constexpr std::size_t kStatsSizeV1 = offsetof(rl_stats, stale_completions) + sizeof(std::uint64_t);

rl_conn_id to_c(rl::ConnectionId id) noexcept {
  return (static_cast<rl_conn_id>(id.generation) << 32) | id.slot;
}

rl::ConnectionId from_c(rl_conn_id id) noexcept {
  return rl::ConnectionId{static_cast<std::uint32_t>(id & 0xffffffffu),
                          static_cast<std::uint32_t>(id >> 32)};
}

// Writes `text` to `out` as a terminated string of at most `length` bytes (nothing if NULL or 0).
void write_text(char* out, std::size_t length, std::string_view text) noexcept {
  if (out == nullptr || length == 0) return;
  const std::size_t n = std::min(length - 1, text.size());
  std::memcpy(out, text.data(), n);
  out[n] = '\0';
}

// A negative errno for an error code of the C++ API.
int to_errno(std::error_code error) noexcept {
  if (!error) return 0;
  if (error.category() == std::generic_category() || error.category() == std::system_category()) {
    return error.value() > 0 ? -error.value() : -EIO;
  }
  const std::error_condition condition = error.default_error_condition();
  if (condition.category() == std::generic_category() && condition.value() > 0) {
    return -condition.value();
  }
  return -EIO;
}

// Runs `f`, turning any exception into a negative errno (and a message, when asked for one).
template <class F>
int guarded(F&& f, std::string* message = nullptr) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    if (message != nullptr) *message = "out of memory";
    return -ENOMEM;
  } catch (const std::system_error& error) {
    try {
      if (message != nullptr) *message = error.what();
    } catch (...) {
    }
    const int code = to_errno(error.code());
    return code < 0 ? code : -EIO;
  } catch (const std::invalid_argument& error) {
    try {
      if (message != nullptr) *message = error.what();
    } catch (...) {
    }
    return -EINVAL;
  } catch (const std::exception& error) {
    try {
      if (message != nullptr) *message = error.what();
    } catch (...) {
    }
    return -EIO;
  } catch (...) {
    if (message != nullptr) *message = "unknown error";
    return -EIO;
  }
}

rl_config to_c(const rl::Config& config) noexcept {
  rl_config c{};
  c.size = sizeof(rl_config);
  c.backend = static_cast<int>(config.backend);
  c.drain_idle_timeout_ms = config.drain_idle_timeout_ms;
  c.drain_timeout_ms = config.drain_timeout_ms;
  c.drain_max_bytes = config.drain_max_bytes;
  c.send_timeout_ms = config.send_timeout_ms;
  c.on_timeout = static_cast<int>(config.on_timeout);
  c.orphan_timeout_ms = config.orphan_timeout_ms;
  c.shutdown_mode = static_cast<int>(config.shutdown_mode);
  c.ring_entries = config.ring_entries;
  c.max_connections = config.max_connections;
  c.receive_buffer_bytes = config.receive_buffer_bytes;
  c.receive_buffer_count = config.receive_buffer_count;
  c.batch_wait_us = config.batch_wait_us;
  c.defer_taskrun = config.defer_taskrun ? 1 : 0;
  return c;
}

// The C++ Config of a caller's rl_config (NULL: the defaults); empty when valid, otherwise the
// message naming the first bad field. The enum fields are checked here, before they are
// narrowed to the C++ enums' 8 bits (where 256 would become a valid 0).
std::string from_c(const rl_config* in, rl::Config& out) {
  out = rl::Config{};
  if (in == nullptr) return {};
  if (in->size < kConfigSizeV1) {
    return "rl_config.size must be at least " + std::to_string(kConfigSizeV1) + " (got " +
           std::to_string(in->size) + "): initialise it with rl_config_init()";
  }
  rl_config c = to_c(out);
  std::memcpy(&c, in, std::min(in->size, sizeof c));  // fields past the caller's: defaults
  if (c.backend < 0 || c.backend > RL_BACKEND_EPOLL) {
    return "backend must be automatic, io_uring or epoll (got " + std::to_string(c.backend) + ")";
  }
  if (c.on_timeout < 0 || c.on_timeout > RL_ON_TIMEOUT_RESET) {
    return "on_timeout must be close or reset (got " + std::to_string(c.on_timeout) + ")";
  }
  if (c.shutdown_mode < 0 || c.shutdown_mode > RL_SHUTDOWN_RING) {
    return "shutdown_mode must be syscall or ring (got " + std::to_string(c.shutdown_mode) + ")";
  }
  out.backend = static_cast<rl::IoBackend>(c.backend);
  out.drain_idle_timeout_ms = c.drain_idle_timeout_ms;
  out.drain_timeout_ms = c.drain_timeout_ms;
  out.drain_max_bytes = c.drain_max_bytes;
  out.send_timeout_ms = c.send_timeout_ms;
  out.on_timeout = static_cast<rl::OnTimeout>(c.on_timeout);
  out.orphan_timeout_ms = c.orphan_timeout_ms;
  out.shutdown_mode = static_cast<rl::ShutdownMode>(c.shutdown_mode);
  out.ring_entries = c.ring_entries;
  out.max_connections = c.max_connections;
  out.receive_buffer_bytes = c.receive_buffer_bytes;
  out.receive_buffer_count = c.receive_buffer_count;
  out.batch_wait_us = c.batch_wait_us;
  out.defer_taskrun = c.defer_taskrun != 0;
  return out.validate();
}

std::uint64_t nanoseconds(std::chrono::nanoseconds duration) noexcept {
  return duration.count() < 0 ? 0 : static_cast<std::uint64_t>(duration.count());
}

rl_close_report to_c(const rl::CloseReport& report) noexcept {
  rl_close_report c{};
  c.size = sizeof(rl_close_report);
  c.outcome = static_cast<int>(report.outcome);
  c.first_error = report.first_error;
  c.reset_sent = report.reset_sent ? 1 : 0;
  c.close_requested = report.close_requested ? 1 : 0;
  c.bytes_sent = report.bytes_sent;
  c.bytes_received = report.bytes_received;
  c.bytes_discarded = report.bytes_discarded;
  c.open_time_ns = nanoseconds(report.open_time);
  c.flush_time_ns = nanoseconds(report.flush_time);
  c.drain_time_ns = nanoseconds(report.drain_time);
  c.teardown_time_ns = nanoseconds(report.teardown_time);
  c.bytes_unsent = report.bytes_unsent;
  return c;
}

// Writes `s` to the first stats->size bytes of `stats` (the rest of a larger struct: 0).
void write_stats(const rl::Stats& s, rl_stats* stats) noexcept {
  const std::size_t size = stats->size;
  rl_stats c{};
  c.size = size;
  for (std::size_t i = 0; i < rl::kOutcomeCount; ++i) c.outcomes[i] = s.outcomes[i];
  c.closed_connections = s.closed_connections();
  c.live_connections = s.live_connections();
  c.peak_live_connections = s.peak_live_connections;
  c.connections_accepted = s.connections_accepted;
  c.connections_adopted = s.connections_adopted;
  c.connections_handed_off = s.connections_handed_off;
  c.handoff_wakes = s.handoff_wakes;
  c.accepts_rejected = s.accepts_rejected;
  c.accepts_queued = s.accepts_queued;
  c.accept_errors = s.accept_errors;
  c.bytes_sent = s.bytes_sent;
  c.bytes_received = s.bytes_received;
  c.bytes_discarded = s.bytes_discarded;
  c.syscalls = s.syscalls;
  c.enter_calls = s.enter_calls;
  c.shutdown_syscalls = s.shutdown_syscalls;
  c.write_shutdowns = s.write_shutdowns;
  c.submissions = s.submissions;
  c.completions = s.completions;
  c.sq_full_submits = s.sq_full_submits;
  c.cq_overflows = s.cq_overflows;
  c.drain_idle_extensions = s.drain_idle_extensions;
  c.send_timeout_extensions = s.send_timeout_extensions;
  c.receive_buffer_waits = s.receive_buffer_waits;
  c.stale_completions = s.stale_completions;
  for (std::size_t i = 0; i < rl::kCloseLatencyBuckets; ++i) {
    c.close_latency_counts[i] = s.close_latency_counts[i];
  }
  c.close_latency_sum_ns = s.close_latency_sum_ns;
  std::memcpy(stats, &c, std::min(size, sizeof c));
  if (size > sizeof c) std::memset(reinterpret_cast<char*>(stats) + sizeof c, 0, size - sizeof c);
}

}  // namespace

// Only the callbacks the caller set: an unset on_receive means "do not read before close".
rl::Callbacks rl_manager::forwarding_callbacks() {
  rl::Callbacks out;
  if (callbacks.on_accept != nullptr) {
    out.on_accept = [this](rl::ConnectionId id) {
      call([&] { callbacks.on_accept(callbacks.user, to_c(id)); });
    };
  }
  if (callbacks.on_receive != nullptr) {
    out.on_receive = [this](rl::ConnectionId id, std::span<const std::byte> data) {
      call([&] { callbacks.on_receive(callbacks.user, to_c(id), data.data(), data.size()); });
    };
  }
  if (callbacks.on_closed != nullptr) {
    out.on_closed = [this](rl::ConnectionId id, const rl::CloseReport& report) {
      const rl_close_report c = to_c(report);
      call([&] { callbacks.on_closed(callbacks.user, to_c(id), &c); });
    };
  }
  if (callbacks.on_send_drained != nullptr) {
    out.on_send_drained = [this](rl::ConnectionId id) {
      call([&] { callbacks.on_send_drained(callbacks.user, to_c(id)); });
    };
  }
  return out;
}

extern "C" {

const char* rl_outcome_name(int outcome) {
  if (outcome < 0 || static_cast<std::size_t>(outcome) >= rl::kOutcomeCount) return nullptr;
  return rl::to_string(static_cast<rl::Outcome>(outcome)).data();  // literals: terminated
}

void rl_config_init_sized(rl_config* config, size_t size) {
  if (config == nullptr || size < sizeof config->size) return;
  rl_config c = to_c(rl::Config{});
  c.size = size;
  std::memcpy(config, &c, std::min(size, sizeof c));
  if (size > sizeof c) std::memset(reinterpret_cast<char*>(config) + sizeof c, 0, size - sizeof c);
}

int rl_config_validate(const rl_config* config, char* err, size_t errlen) {
  write_text(err, errlen, "");
  if (config == nullptr) {
    write_text(err, errlen, "rl_config is NULL");
    return -EINVAL;
  }
  std::string message;
  const int result = guarded(
      [&] {
        rl::Config parsed;
        message = from_c(config, parsed);
        return message.empty() ? 0 : -EINVAL;
      },
      &message);
  if (result < 0) write_text(err, errlen, message);
  return result;
}

rl_manager* rl_manager_new(const rl_config* config, const rl_callbacks* callbacks, char* err,
                           size_t errlen) {
  write_text(err, errlen, "");
  rl_manager* manager = nullptr;
  std::string message;
  const int result = guarded(
      [&] {
        rl::Config parsed;
        message = from_c(config, parsed);
        if (!message.empty()) return -EINVAL;
        rl_callbacks c{};
        if (callbacks != nullptr) {
          if (callbacks->size < kCallbacksSizeV1) {
            message = "rl_callbacks.size must be at least " + std::to_string(kCallbacksSizeV1) +
                      " (got " + std::to_string(callbacks->size) + "): set it to sizeof(rl_callbacks)";
            return -EINVAL;
          }
          std::memcpy(&c, callbacks, std::min(callbacks->size, sizeof c));
        }
        manager = new rl_manager(parsed, c);
        return 0;
      },
      &message);
  if (result < 0) {
    write_text(err, errlen, message);
    errno = -result;
    return nullptr;
  }
  return manager;
}

void rl_manager_free(rl_manager* manager) {
  delete manager;  // ~Manager is noexcept
}

int rl_manager_listen(rl_manager* manager, const char* address, int backlog, unsigned flags,
                      char* bound, size_t boundlen) {
  write_text(bound, boundlen, "");
  if (manager == nullptr || address == nullptr ||
      (flags & ~(RL_LISTEN_REUSE_PORT | RL_LISTEN_DEFER_ACCEPT)) != 0) {
    return -EINVAL;
  }
  return guarded([&] {
    const std::optional<rl::SocketAddress> parsed = rl::SocketAddress::parse(address);
    if (!parsed) return -EINVAL;
    const rl::SocketAddress local = manager->manager.listen(
        *parsed, rl::ListenOptions{.backlog = backlog > 0 ? backlog : 4096,
                                   .reuse_port = (flags & RL_LISTEN_REUSE_PORT) != 0,
                                   .defer_accept = (flags & RL_LISTEN_DEFER_ACCEPT) != 0});
    write_text(bound, boundlen, local.to_string());
    return static_cast<int>(local.port());
  });
}

int rl_manager_adopt(rl_manager* manager, int fd, rl_conn_id* id) {
  if (manager == nullptr || id == nullptr) return -EINVAL;
  if (fd < 0) return -EBADF;
  return guarded([&] {
    const std::optional<rl::ConnectionId> adopted = manager->manager.adopt(fd);
    if (!adopted) return -EBUSY;
    *id = to_c(*adopted);
    return 0;
  });
}

int rl_manager_handoff(rl_manager* manager, int fd, const void* final_bytes, size_t length,
                       rl_handoff_done_fn done, void* user) {
  if (manager == nullptr || (final_bytes == nullptr && length > 0)) return -EINVAL;
  if (fd < 0) return -EBADF;
  // Touches nothing of `manager` but the thread-safe Manager::handoff: any thread may be here.
  return guarded([&] {
    std::string bytes(static_cast<const char*>(final_bytes), length);
    rl::HandoffDone on_done;
    if (done != nullptr) {
      on_done = [manager, done, user](const rl::CloseReport& report) {
        const rl_close_report c = to_c(report);
        manager->call([&] { done(user, &c); });
      };
    }
    return to_errno(manager->manager.handoff(fd, std::move(bytes), std::move(on_done)));
  });
}

int rl_manager_send(rl_manager* manager, rl_conn_id id, const void* data, size_t length) {
  if (manager == nullptr || (data == nullptr && length > 0)) return -EINVAL;
  return guarded([&] {
    return to_errno(
        manager->manager.send(from_c(id), std::string(static_cast<const char*>(data), length)));
  });
}

int rl_manager_send_and_close(rl_manager* manager, rl_conn_id id, const void* data,
                              size_t length) {
  if (manager == nullptr || (data == nullptr && length > 0)) return -EINVAL;
  return guarded([&] {
    return to_errno(manager->manager.send_and_close(
        from_c(id), std::string(static_cast<const char*>(data), length)));
  });
}

int rl_manager_close(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.close(from_c(id))); });
}

int rl_manager_shutdown_write(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.shutdown_write(from_c(id))); });
}

int rl_manager_abort(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.abort(from_c(id))); });
}

int rl_manager_abort_after_send(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.abort_after_send(from_c(id))); });
}

int rl_manager_pause_receive(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.pause_receive(from_c(id))); });
}

int rl_manager_resume_receive(rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return to_errno(manager->manager.resume_receive(from_c(id))); });
}

uint64_t rl_manager_queued_bytes(const rl_manager* manager, rl_conn_id id) {
  return manager == nullptr ? 0 : manager->manager.queued_bytes(from_c(id));
}

int rl_manager_fd(const rl_manager* manager, rl_conn_id id) {
  if (manager == nullptr) return -EINVAL;
  const int fd = manager->manager.fd(from_c(id));
  return fd < 0 ? -EBADF : fd;
}

int rl_manager_event_fd(rl_manager* manager) {
  if (manager == nullptr) return -EINVAL;
  return guarded([&] { return manager->manager.event_fd(); });
}

int rl_manager_poll_timeout_ms(const rl_manager* manager, int max_ms) {
  if (manager == nullptr) return 0;
  const bool unlimited = max_ms < 0;
  const std::chrono::milliseconds max(unlimited ? INT_MAX : max_ms);
  try {
    const auto timeout = manager->manager.poll_timeout(max).count();
    if (unlimited && timeout >= INT_MAX) return -1;
    return static_cast<int>(std::clamp<decltype(timeout)>(timeout, 0, max.count()));
  } catch (...) {
    return 0;  // poll soon rather than never
  }
}

int rl_manager_poll(rl_manager* manager) {
  if (manager == nullptr) return -EINVAL;
  if (manager->callback_depth > 0) return -EDEADLK;
  return guarded([&] { return manager->manager.poll() ? 1 : 0; });
}

int rl_manager_run_once(rl_manager* manager, int max_wait_ms) {
  if (manager == nullptr) return -EINVAL;
  if (manager->callback_depth > 0) return -EDEADLK;
  return guarded([&] {
    return manager->manager.run_once(std::chrono::milliseconds(std::max(max_wait_ms, 0))) ? 1 : 0;
  });
}

int rl_manager_run(rl_manager* manager) {
  if (manager == nullptr) return -EINVAL;
  if (manager->callback_depth > 0) return -EDEADLK;
  return guarded([&] {
    manager->manager.run();
    return 0;
  });
}

void rl_manager_stop(rl_manager* manager, int64_t grace_ms) {
  // Async-signal-safe: Manager::stop stores two lock-free atomics; nothing else happens here.
  if (manager != nullptr) manager->manager.stop(std::chrono::milliseconds(std::max<int64_t>(grace_ms, 0)));
}

int rl_manager_describe_backend(const rl_manager* manager, char* text, size_t length) {
  write_text(text, length, "");
  if (manager == nullptr) return -EINVAL;
  return guarded([&] {
    const std::string description = manager->manager.describe_backend();
    write_text(text, length, description);
    return static_cast<int>(std::min<std::size_t>(description.size(), INT_MAX));
  });
}

uint64_t rl_close_latency_bound_ns(size_t i) {
  if (i >= rl::kCloseLatencyBounds.size()) return UINT64_MAX;
  return nanoseconds(rl::kCloseLatencyBounds[i]);
}

int rl_manager_stats(const rl_manager* manager, rl_stats* stats) {
  if (manager == nullptr || stats == nullptr || stats->size < kStatsSizeV1) return -EINVAL;
  return guarded([&] {
    write_stats(manager->manager.stats(), stats);
    return 0;
  });
}

int rl_manager_snapshot(const rl_manager* manager, rl_stats* stats, int wait_ms) {
  if (manager == nullptr || stats == nullptr || stats->size < kStatsSizeV1) return -EINVAL;
  return guarded([&] {
    const std::optional<rl::Stats> s =
        manager->manager.snapshot(std::chrono::milliseconds(std::max(wait_ms, 0)));
    if (!s) return -ETIMEDOUT;
    write_stats(*s, stats);
    return 0;
  });
}

int rl_manager_post(rl_manager* manager, void (*fn)(void* arg), void* arg) {
  if (manager == nullptr || fn == nullptr) return -EINVAL;
  // Touches nothing of `manager` but the thread-safe Manager::post: any thread may be here.
  return guarded([&] {
    return to_errno(manager->manager.post([manager, fn, arg] { manager->call([&] { fn(arg); }); }));
  });
}

int rl_manager_reconfigure(rl_manager* manager, const rl_config* config, char* err,
                           size_t errlen) {
  write_text(err, errlen, "");
  if (manager == nullptr || config == nullptr) {
    write_text(err, errlen, manager == nullptr ? "rl_manager is NULL" : "rl_config is NULL");
    return -EINVAL;
  }
  std::string message;
  const int result = guarded(
      [&] {
        rl::Config parsed;
        message = from_c(config, parsed);
        if (!message.empty()) return -EINVAL;
        manager->manager.reconfigure(parsed);
        return 0;
      },
      &message);
  if (result < 0) write_text(err, errlen, message);
  return result;
}

}  // extern "C"

