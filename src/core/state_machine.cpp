// The one place that says which state changes are legal: of the connection, and of the write
// side of an open connection.
#include "core/state_machine.hpp"

#include <array>

#include "core/assert.hpp"

namespace ringlinger::detail {
namespace {

using enum State;

template <class Enum>
struct Edge {
  Enum from;
  Enum to;
};

// Every legal edge, read as "from -> to: when".
constexpr Edge<State> kLegalEdges[] = {
    {free, open},                 // adopt() or accept
    {open, flushing},             // close() requested
    {open, cancelling},           // abort, error or timeout with requests in flight
    {open, closing},              // abort, error or timeout with nothing in flight
    {flushing, shutting_down},    // everything sent; IORING_OP_SHUTDOWN submitted
    {flushing, draining},         // everything sent; shutdown(2) done
    {flushing, cancelling},       // error, send timeout, byte cap or abort, requests in flight
    {flushing, closing},          // the same with nothing in flight
    {shutting_down, draining},    // IORING_OP_SHUTDOWN completed
    {shutting_down, cancelling},  // shutdown failed, or a drain limit hit, requests in flight
    {shutting_down, closing},     // the same with nothing in flight
    {draining, cancelling},       // drain ended (timeout, cap, error) with the receive in flight
    {draining, closing},          // peer EOF or error completed the receive: nothing in flight
    {cancelling, closing},        // the last request in flight completed
    {closing, free},              // IORING_OP_CLOSE completed; outcome reported
};

// The write side's legal edges (a new connection starts `open`; the slot's reset on release is
// not a transition). A failed SHUT_WR leaves it `shutdown_requested`: the connection ends.
constexpr Edge<WriteSide> kLegalWriteEdges[] = {
    {WriteSide::open, WriteSide::shutdown_requested},       // shutdown_write() while open
    {WriteSide::shutdown_requested, WriteSide::shut_down},  // every byte sent; shutdown(2) done
};

template <class Enum, std::size_t kCount, std::size_t kEdges>
constexpr auto build_table(const Edge<Enum> (&edges)[kEdges]) {
  std::array<std::array<bool, kCount>, kCount> table{};
  for (const Edge<Enum>& edge : edges) {
    table[static_cast<std::size_t>(edge.from)][static_cast<std::size_t>(edge.to)] = true;
  }
  return table;
}

constexpr auto kTable = build_table<State, kStateCount>(kLegalEdges);
constexpr auto kWriteTable = build_table<WriteSide, kWriteSideCount>(kLegalWriteEdges);

// Compile-time checks that the enums and their counts agree: each count names the last value.
static_assert(static_cast<std::size_t>(closing) + 1 == kStateCount,
              "kStateCount must count every State");
static_assert(static_cast<std::size_t>(WriteSide::shut_down) + 1 == kWriteSideCount,
              "kWriteSideCount must count every WriteSide");

}  // namespace

bool is_legal_transition(State from, State to) noexcept {
  return kTable[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
}

void transition(State& state, State to) noexcept {
  RL_ASSERT(is_legal_transition(state, to));
  state = to;
}

std::string_view to_string(WriteSide side) noexcept {
  switch (side) {
    case WriteSide::open:
      return "open";
    case WriteSide::shutdown_requested:
      return "shutdown_requested";
    case WriteSide::shut_down:
      return "shut_down";
  }
  return "?";
}

bool is_legal_transition(WriteSide from, WriteSide to) noexcept {
  return kWriteTable[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
}

void transition(WriteSide& side, WriteSide to) noexcept {
  RL_ASSERT(is_legal_transition(side, to));
  side = to;
}

}  // namespace ringlinger::detail
