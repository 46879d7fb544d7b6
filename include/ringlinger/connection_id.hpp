// A handle to one connection of a Manager: a slot and the generation the slot had when the
// connection started, so a handle kept after the connection closed is recognised as stale.
#pragma once

#include <compare>
#include <cstdint>

namespace ringlinger {

// Identifies one connection for its whole life. Cheap to copy; compare with ==.
struct ConnectionId {
  // Dense index, below Config::max_connections; reused after the connection is closed, so an
  // application may index its own per-connection tables by it.
  std::uint32_t slot = UINT32_MAX;
  // Distinguishes successive connections in the same slot.
  std::uint32_t generation = 0;

  // Whether this handle was ever assigned (a default-constructed one is not).
  constexpr bool valid() const noexcept { return slot != UINT32_MAX; }
  friend constexpr bool operator==(ConnectionId, ConnectionId) noexcept = default;
};

}  // namespace ringlinger
