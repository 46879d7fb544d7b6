// The boundary between the connection logic (Engine) and the kernel. The io_uring backend
// implements it with SQEs; the test fuzzer implements it with a seeded fake that completes
// requests in any order with any result.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "core/peer_acks.hpp"
#include "core/user_data.hpp"

namespace ringlinger::detail {

// What a receive does with the bytes.
enum class RecvMode : std::uint8_t {
  deliver,  // into a shared receive buffer, handed to the application's receive callback
  discard,  // thrown away without copying (MSG_TRUNC): the connection is closing
};

// One finished request, as the engine sees it.
struct Completion {
  OpTag tag;
  // The request's result: bytes for recv/send, 0 or -errno otherwise.
  std::int32_t result = 0;
  // For a delivering recv: the bytes received, valid only while the completion is handled.
  std::span<const std::byte> data;
  // A part of a request that goes on (IORING_CQE_F_MORE): the request stays in flight, and a
  // later completion of the same tag, without `more`, ends it. Only a discarding recv has parts.
  bool more = false;
};

class IoPort {
 public:
  virtual ~IoPort() = default;

  // Asynchronous requests. Each completes later, exactly once, with a Completion carrying `tag`;
  // a discarding recv may first complete in parts (Completion::more).
  // recv: `max_bytes` is 0 for a delivering receive (one shared buffer's worth). A discarding
  // receive takes at most `max_bytes` (1 or more) in all its parts together, each part at most
  // kDiscardChunkBytes: a backend may complete it at once (min(max_bytes, kDiscardChunkBytes)),
  // or in parts until the peer's FIN, an error or a total that leaves less than a part (the io_uring
  // backend's multishot receive, when the kernel can stop one: kernel/receive_limit.hpp).
  virtual void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) = 0;
  // `more`: other bytes are queued behind these (MSG_MORE: the kernel may wait for them to fill
  // a segment instead of sending a small one, e.g. a response head before its body).
  virtual void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) = 0;
  // A send of up to `length` bytes of `file_fd` from `offset`, without copying them (sendfile);
  // completes like submit_send, with the bytes sent.
  virtual void submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                                std::uint32_t length) = 0;
  // The send just submitted for `tag` is one the connection's FIN follows (close() came after
  // it): a backend may have the kernel hold its last segment (MSG_MORE) so that the shutdown
  // sends data and FIN as one segment, one segment fewer per close (docs/PERFORMANCE.md). It
  // must then hand the send to the kernel and report its completion before it waits, or the
  // data would wait with it. True when it holds it; the default ignores it.
  virtual bool fin_follows(OpTag tag) {
    (void)tag;
    return false;
  }
  // A send the connection's FIN follows (Manager::send_view_and_close()): as submit_send(), and,
  // as for fin_follows(), a backend may have the kernel hold its last segment for the FIN. True
  // when it holds it; the default sends it as submit_send() does.
  virtual bool submit_final_send(OpTag tag, int fd, std::span<const std::byte> bytes) {
    submit_send(tag, fd, bytes, false);
    return false;
  }
  // What fin_follows() held goes out now, for a connection that will not shut down after all
  // (abort_after_send: its reset waits for the peer to acknowledge every byte).
  virtual void push_held(int fd) { (void)fd; }
  virtual void submit_shutdown(OpTag tag, int fd) = 0;  // SHUT_WR
  virtual void submit_cancel(OpTag tag, int fd) = 0;    // every request on fd
  virtual void submit_close(OpTag tag, int fd) = 0;
  // A close that completes only if it fails (io_uring's IOSQE_CQE_SKIP_SUCCESS), for a drain the
  // peer's FIN ended: the engine reports the connection closed at once. The backend closes the
  // fd before its next wait, and a failure (a socket's close has none but EBADF, a bug) comes
  // back as a stale completion. True when submitted so; false, with nothing submitted, where the
  // backend cannot (the default): the caller then submits an ordinary close.
  virtual bool submit_close_unreported(OpTag tag, int fd) {
    (void)tag;
    (void)fd;
    return false;
  }

  // Synchronous system calls; only ever made on an fd whose close was not yet submitted.
  // shutdown(fd, SHUT_WR): 0 or -errno.
  virtual int shutdown_now(int fd) = 0;
  // SO_LINGER {1, 0}: the coming close sends RST.
  virtual void set_reset_on_close(int fd) = 0;
  // TCP_USER_TIMEOUT: after the coming close, the kernel gives up delivering what is queued
  // after `milliseconds` without progress. A no-op where there is no real socket (fakes).
  virtual void limit_orphan_time(int fd, std::uint32_t milliseconds) {
    (void)fd;
    (void)milliseconds;
  }
  // What the kernel knows of the peer's acknowledgements (TCP_INFO), for the progress timers:
  // asked only when a send or drain idle timer expires, or while abort_after_send() waits.
  virtual PeerAcks peer_acks(int fd, std::chrono::steady_clock::time_point now) = 0;
};

}  // namespace ringlinger::detail
