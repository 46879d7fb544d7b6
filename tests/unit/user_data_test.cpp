// What this proves: the user_data encoding of src/core/user_data.hpp is lossless for every Op, every
// 24-bit generation and the whole 32-bit slot range; a generation wider than 24 bits is truncated
// (never bleeds into the op byte); the fields sit exactly where the drawn layout says; and
// is_known() accepts exactly the Ops the manager submits; and the op table (op_table.hpp) names
// each op once, gives the connection's ops exactly, and its in-flight bits are the ones a
// Connection sets and clears.
#include "core/user_data.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <set>
#include <string_view>

#include "core/connection.hpp"
#include "core/op_table.hpp"

namespace ringlinger::detail {
namespace {

// Every Op, from the op table (which checks that it has one row per Op, in order).
constexpr auto kAllOps = [] {
  std::array<Op, kOpCount> ops{};
  for (std::size_t i = 0; i < ops.size(); ++i) ops[i] = kOpDefs[i].op;
  return ops;
}();

// The encoding is usable at compile time.
static_assert(decode(encode({Op::close, 5, 7})) == OpTag{Op::close, 5, 7});

TEST(UserData, RoundTripsEveryOpAtTheEdgesOfEachField) {
  const std::uint32_t generations[] = {
      0, 1, 2, 0x7FFFFF, 0x800000, kGenerationMask - 1, kGenerationMask};
  const std::uint32_t slots[] = {
      0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, UINT32_MAX - 1, UINT32_MAX};
  int checked = 0;
  for (Op op : kAllOps) {
    for (std::uint32_t generation : generations) {
      for (std::uint32_t slot : slots) {
        const OpTag tag{op, generation, slot};
        EXPECT_EQ(decode(encode(tag)), tag)
            << "op " << int(op) << " generation " << generation << " slot " << slot;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, kOpCount * 7 * 9);
}

TEST(UserData, RoundTripsRandomTags) {
  std::mt19937_64 rng(20240611);
  for (int i = 0; i < 100'000; ++i) {
    const OpTag tag{kAllOps[rng() % kOpCount], static_cast<std::uint32_t>(rng()) & kGenerationMask,
                    static_cast<std::uint32_t>(rng())};
    ASSERT_EQ(decode(encode(tag)), tag) << "iteration " << i;
  }
}

TEST(UserData, FieldsSitWhereTheLayoutSays) {
  // op in bits 63..56, generation in 55..32, slot in 31..0.
  EXPECT_EQ(encode({Op::accept, 0, 0}), 0u);
  EXPECT_EQ(encode({Op::close, 0, 0}), std::uint64_t{6} << 56);
  EXPECT_EQ(encode({Op::accept, 1, 0}), std::uint64_t{1} << 32);
  EXPECT_EQ(encode({Op::accept, 0, 1}), 1u);
  EXPECT_EQ(encode({Op::close, kGenerationMask, UINT32_MAX}), 0x06FF'FFFF'FFFF'FFFFu);
  EXPECT_EQ(encode({Op::recv, 0x123456, 0x89ABCDEF}), 0x0212'3456'89AB'CDEFu);
  EXPECT_EQ(kGenerationBits, 24u);
  EXPECT_EQ(kGenerationMask, 0xFFFFFFu);
}

TEST(UserData, GenerationIsTruncatedTo24BitsWithoutTouchingOpOrSlot) {
  for (Op op : kAllOps) {
    for (std::uint32_t generation : {0x01000000u, 0x01234567u, 0xFF000001u, UINT32_MAX}) {
      const OpTag decoded = decode(encode({op, generation, 42}));
      EXPECT_EQ(decoded.op, op) << "generation " << generation << " leaked into the op byte";
      EXPECT_EQ(decoded.generation, generation & 0xFFFFFFu);
      EXPECT_EQ(decoded.slot, 42u);
    }
  }
  // A generation that wrapped compares equal to its truncation: the engine masks its
  // generations to 24 bits for that reason.
  // (The tag's 24-bit field truncates it when the tag is made.)
  for (std::uint32_t wrapped : {0x1000005u}) {
    EXPECT_EQ(decode(encode({Op::send, wrapped, 9})), decode(encode({Op::send, 5, 9})));
  }
}

TEST(UserData, SlotUsesTheFull32BitsWithoutTouchingGeneration) {
  const OpTag tag = decode(encode({Op::send, 0, UINT32_MAX}));
  EXPECT_EQ(tag.slot, UINT32_MAX);
  EXPECT_EQ(tag.generation, 0u);
  EXPECT_EQ(tag.op, Op::send);
  const OpTag high = decode(encode({Op::recv, kGenerationMask, 0}));
  EXPECT_EQ(high.slot, 0u);
  EXPECT_EQ(high.generation, kGenerationMask);
}

TEST(UserData, IsKnownAcceptsExactlyTheSubmittedOps) {
  for (Op op : kAllOps) EXPECT_TRUE(is_known(op)) << int(op);
  for (unsigned value = kOpCount; value < 256; ++value) {
    EXPECT_FALSE(is_known(static_cast<Op>(value))) << value;
  }
  // An op byte the manager never writes still decodes, and is_known() rejects it.
  const OpTag foreign = decode(0xC8'000001'00000002u);
  EXPECT_FALSE(is_known(foreign.op));
  EXPECT_EQ(foreign.generation, 1u);
  EXPECT_EQ(foreign.slot, 2u);
}

TEST(OpTable, NamesEachOpOnce) {
  std::set<std::string_view> names;
  for (Op op : kAllOps) EXPECT_TRUE(names.insert(op_def(op).name).second) << op_def(op).name;
  EXPECT_EQ(op_def(Op::send_file_poll).name, "send_file_poll");
}

TEST(OpTable, TheConnectionsOpsAreExactlyTheEnginesRequests) {
  const std::set<Op> engine_ops = {Op::recv, Op::send, Op::shutdown, Op::cancel, Op::close};
  for (Op op : kAllOps) {
    EXPECT_EQ(belongs_to_connection(op), engine_ops.count(op) == 1) << op_def(op).name;
  }
}

// Each connection op marks its own bit, and only it; the others never count as in flight.
TEST(OpTable, InFlightBitsAreTheConnectionsOwn) {
  for (Op op : kAllOps) {
    Connection connection;
    connection.mark_submitted(op);
    EXPECT_EQ(connection.in_flight, op_def(op).in_flight_bit) << op_def(op).name;
    for (Op other : kAllOps) {
      EXPECT_EQ(connection.is_in_flight(other), other == op && belongs_to_connection(op))
          << op_def(op).name << " / " << op_def(other).name;
    }
    connection.mark_completed(op);
    EXPECT_EQ(connection.in_flight, 0u) << op_def(op).name;
  }
}

}  // namespace
}  // namespace ringlinger::detail
