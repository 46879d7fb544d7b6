// The 64-bit user_data of every submission: which operation, for which slot, in which generation
// of that slot. A value, never a pointer, and never an fd.
//
//   63       56 55                     32 31                                   0
//  +-----------+-------------------------+--------------------------------------+
//  |    op     |    generation (24 bit)  |              slot (32 bit)           |
//  +-----------+-------------------------+--------------------------------------+
//
// The generation is the slot's generation when the request was submitted. A completion whose
// generation differs from the slot's current one belongs to an earlier connection in that slot
// and is ignored, so a late completion can never touch the connection that reused the slot.
#pragma once

#include <bit>
#include <cstdint>
#include <type_traits>

namespace ringlinger::detail {

// Every kind of request the manager submits. A connection has at most one of each in flight.
// Each has a row in the op table (op_table.hpp) saying whose it is and who completes it.
enum class Op : std::uint8_t {
  accept,         // an accept on a listener that drains its backlog without waiting (slot =
                  // listener index)
  accept_cancel,  // cancel of a listener's wait for connections (slot = listener index)
  recv,           // receive: application data, or data to discard while closing
  send,           // send of the head of the connection's send queue
  shutdown,       // IORING_OP_SHUTDOWN(SHUT_WR) (shutdown mode "ring")
  cancel,         // cancel of every request on the connection's fd
  close,          // IORING_OP_CLOSE of the connection's fd
  send_file_poll, // io_uring backend only: the POLLOUT poll before a sendfile; the engine sees
                  // its completion as the send's
  listen_poll,    // io_uring backend: a listener's wait for connections, a multishot poll
                  // (slot = listener index)
  wake,           // a read of the manager's wake pipe (handoff() and stop() from other threads);
                  // not a connection's request: slot and generation are 0 (the last Op:
                  // kOpCount counts from it)
};

// Number of values of Op. The op table checks that it has this many rows.
inline constexpr unsigned kOpCount = static_cast<unsigned>(Op::wake) + 1;

inline constexpr std::uint32_t kGenerationBits = 24;
inline constexpr std::uint32_t kGenerationMask = (1u << kGenerationBits) - 1;

// The decoded form of user_data, laid out as user_data is (x86-64 and every little-endian
// target: bit-fields fill each unit from its low bits): eight bytes that travel in one register,
// and encode() and decode() are one move each. As three plain fields (twelve bytes, two
// registers, shifts and masks both ways) every request and every completion paid about ten
// instructions more (bench/callgrind.sh).
struct OpTag {
  std::uint32_t slot;
  std::uint32_t generation : kGenerationBits;  // only the low 24 bits are carried
  Op op : 8;

  OpTag() = default;
  constexpr OpTag(Op op_, std::uint32_t generation_, std::uint32_t slot_) noexcept
      : slot(slot_), generation(generation_ & kGenerationMask), op(op_) {}

  friend constexpr bool operator==(OpTag, OpTag) noexcept = default;
};

// Packs a tag into user_data (the generation is truncated to 24 bits).
constexpr std::uint64_t encode(OpTag tag) noexcept {
  if (std::is_constant_evaluated()) {  // bit_cast does not take bit-fields at compile time
    return (std::uint64_t{static_cast<std::uint8_t>(tag.op)} << 56) |
           (std::uint64_t{tag.generation} << 32) | std::uint64_t{tag.slot};
  }
  return std::bit_cast<std::uint64_t>(tag);
}

// Unpacks user_data.
constexpr OpTag decode(std::uint64_t user_data) noexcept {
  if (std::is_constant_evaluated()) {
    return OpTag{static_cast<Op>(user_data >> 56),
                 static_cast<std::uint32_t>(user_data >> 32) & kGenerationMask,
                 static_cast<std::uint32_t>(user_data)};
  }
  return std::bit_cast<OpTag>(user_data);
}

static_assert(sizeof(OpTag) == sizeof(std::uint64_t) && std::endian::native == std::endian::little,
              "OpTag is user_data's layout: eight bytes, little-endian");

// A part of a multishot request (a completion with IORING_CQE_F_MORE: the request goes on) has its
// op byte's top bit set. No user_data carries it: the backend adds it to the completion's tag,
// and the engine's handlers, one per op byte, send a part to a handler that leaves the request in
// flight. A flag in the tag's register, not an argument more: as an argument, the completion path
// (the backend's loop, on_completion() and the handlers) took 77 instructions more per close
// (bench/callgrind.sh).
inline constexpr std::uint8_t kPartBit = 0x80;
static_assert(kOpCount <= kPartBit, "the op byte's top bit marks a part");

// `tag` as a part's: one or of the register (a store to the bit-field took six instructions).
constexpr OpTag as_part(OpTag tag) noexcept {
  if (std::is_constant_evaluated()) {
    tag.op = static_cast<Op>(static_cast<std::uint8_t>(tag.op) | kPartBit);
    return tag;
  }
  return std::bit_cast<OpTag>(std::bit_cast<std::uint64_t>(tag) | std::uint64_t{kPartBit} << 56);
}

// Whether `op` decoded from a completion is one the manager ever submits.
constexpr bool is_known(Op op) noexcept { return static_cast<unsigned>(op) < kOpCount; }

}  // namespace ringlinger::detail
