// What the model expects of one adopted connection, kept independently of the engine: the bytes
// queued and sent, the calls made on it, its timers and the outcome they predict. Part of
// engine_model.hpp.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine_model/basics.hpp"

namespace ringlinger::detail::engine_model {

// What the test knows about one adopted connection, independently of the engine.
struct Model {
  ConnectionId id;
  int fd = -1;
  TimePoint adopted_at{};

  std::string queued;                // every byte send()/send_view() accepted, in order
  std::uint64_t sent = 0;            // sum of positive send results the fake delivered
  std::uint64_t received = 0;        // recv bytes delivered while the connection was open
  std::uint64_t discarded = 0;       // recv bytes delivered after close()/abort()/termination
  std::uint64_t recv_parts = 0;      // ... of them, parts of a discarding recv (Completion::more)
  std::uint64_t callback_bytes = 0;  // bytes on_receive was given
  std::vector<std::unique_ptr<std::vector<std::byte>>> borrowed;  // send_view() storage

  bool close_requested = false;  // close() while open (by the test or a callback)
  TimePoint close_requested_at{};
  bool reset_expected_by_abort = false;  // abort() hit it while cancelling
  bool reset_requested = false;          // set_reset_on_close() was called on its fd
  bool orphan_limited = false;           // limit_orphan_time() was called on its fd

  bool terminated = false;  // the engine submitted its cancel or close
  TimePoint terminated_at{};
  std::optional<Outcome> expected_outcome;
  bool cancel_submitted = false;
  bool close_submitted = false;

  bool shutdown_issued = false;  // shutdown_now() called or IORING_OP_SHUTDOWN submitted
  TimePoint shutdown_issued_at{};
  bool shutdown_ok = false;  // ... and it succeeded
  TimePoint shutdown_ok_at{};
  bool eof_seen = false;  // a recv returned 0
  bool waiting = false;   // a delivering recv got ENOBUFS and awaits a retry
  std::uint64_t acked = 0;  // the peer's acknowledged-byte counter the fake gave last (grows)
  std::optional<std::uint64_t> acked_asked;  // what the engine keeps of it (known answers only)
  TimePoint progress_at{};  // the last progress the engine knows (the progress timers' start)
  bool progress_noted = false;  // input or a completed send since the running timer was armed

  bool write_shutdown_requested = false;  // shutdown_write() accepted (while open)
  bool write_shutdown_issued = false;     // ... and its shutdown(2) was called, while open
  bool write_shut_down = false;           // ... and succeeded: close() goes straight to draining
  bool paused = false;                    // pause_receive() since the last resume_receive()

  bool send_armed = false;  // the send timeout runs (bytes queued, not all sent, or awaiting acks)
  TimePoint send_deadline{};
  bool idle_armed = false;  // the drain idle timeout runs
  TimePoint idle_deadline{};

  bool reset_after_send = false;  // abort_after_send() accepted
  bool ack_wait_armed = false;    // ... everything sent, the acknowledgement awaited (listed)
  bool all_acknowledged = false;  // ... the kernel said so (or could not say): reset now

  int first_error = 0;
  ErrorSource first_error_source = ErrorSource::none;
  bool closed = false;  // on_closed ran
  bool accepted = false;  // adopted as the manager's listener's (Connection::accepted)

  std::uint64_t unsent() const { return queued.size() - sent; }
  bool open() const { return !close_requested && !terminated; }
  bool draining() const { return shutdown_ok && !terminated; }
  // The engine's write side (state_machine.hpp) these imply.
  WriteSide write_side() const {
    if (write_shut_down) return WriteSide::shut_down;
    return write_shutdown_requested ? WriteSide::shutdown_requested : WriteSide::open;
  }
};

}  // namespace ringlinger::detail::engine_model
