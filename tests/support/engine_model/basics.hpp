// The engine model's vocabulary: time, connection keys, the error classes of the public contract,
// the variants the test runs, and a run's options. Part of engine_model.hpp.
#pragma once

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "choices.hpp"
#include "core/engine.hpp"
#include "fake_io.hpp"

namespace ringlinger::detail::engine_model {

using namespace std::chrono_literals;
using fake::Choices;
using fake::FakeIo;
using fake::Request;
using TimePoint = Engine::TimePoint;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// A fixed, non-zero origin: the engine treats TimePoint{} as "never".
inline const TimePoint kStart = TimePoint{} + 1000h;

// TimerQueue::arm_at() as the model states it: the first of the lane deadlines
// now + period * k / kLanes (k = 1 .. kLanes) at or after `deadline`, for a timer of a queue whose
// timers last `period`, re-armed at `now`. The model's progress timers and the scenarios share it.
inline TimePoint lane_deadline(TimePoint now, TimePoint deadline, nanoseconds period) {
  const nanoseconds tick = period / TimerQueue::kLanes;
  const auto ticks = (deadline - now + tick - 1ns) / tick;
  return ticks >= TimerQueue::kLanes ? now + period : now + tick * ticks;
}

inline std::uint64_t key_of(std::uint32_t slot, std::uint32_t generation) {
  return (std::uint64_t{slot} << 32) | generation;
}
inline std::uint64_t key_of(ConnectionId id) { return key_of(id.slot, id.generation); }

inline std::string id_text(ConnectionId id) {
  return "{" + std::to_string(id.slot) + "," + std::to_string(id.generation) + "}";
}

inline std::uint8_t bit(Op op) { return FakeIo::bit(op); }

// The error classes of the public contract (outcome.hpp, kernel-facts.md).
inline bool is_reset_error(int error) {
  return error == ECONNRESET || error == EPIPE || error == ENOTCONN || error == ECONNABORTED;
}
inline bool is_retry_error(int error) {
  return error == EAGAIN || error == EINTR || error == ENOMEM || error == ENOBUFS;
}

// Errors for wide runs (Options::wide), by class: the engine must treat each member of a class
// alike, so the input picks among them.
inline constexpr int kTransientErrors[] = {EAGAIN, EINTR, ENOMEM, ENOBUFS};
inline constexpr int kResetErrors[] = {ECONNRESET, EPIPE, ECONNABORTED, ENOTCONN};
inline constexpr int kOtherErrors[] = {ETIMEDOUT, EHOSTUNREACH, EINVAL};  // neither of the above
inline constexpr int kShutdownErrors[] = {ENOTCONN, EINVAL};               // shutdown(2)'s own
inline constexpr int kCloseErrors[] = {EIO, EINTR};                        // close(2)'s own

inline bool is_timeout(Outcome outcome) {
  return outcome == Outcome::send_timeout || outcome == Outcome::drain_idle_timeout ||
         outcome == Outcome::drain_timeout;
}

// What the test varies besides the seed.
struct Variant {
  ShutdownMode shutdown_mode;
  OnTimeout on_timeout;
  bool with_on_receive;
};

inline std::string variant_name(const Variant& variant) {
  return std::string(to_string(variant.shutdown_mode)) + "_" +
         std::string(to_string(variant.on_timeout)) +
         (variant.with_on_receive ? "_recv" : "_norecv");
}

inline const Variant kVariants[] = {
    {ShutdownMode::syscall, OnTimeout::close, true},
    {ShutdownMode::syscall, OnTimeout::close, false},
    {ShutdownMode::syscall, OnTimeout::reset, true},
    {ShutdownMode::syscall, OnTimeout::reset, false},
    {ShutdownMode::ring, OnTimeout::close, true},
    {ShutdownMode::ring, OnTimeout::close, false},
    {ShutdownMode::ring, OnTimeout::reset, true},
    {ShutdownMode::ring, OnTimeout::reset, false},
};

// Which kind of event was running when a connection was terminated.
enum class Cause : std::uint8_t { none, api, abort, abort_all, expire, completion, retry };

enum class ErrorSource : std::uint8_t { none, recv, send };

// How a run reports, and how hostile its world is. The defaults are the gtest fuzzer's.
struct Options {
  // Names the run in each violation ("seed 17").
  std::string label;
  // Told each violation as it is found, with the events that led to it (gtest: ADD_FAILURE;
  // libFuzzer: print and abort, so that the input is kept).
  std::function<void(const std::string&)> report;
  // Beyond the gtest fuzzer's world (the libFuzzer target): every class of result for every
  // request with even odds (sends of 0 bytes, each transient error, each reset error, failing
  // shutdowns and closes), a peer still acknowledging our data when the send or the drain idle
  // timer fires (TCP_INFO), orphan timeouts set or not, and tables of a single slot too.
  bool wide = false;
};

}  // namespace ringlinger::detail::engine_model
