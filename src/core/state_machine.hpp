// The one place that says which state changes are legal: the connection state machine's
// transitions, and those of the write side of an open connection (its sub-state). The meaning of
// each state is documented in include/ringlinger/state.hpp, that of each write side below.
//
// The tables are here, not in a .cpp, so that a transition's check is inlined where the engine
// makes it: its target is a constant there, and the check is one bit test of a constant mask,
// where it was a load from a 7 x 7 table (bench/callgrind.sh: -20 instructions per close, with
// Engine::set_state() inlined in every caller).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/assert.hpp"
#include "ringlinger/state.hpp"

namespace ringlinger::detail {

template <class Enum>
struct Edge {
  Enum from;
  Enum to;
};

// Every legal edge, read as "from -> to: when".
inline constexpr Edge<State> kLegalEdges[] = {
    // adopt() or accept
    {State::free, State::open},
    // close() requested
    {State::open, State::flushing},
    // abort, error or timeout, with requests in flight / with nothing in flight
    {State::open, State::cancelling},
    {State::open, State::closing},
    // everything sent: IORING_OP_SHUTDOWN submitted / shutdown(2) done
    {State::flushing, State::shutting_down},
    {State::flushing, State::draining},
    // error, send timeout, byte cap or abort, with requests in flight / with nothing in flight
    {State::flushing, State::cancelling},
    {State::flushing, State::closing},
    // IORING_OP_SHUTDOWN completed
    {State::shutting_down, State::draining},
    // shutdown failed, or a drain limit hit, with requests in flight / with nothing in flight
    {State::shutting_down, State::cancelling},
    {State::shutting_down, State::closing},
    // drain ended (timeout, cap, error) with the receive in flight
    {State::draining, State::cancelling},
    // peer EOF or error completed the receive: nothing in flight
    {State::draining, State::closing},
    // the last request in flight completed
    {State::cancelling, State::closing},
    // IORING_OP_CLOSE completed, or submitted without a completion (a drain the peer's FIN
    // ended: IoPort::submit_close_unreported); outcome reported
    {State::closing, State::free},
};

// For each value of Enum, the values it may be reached from, as a bit mask (bit `from`).
template <class Enum, std::size_t kCount, std::size_t kEdges>
constexpr std::array<std::uint32_t, kCount> legal_sources(const Edge<Enum> (&edges)[kEdges]) {
  static_assert(kCount <= 32, "one bit per value");
  std::array<std::uint32_t, kCount> sources{};
  for (const Edge<Enum>& edge : edges) {
    sources[static_cast<std::size_t>(edge.to)] |= std::uint32_t{1}
                                                  << static_cast<unsigned>(edge.from);
  }
  return sources;
}

// Whether `sources` (legal_sources()'s masks) has the edge from -> to.
template <class Enum, std::size_t kCount>
constexpr bool has_edge(const std::array<std::uint32_t, kCount>& sources, Enum from,
                        Enum to) noexcept {
  return ((sources[static_cast<std::size_t>(to)] >> static_cast<unsigned>(from)) & 1u) != 0;
}

// kStateCount names the last State (the masks below have one entry per state).
static_assert(static_cast<std::size_t>(State::closing) + 1 == kStateCount,
              "kStateCount must count every State");
inline constexpr auto kLegalStateSources = legal_sources<State, kStateCount>(kLegalEdges);

// Whether a connection may go from `from` to `to`.
constexpr bool is_legal_transition(State from, State to) noexcept {
  return has_edge(kLegalStateSources, from, to);
}

// States in which the outcome is decided and the fd is on its way to close().
constexpr bool is_terminating(State state) noexcept {
  return state == State::cancelling || state == State::closing;
}

// States after close() was requested, before the outcome is decided: input is discarded.
constexpr bool is_lingering(State state) noexcept {
  return state == State::flushing || state == State::shutting_down || state == State::draining;
}

// The write side of a connection, changed only while it is open (State::open) by
// shutdown_write(), the half-close a proxy relies on: it ends our direction of the stream and
// leaves the connection open for input. close() then goes on from where it is (flushing after
// `open` or `shutdown_requested`, straight to draining after `shut_down`).
enum class WriteSide : std::uint8_t {
  // Sends are accepted.
  open,
  // shutdown_write() was called: no more sends; SHUT_WR follows the last queued byte.
  shutdown_requested,
  // That SHUT_WR was done: our FIN is queued behind all our data.
  shut_down,
};

// Number of values of WriteSide (for tables indexed by it).
inline constexpr std::size_t kWriteSideCount = 3;
static_assert(static_cast<std::size_t>(WriteSide::shut_down) + 1 == kWriteSideCount,
              "kWriteSideCount must count every WriteSide");

// Lower-case name of a write side, e.g. "shut_down".
std::string_view to_string(WriteSide side) noexcept;

// The write side's legal edges (a new connection starts `open`; the slot's reset on release is
// not a transition). A failed SHUT_WR leaves it `shutdown_requested`: the connection ends.
inline constexpr Edge<WriteSide> kLegalWriteEdges[] = {
    {WriteSide::open, WriteSide::shutdown_requested},       // shutdown_write() while open
    {WriteSide::shutdown_requested, WriteSide::shut_down},  // every byte sent; shutdown(2) done
};

inline constexpr auto kLegalWriteSources =
    legal_sources<WriteSide, kWriteSideCount>(kLegalWriteEdges);

// Whether the write side may go from `from` to `to`.
constexpr bool is_legal_transition(WriteSide from, WriteSide to) noexcept {
  return has_edge(kLegalWriteSources, from, to);
}

// Changes a connection's state, or its write side, to `to`; asserts that the edge is legal.
template <class Enum>
inline void transition(Enum& value, Enum to) noexcept {
  RL_ASSERT(is_legal_transition(value, to));
  value = to;
}

}  // namespace ringlinger::detail
