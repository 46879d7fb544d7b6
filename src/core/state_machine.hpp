// The connection state machine's legal transitions, and those of the write side of an open
// connection (its sub-state). The tables are in state_machine.cpp; the meaning of each state is
// documented in include/ringlinger/state.hpp, that of each write side below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ringlinger/state.hpp"

namespace ringlinger::detail {

// Whether a connection may go from `from` to `to`.
bool is_legal_transition(State from, State to) noexcept;

// Changes `state` to `to`; asserts that the edge is legal.
void transition(State& state, State to) noexcept;

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

// Lower-case name of a write side, e.g. "shut_down".
std::string_view to_string(WriteSide side) noexcept;

// Whether the write side may go from `from` to `to`.
bool is_legal_transition(WriteSide from, WriteSide to) noexcept;

// Changes `side` to `to`; asserts that the edge is legal.
void transition(WriteSide& side, WriteSide to) noexcept;

}  // namespace ringlinger::detail
