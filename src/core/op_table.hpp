// The op table: one row per Op (user_data.hpp), in enum order, with what the rest of the library
// needs to know of it, in the style of the kernel's io_uring/opdef.c. Adding an op is one
// enumerator, one row here and, for a connection's op, one completion handler in engine.cpp
// (Engine::complete<Op>); the engine's dispatch is built from this table, and the checks below
// fail the build when a row is missing or out of order.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>

#include "core/user_data.hpp"

namespace ringlinger::detail {

// Whose request an op is, and so who handles its completion.
enum class OpOwner : std::uint8_t {
  connection,  // a connection's (slot and generation name it): the engine handles the completion
  listener,    // a listener's (slot = listener index): the backend handles the completion
  backend,     // the backend's own: the backend handles it, the engine never sees it as such
};

struct OpDef {
  Op op;
  // Lower case, for logs and test output.
  std::string_view name;
  OpOwner owner;
  // The op's bit in Connection::in_flight (a connection has at most one request of each op in
  // flight); 0 for an op that is not a connection's.
  std::uint8_t in_flight_bit;
  // A connection's request that may complete in parts (a multishot receive: IORING_CQE_F_MORE),
  // its in-flight bit set until the last one. (A listener's multishot requests are the backend's.)
  bool multishot;
};

inline constexpr OpDef kOpDefs[] = {
    {Op::accept, "accept", OpOwner::listener, 0, false},
    {Op::accept_cancel, "accept_cancel", OpOwner::listener, 0, false},
    {Op::recv, "recv", OpOwner::connection, 1u << 2, true},
    {Op::send, "send", OpOwner::connection, 1u << 3, false},
    {Op::shutdown, "shutdown", OpOwner::connection, 1u << 4, false},
    {Op::cancel, "cancel", OpOwner::connection, 1u << 5, false},
    {Op::close, "close", OpOwner::connection, 1u << 6, false},
    // The engine sees its completion as the send's (the io_uring backend runs the sendfile).
    {Op::send_file_poll, "send_file_poll", OpOwner::backend, 0, false},
    {Op::listen_poll, "listen_poll", OpOwner::listener, 0, false},
    {Op::wake, "wake", OpOwner::backend, 0, false},
};

// The row of `op`, which must be known (is_known()).
constexpr const OpDef& op_def(Op op) noexcept { return kOpDefs[static_cast<std::size_t>(op)]; }

constexpr bool belongs_to_connection(Op op) noexcept {
  return op_def(op).owner == OpOwner::connection;
}

// For every value of a user_data's op byte: whether it names a connection's op. All 256 values,
// so that the completion loop looks an op up without checking its range first (a byte that
// names no Op is not a connection's, and the backend's dispatch() refuses it).
inline constexpr auto kConnectionOpByte = [] {
  std::array<bool, 256> table{};
  for (const OpDef& row : kOpDefs) {
    table[static_cast<std::uint8_t>(row.op)] = row.owner == OpOwner::connection;
  }
  return table;
}();

namespace op_table_checks {

constexpr bool rows_in_enum_order() {
  for (std::size_t i = 0; i < std::size(kOpDefs); ++i) {
    if (static_cast<std::size_t>(kOpDefs[i].op) != i || kOpDefs[i].name.empty()) return false;
  }
  return true;
}

// A connection's op has one bit of its own; no other op has one.
constexpr bool in_flight_bits_distinct() {
  unsigned seen = 0;
  for (const OpDef& row : kOpDefs) {
    const unsigned bit = row.in_flight_bit;
    const bool single = bit != 0 && (bit & (bit - 1)) == 0;
    if ((row.owner == OpOwner::connection) != single || (seen & bit) != 0) return false;
    seen |= bit;
  }
  return true;
}

constexpr bool multishot_only_for_connections() {
  for (const OpDef& row : kOpDefs) {
    if (row.multishot && row.owner != OpOwner::connection) return false;
  }
  return true;
}

}  // namespace op_table_checks

static_assert(std::size(kOpDefs) == kOpCount,
              "one row per Op: a new last Op must also be named in kOpCount (user_data.hpp)");
static_assert(op_table_checks::rows_in_enum_order(), "kOpDefs rows must follow Op's order");
static_assert(op_table_checks::in_flight_bits_distinct(),
              "every connection op needs its own in-flight bit, and only those");
static_assert(op_table_checks::multishot_only_for_connections(),
              "only a connection's op has completions in parts that the engine sees");

}  // namespace ringlinger::detail
