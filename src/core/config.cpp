// Config::validate(), the names of the public enums, and which errors are the peer's reset.
#include "ringlinger/config.hpp"

#include <cerrno>
#include <string>

#include "ringlinger/outcome.hpp"
#include "ringlinger/state.hpp"

namespace ringlinger {
namespace {

constexpr std::uint64_t kOneDayMs = 86'400'000;

bool is_power_of_two(std::uint64_t value) { return value != 0 && (value & (value - 1)) == 0; }

std::string range_error(const char* field, std::uint64_t low, std::uint64_t high,
                        std::uint64_t got, const char* extra = "") {
  return std::string(field) + " must be " + extra + "between " + std::to_string(low) + " and " +
         std::to_string(high) + " (got " + std::to_string(got) + ")";
}

}  // namespace

std::string Config::validate() const {
  if (drain_idle_timeout_ms < 1 || drain_idle_timeout_ms > kOneDayMs) {
    return range_error("drain_idle_timeout_ms", 1, kOneDayMs, drain_idle_timeout_ms);
  }
  if (drain_timeout_ms < 1 || drain_timeout_ms > kOneDayMs) {
    return range_error("drain_timeout_ms", 1, kOneDayMs, drain_timeout_ms);
  }
  if (send_timeout_ms < 1 || send_timeout_ms > kOneDayMs) {
    return range_error("send_timeout_ms", 1, kOneDayMs, send_timeout_ms);
  }
  if (orphan_timeout_ms > kOneDayMs) {
    return range_error("orphan_timeout_ms", 0, kOneDayMs, orphan_timeout_ms);
  }
  if (backend != IoBackend::automatic && backend != IoBackend::io_uring &&
      backend != IoBackend::epoll) {
    return "backend must be automatic, io_uring or epoll (got " + std::to_string(int(backend)) + ")";
  }
  if (on_timeout != OnTimeout::close && on_timeout != OnTimeout::reset) {
    return "on_timeout must be close or reset (got " + std::to_string(int(on_timeout)) + ")";
  }
  if (shutdown_mode != ShutdownMode::syscall && shutdown_mode != ShutdownMode::ring) {
    return "shutdown_mode must be syscall or ring (got " + std::to_string(int(shutdown_mode)) + ")";
  }
  if (ring_entries < 8 || ring_entries > kMaxRingEntries || !is_power_of_two(ring_entries)) {
    return range_error("ring_entries", 8, kMaxRingEntries, ring_entries, "a power of two ");
  }
  if (max_connections < 1 || max_connections > (1u << 22)) {
    return range_error("max_connections", 1, 1u << 22, max_connections);
  }
  if (receive_buffer_bytes < 64 || receive_buffer_bytes > (16u << 20)) {
    return range_error("receive_buffer_bytes", 64, 16u << 20, receive_buffer_bytes);
  }
  if (receive_buffer_count < 1 || receive_buffer_count > kMaxReceiveBufferCount ||
      !is_power_of_two(receive_buffer_count)) {
    return range_error("receive_buffer_count", 1, kMaxReceiveBufferCount, receive_buffer_count,
                       "a power of two ");
  }
  if (batch_wait_us > 100'000) return range_error("batch_wait_us", 0, 100'000, batch_wait_us);
  return {};
}

std::string_view to_string(OnTimeout value) noexcept {
  switch (value) {
    case OnTimeout::close: return "close";
    case OnTimeout::reset: return "reset";
  }
  return "?";
}

std::string_view to_string(ShutdownMode value) noexcept {
  switch (value) {
    case ShutdownMode::syscall: return "syscall";
    case ShutdownMode::ring: return "ring";
  }
  return "?";
}

std::string_view to_string(IoBackend value) noexcept {
  switch (value) {
    case IoBackend::automatic: return "automatic";
    case IoBackend::io_uring: return "io_uring";
    case IoBackend::epoll: return "epoll";
  }
  return "?";
}

std::string_view to_string(State state) noexcept {
  switch (state) {
    case State::free: return "free";
    case State::open: return "open";
    case State::flushing: return "flushing";
    case State::shutting_down: return "shutting_down";
    case State::draining: return "draining";
    case State::cancelling: return "cancelling";
    case State::closing: return "closing";
  }
  return "?";
}

std::string_view to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::clean: return "clean";
    case Outcome::peer_reset: return "peer_reset";
    case Outcome::drain_idle_timeout: return "drain_idle_timeout";
    case Outcome::drain_timeout: return "drain_timeout";
    case Outcome::drain_byte_cap: return "drain_byte_cap";
    case Outcome::send_timeout: return "send_timeout";
    case Outcome::send_error: return "send_error";
    case Outcome::receive_error: return "receive_error";
    case Outcome::aborted: return "aborted";
    case Outcome::stop_deadline: return "stop_deadline";
  }
  return "?";
}

bool is_peer_reset_error(int error) noexcept {
  return error == ECONNRESET || error == EPIPE || error == ECONNABORTED || error == ENOTCONN;
}

static_assert(static_cast<std::size_t>(Outcome::stop_deadline) + 1 == kOutcomeCount,
              "kOutcomeCount must count every Outcome");

}  // namespace ringlinger
