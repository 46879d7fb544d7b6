// What this proves: is_legal_transition() agrees, on all 7 x 7 = 49 (from, to) pairs, with a
// table of the connection lifecycle written out independently here (every legal edge accepted,
// every other pair, self-loops included, rejected); transition() performs legal edges and aborts
// the process (RL_ASSERT) on every illegal one; every state can still reach `free`; and
// is_terminating() / is_lingering() classify each state as state.hpp documents. The same for the
// write side of an open connection (shutdown_write()'s half-close): all 3 x 3 = 9 pairs against
// a table written here, each legal edge performed, each illegal one aborting, and its one path
// open -> shutdown_requested -> shut_down.
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

// For State and WriteSide alike.
template <class Enum>
std::size_t index(Enum value) {
  return static_cast<std::size_t>(value);
}

template <class Enum>
std::string name(Enum value) {
  return std::string(to_string(value));
}

// The checks both tables get, for any enum with a name() and an expected table of N x N.
template <class Enum, std::size_t N>
void expect_every_pair(const std::array<Enum, N>& all, const int (&expected)[N][N],
                       int legal_edges) {
  int legal = 0;
  int checked = 0;
  for (Enum from : all) {
    for (Enum to : all) {
      const bool is_legal = expected[index(from)][index(to)] == 1;
      EXPECT_EQ(is_legal_transition(from, to), is_legal)
          << name(from) << " -> " << name(to) << " should be " << (is_legal ? "legal" : "illegal");
      legal += is_legal ? 1 : 0;
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(N * N));
  EXPECT_EQ(legal, legal_edges);  // a guard on the expected table itself
}

template <class Enum, std::size_t N>
void expect_transition_performs_legal_edges(const std::array<Enum, N>& all,
                                            const int (&expected)[N][N]) {
  for (Enum from : all) {
    for (Enum to : all) {
      if (expected[index(from)][index(to)] == 0) continue;
      Enum value = from;
      transition(value, to);
      EXPECT_EQ(value, to) << name(from) << " -> " << name(to);
    }
  }
}

template <class Enum, std::size_t N>
void expect_transition_aborts_on_illegal_edges(const std::array<Enum, N>& all,
                                               const int (&expected)[N][N], int legal_edges) {
  int illegal = 0;
  for (Enum from : all) {
    for (Enum to : all) {
      if (expected[index(from)][index(to)] == 1) continue;
      ++illegal;
      EXPECT_DEATH(
          {
            Enum value = from;
            transition(value, to);
          },
          "assertion failed: is_legal_transition")
          << name(from) << " -> " << name(to);
    }
  }
  EXPECT_EQ(illegal, static_cast<int>(N * N) - legal_edges);
}

// The expected lifecycle, written from the state documentation (state.hpp), not copied from
// state_machine.hpp. Rows: from; columns: to. 1 = legal.
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
  expect_every_pair(kAllStates, kExpected, 15);
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
  expect_transition_performs_legal_edges(kAllStates, kExpected);
}

TEST(StateMachineDeathTest, TransitionAbortsOnEveryIllegalEdge) {
  expect_transition_aborts_on_illegal_edges(kAllStates, kExpected, 15);
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

// --- the write side ---------------------------------------------------------------------------

constexpr std::array<WriteSide, kWriteSideCount> kAllWriteSides = {
    WriteSide::open, WriteSide::shutdown_requested, WriteSide::shut_down};

// The half-close, from state_machine.hpp: shutdown_write() asks for it, the SHUT_WR after the
// last queued byte does it; nothing goes back (a failed SHUT_WR ends the connection instead).
//
// clang-format off
//                      to: open requested shut_down
constexpr int kExpectedWrite[kWriteSideCount][kWriteSideCount] = {
    /* open               */ {0, 1, 0},  // shutdown_write()
    /* shutdown_requested */ {0, 0, 1},  // every queued byte sent, shutdown(2) done
    /* shut_down          */ {0, 0, 0},  // final while the connection lives
};
// clang-format on

TEST(WriteSide, EveryPairMatchesTheExpectedTable) {
  expect_every_pair(kAllWriteSides, kExpectedWrite, 2);
}

TEST(WriteSide, TransitionPerformsEveryLegalEdge) {
  expect_transition_performs_legal_edges(kAllWriteSides, kExpectedWrite);
}

TEST(WriteSideDeathTest, TransitionAbortsOnEveryIllegalEdge) {
  expect_transition_aborts_on_illegal_edges(kAllWriteSides, kExpectedWrite, 2);
}

TEST(WriteSide, TheOnlyPathIsOpenThenRequestedThenShutDown) {
  WriteSide side = WriteSide::open;
  transition(side, WriteSide::shutdown_requested);
  transition(side, WriteSide::shut_down);
  EXPECT_EQ(side, WriteSide::shut_down);
  for (WriteSide to : kAllWriteSides) EXPECT_FALSE(is_legal_transition(side, to)) << name(to);
  EXPECT_EQ(name(WriteSide::shutdown_requested), "shutdown_requested");
}

}  // namespace
}  // namespace ringlinger::detail
