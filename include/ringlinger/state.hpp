// The lifecycle of one connection slot. The legal transitions between these states are listed in
// one table, in src/core/state_machine.hpp; every change of state goes through transition() there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ringlinger {

// What is true of a connection in each state. "In flight" means submitted to the kernel (or
// prepared in the submission queue) and its completion not yet handled.
enum class State : std::uint8_t {
  // Slot unused: no fd, nothing in flight.
  free,
  // Application phase: the fd is ours; sends may be in flight; a receive is in flight when the
  // manager delivers data (a receive callback is set) and the peer has not sent EOF.
  open,
  // close() was called: queued bytes are still being sent; input is read and discarded. After
  // abort_after_send(), it stays here until the peer acknowledged them all, then resets.
  flushing,
  // Everything was sent; IORING_OP_SHUTDOWN(SHUT_WR) is in flight (shutdown mode "ring" only).
  shutting_down,
  // SHUT_WR done, our FIN is queued behind all our data; a discarding receive is in flight until
  // it returns 0 (clean), fails, or a drain timeout or the drain byte cap ends it.
  draining,
  // The outcome is decided; a cancel of every request on the fd is in flight and we wait for
  // every completion. No new request is started.
  cancelling,
  // Nothing but IORING_OP_CLOSE is in flight; the outcome is reported when it completes (at once
  // for a drain the peer's FIN ended, on io_uring: that close has no completion).
  closing,
};

// Number of values of State (for tables indexed by state).
inline constexpr std::size_t kStateCount = 7;

// Lower-case name of a state, e.g. "draining".
std::string_view to_string(State state) noexcept;

}  // namespace ringlinger
