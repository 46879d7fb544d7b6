// What this proves: is_legal_transition() agrees, on all 7 x 7 = 49 (from, to) pairs, with a
// table of the connection lifecycle written out independently here (every legal edge accepted,
// every other pair, self-loops included, rejected); transition() performs legal edges and aborts
// the process (RL_ASSERT) on every illegal one; every state can still reach `free`; and
// is_terminating() / is_lingering() classify each state as state.hpp documents.
#include "core/state_machine.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <string>

#include "ringlinger/state.hpp"

namespace ringlinger::detail {
namespace {

constexpr std::array<State, kStateCount> kAllStates = {
    State::free,     State::open,       State::flushing, State::shutting_down,
    State::draining, State::cancelling, State::closing};

std::size_t index(State state) { return static_cast<std::size_t>(state); }

std::string name(State state) { return std::string(to_string(state)); }

// The expected lifecycle, written from the state documentation (state.hpp), not copied from
// state_machine.cpp. Rows: from; columns: to. 1 = legal.
//
// clang-format off
//               to: free open flush shut drain cancel closing
constexpr int kExpected[kStateCount][kStateCount] = {
    /* free          */ {0, 1, 0, 0, 0, 0, 0},  // only adopt/accept opens a slot
    /* open          */ {0, 0, 1, 0, 0, 1, 1},  // close(); or abort/error/timeout
    /* flushing      */ {0, 0, 0, 1, 1, 1, 1},  // ring shutdown / shutdown(2) / end
    /* shutting_down */ {0, 0, 0, 0, 1, 1, 1},  // shutdown completed / end
    /* draining      */ {0, 0, 0, 0, 0, 1, 1},  // end, with or without a recv in flight
    /* cancelling    */ {0, 0, 0, 0, 0, 0, 1},  // the last request in flight completed
    /* closing       */ {1, 0, 0, 0, 0, 0, 0},  // the close completed; slot free again
};
// clang-format on

TEST(StateMachine, EveryPairMatchesTheExpectedTable) {
  int legal = 0;
  int checked = 0;
  for (State from : kAllStates) {
    for (State to : kAllStates) {
      const bool expected = kExpected[index(from)][index(to)] == 1;
      EXPECT_EQ(is_legal_transition(from, to), expected)
          << name(from) << " -> " << name(to) << " should be " << (expected ? "legal" : "illegal");
      legal += expected ? 1 : 0;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 49);
  EXPECT_EQ(legal, 15);  // a guard on the expected table itself
}

TEST(StateMachine, NoStateMayStayInPlace) {
  for (State state : kAllStates) {
    EXPECT_FALSE(is_legal_transition(state, state)) << name(state);
  }
}

TEST(StateMachine, EveryStateCanReachFreeAndEveryStateIsReachableFromFree) {
  // Closure over the legal edges as the library reports them.
  std::array<std::array<bool, kStateCount>, kStateCount> reach{};
  for (State from : kAllStates) {
    for (State to : kAllStates) reach[index(from)][index(to)] = is_legal_transition(from, to);
  }
  for (std::size_t via = 0; via < kStateCount; ++via) {
    for (std::size_t from = 0; from < kStateCount; ++from) {
      for (std::size_t to = 0; to < kStateCount; ++to) {
        reach[from][to] = reach[from][to] || (reach[from][via] && reach[via][to]);
      }
    }
  }
  for (State state : kAllStates) {
    EXPECT_TRUE(reach[index(state)][index(State::free)]) << name(state) << " is a dead end";
    EXPECT_TRUE(reach[index(State::free)][index(state)]) << name(state) << " is unreachable";
  }
}

TEST(StateMachine, TransitionPerformsEveryLegalEdge) {
  for (State from : kAllStates) {
    for (State to : kAllStates) {
      if (kExpected[index(from)][index(to)] == 0) continue;
      State state = from;
      transition(state, to);
      EXPECT_EQ(state, to) << name(from) << " -> " << name(to);
    }
  }
}

TEST(StateMachineDeathTest, TransitionAbortsOnEveryIllegalEdge) {
  int illegal = 0;
  for (State from : kAllStates) {
    for (State to : kAllStates) {
      if (kExpected[index(from)][index(to)] == 1) continue;
      ++illegal;
      EXPECT_DEATH(
          {
            State state = from;
            transition(state, to);
          },
          "assertion failed: is_legal_transition")
          << name(from) << " -> " << name(to);
    }
  }
  EXPECT_EQ(illegal, 49 - 15);
}

TEST(StateMachine, IsTerminatingAndIsLingeringClassifyEachState) {
  struct Expected {
    State state;
    bool terminating;
    bool lingering;
  };
  constexpr Expected kClasses[] = {
      {State::free, false, false},    {State::open, false, false},
      {State::flushing, false, true}, {State::shutting_down, false, true},
      {State::draining, false, true}, {State::cancelling, true, false},
      {State::closing, true, false},
  };
  static_assert(std::size(kClasses) == kStateCount);
  for (const Expected& expected : kClasses) {
    EXPECT_EQ(is_terminating(expected.state), expected.terminating) << name(expected.state);
    EXPECT_EQ(is_lingering(expected.state), expected.lingering) << name(expected.state);
    EXPECT_FALSE(is_terminating(expected.state) && is_lingering(expected.state));
  }
  // Both are usable at compile time.
  static_assert(is_terminating(State::closing) && is_lingering(State::draining));
}

TEST(StateMachine, LingeringStatesOnlyMoveForwardIntoTermination) {
  // Once lingering, a connection never returns to open, and once terminating it never lingers
  // again: input is never delivered after close() and nothing restarts after the outcome.
  for (State from : kAllStates) {
    for (State to : kAllStates) {
      if (!is_legal_transition(from, to)) continue;
      if (is_lingering(from)) {
        EXPECT_NE(to, State::open) << name(from) << " -> open";
      }
      if (is_terminating(from)) {
        EXPECT_FALSE(is_lingering(to)) << name(from) << " -> " << name(to);
        EXPECT_NE(to, State::open) << name(from) << " -> open";
      }
    }
  }
}

}  // namespace
}  // namespace ringlinger::detail
