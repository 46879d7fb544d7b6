// One connection slot: the state (see include/ringlinger/state.hpp for what each state means),
// which requests are in flight, and what is accounted for the close report.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "ringlinger/outcome.hpp"
#include "ringlinger/state.hpp"
#include "core/op_table.hpp"
#include "core/send_queue.hpp"
#include "core/state_machine.hpp"
#include "core/user_data.hpp"

namespace ringlinger::detail {

struct Connection {
  using TimePoint = std::chrono::steady_clock::time_point;

  // The socket; -1 when the slot is free.
  int fd = -1;
  // Incremented (mod 2^24) each time the slot is freed; part of every user_data and ConnectionId.
  std::uint32_t generation = 0;
  State state = State::free;
  // One bit per connection Op in flight (submitted or prepared, completion not yet handled), the
  // op table's in_flight_bit. At most one request of each kind is in flight per connection.
  std::uint8_t in_flight = 0;
  // Bit-fields, packed in two bytes (before `outcome`'s padding: the slot does not grow).
  // A receive returned 0: the peer sent its FIN. No receive is started after that.
  bool peer_eof : 1 = false;
  // SO_LINGER {1, 0} was set: the close sends RST.
  bool reset_on_close : 1 = false;
  // A delivering receive found no shared buffer (ENOBUFS); the engine retries it after the
  // current batch of completions, when buffers were given back.
  bool waiting_for_buffer : 1 = false;
  // An adopted socket made O_NONBLOCK by send_file, which needs it (an accepted one is already:
  // see `accepted`): send_file asks the kernel only once per adopted connection.
  bool nonblocking : 1 = false;
  // The half-close of an open connection (shutdown_write()), a sub-state of State::open with
  // its own legal edges (state_machine.hpp); changed only through Engine::set_write_side().
  WriteSide write_side : 2 = WriteSide::open;
  // pause_receive(): no delivering receive is started until resume_receive().
  bool receive_paused : 1 = false;
  // abort_after_send(): once every queued byte was sent and acknowledged, reset (no FIN).
  bool reset_after_send : 1 = false;
  // acked_when_asked holds what the kernel said (the progress timers have asked it once).
  bool acked_known : 1 = false;
  // Input or a completed send came after the running progress timer was armed (or last
  // re-armed): when it expires, a new period starts from progress_at (Engine::note_input()).
  bool progress_noted : 1 = false;
  // close() had the kernel hold the send in flight for the FIN (IoPort::fin_follows).
  bool fin_held : 1 = false;
  // The manager's listener accepted it, O_NONBLOCK. No one else knows its descriptor's number,
  // so its close may be reported before the kernel ran it (IoPort::submit_close_unreported). An
  // adopted fd's owner may reuse the number (dup2) once on_closed says it is closed.
  bool accepted : 1 = false;
  // Decided once, when the connection leaves the lingering states.
  std::optional<Outcome> outcome;
  // The first error seen (positive errno, below 4096 as every kernel error is), 0 if none. Kept
  // because the kernel reports an error only once: after ECONNRESET the next receive returns 0,
  // which is not a clean EOF. Two bytes, so that `slot` fits where the padding was.
  std::uint16_t first_error = 0;
  // The slot's index in the engine's table, kept across release() like `generation`: read where
  // the pointer difference divided by sizeof(Connection) cost 81 instructions per close (about
  // 20 uses: every request's tag, every timer operation, every ConnectionId).
  std::uint32_t slot = 0;
  // The peer's acknowledged-byte counter (tcpi_bytes_acked) when the kernel was last asked, its
  // low 32 bits: "moved" is "differs", wrong only if exactly a multiple of 4 GiB was acknowledged
  // between two looks.
  std::uint32_t acked_when_asked = 0;

  // The progress timers (send, drain idle; never both at once): the last progress known (input,
  // a completed send, an acknowledgement found when a timer expired, or the timer's start).
  TimePoint progress_at{};

  SendQueue send_queue;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bytes_discarded = 0;

  TimePoint opened_at{};
  TimePoint close_requested_at{};
  TimePoint shutdown_at{};
  TimePoint teardown_at{};

  bool is_in_flight(Op op) const noexcept { return (in_flight & bit(op)) != 0; }
  void mark_submitted(Op op) noexcept { in_flight = static_cast<std::uint8_t>(in_flight | bit(op)); }
  void mark_completed(Op op) noexcept {
    in_flight = static_cast<std::uint8_t>(in_flight & ~bit(op));
  }

 private:
  static constexpr std::uint8_t bit(Op op) noexcept { return op_def(op).in_flight_bit; }
};

// The slot stays small: a table of 100000 connections is 10 MB (x86-64, libstdc++).
static_assert(sizeof(void*) != 8 || sizeof(Connection) <= 104, "a connection slot grew");

}  // namespace ringlinger::detail
