// The one place that says which state changes are legal.
#include "core/state_machine.hpp"

#include <array>

#include "core/assert.hpp"

namespace ringlinger::detail {
namespace {

using enum State;

struct Edge {
  State from;
  State to;
};

// Every legal edge, read as "from -> to: when".
constexpr Edge kLegalEdges[] = {
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

constexpr auto build_table() {
  std::array<std::array<bool, kStateCount>, kStateCount> table{};
  for (const Edge& edge : kLegalEdges) {
    table[static_cast<std::size_t>(edge.from)][static_cast<std::size_t>(edge.to)] = true;
  }
  return table;
}

constexpr auto kTable = build_table();

// A compile-time check that State and kStateCount agree: the last state must be closing.
static_assert(static_cast<std::size_t>(closing) + 1 == kStateCount,
              "kStateCount must count every State");

}  // namespace

bool is_legal_transition(State from, State to) noexcept {
  return kTable[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
}

void transition(State& state, State to) noexcept {
  RL_ASSERT(is_legal_transition(state, to));
  state = to;
}

}  // namespace ringlinger::detail
