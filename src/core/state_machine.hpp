// The connection state machine's legal transitions. The table is in state_machine.cpp; the
// meaning of each state is documented in include/ringlinger/state.hpp.
#pragma once

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

}  // namespace ringlinger::detail
