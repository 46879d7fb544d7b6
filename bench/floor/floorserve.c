// The floor of a graceful close's user-space work on io_uring: the least a single-threaded server
// does per connection in the order ringlinger keeps (answer, shutdown(SHUT_WR), drain until EOF,
// close), to compare `ringlinger serve`'s instructions per close against (issue 17, target 2).
// One ring, which waits as ringlinger's does (a batch of completions for half the open
// connections or 2 ms, whichever comes first: min_wait_usec). The listener has a multishot poll
// and accepts that do not wait, as ringlinger's (a waiting multishot accept would wake the thread
// out of every batched wait). Per connection: one receive of the head into its own 2 KiB buffer,
// one send of a fixed response, shutdown(2), receives with MSG_TRUNC until 0, and an
// IORING_OP_CLOSE: the same six completions per close as ringlinger serve. No timers, no limits,
// no reports, no provided buffers, no HTTP beyond finding the end of the head: a measuring
// instrument, not a server to deploy (a peer that never sends its head holds its slot forever).
//   floorserve PORT [RESPONSE_BYTES [VARIANT...]]   (127.0.0.1; default 16384; runs until killed)
// Variants, to measure issue 17's directions on the floor (each alone or together):
//   skip-close     the close with IOSQE_CQE_SKIP_SUCCESS: no completion, the slot freed at once
//   ring-shutdown  IORING_OP_SHUTDOWN instead of shutdown(2) (the kernel runs it on io-wq)
//   direct         direct descriptors: accepted into the ring's fixed-file table, every request
//                  with IOSQE_FIXED_FILE, closed with a direct close; implies ring-shutdown, as
//                  shutdown(2) needs a real fd
//   mshot-drain    the drain as one multishot receive (MSG_TRUNC, buffers selected from a ring
//                  whose entries all point at the drain area, each given back at its completion):
//                  one request for the body and the EOF, where the plain drain submits two
//   defer-accept   TCP_DEFER_ACCEPT (1 s) on the listener: a connection is taken with its request
//   fin-with-data  the send with MSG_MORE: the kernel holds the response until the shutdown, which
//                  sends it with the FIN (held until the send's completion is handled, after the
//                  batched wait: a measure of the segments saved, not a way to serve)
// The response is the one `ringlinger client` checks: ringlinger serve's body pattern.
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_ring.h"

enum {
  kSlots = 16384,        // connections at once (RLIMIT_NOFILE bounds it anyway)
  kHeadBytes = 2048,     // a head that does not fit is answered as if it did: a floor
  kDrainBytes = 262144,  // what ringlinger asks per discarding receive
};
enum Op { kPoll, kAccept, kHead, kSend, kDrain, kClose, kShutdown, kDrainMultishot };
enum {
  kDrainGroup = 1,        // mshot-drain's buffer group
  kDrainBuffers = 4096,   // its entries, all pointing at drain_area (nothing is copied: MSG_TRUNC)
};

struct Slot {
  int fd;
  unsigned head_bytes;
  char head[kHeadBytes];
};

static struct Slot slots[kSlots];
static int free_slots[kSlots];
static int free_count;
static char drain_area[kDrainBytes];
static char* response;
static unsigned response_bytes;
static int skip_close, ring_shutdown, direct, mshot_drain, defer_accept, fin_with_data;
static struct io_uring_buf_ring* drain_buffers;

// Points the request at the connection's socket: its fd, or its index in the fixed-file table.
static void use_file(struct io_uring_sqe* sqe) {
  if (direct) sqe->flags |= IOSQE_FIXED_FILE;
}

static uint64_t pack(int slot, enum Op op) { return ((uint64_t)slot << 8) | (uint64_t)op; }

static void receive_head(struct io_uring* ring, int slot) {
  struct Slot* s = &slots[slot];
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_recv(sqe, s->fd, s->head + s->head_bytes, kHeadBytes - s->head_bytes, 0);
  use_file(sqe);
  io_uring_sqe_set_data64(sqe, pack(slot, kHead));
}

static void drain(struct io_uring* ring, int slot) {
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_recv(sqe, slots[slot].fd, drain_area, kDrainBytes, MSG_TRUNC);
  use_file(sqe);
  io_uring_sqe_set_data64(sqe, pack(slot, kDrain));
}

// mshot-drain: the body and the EOF through one request. Each completion with data took one of
// the group's entries: given back at once (they all name the same area).
static void drain_multishot(struct io_uring* ring, int slot) {
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_recv_multishot(sqe, slots[slot].fd, NULL, 0, MSG_TRUNC);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kDrainGroup;
  use_file(sqe);
  io_uring_sqe_set_data64(sqe, pack(slot, kDrainMultishot));
}

static void close_slot(struct io_uring* ring, int slot) {
  struct io_uring_sqe* sqe = floor_sqe(ring);
  if (direct) {
    io_uring_prep_close_direct(sqe, (unsigned)slots[slot].fd);
  } else {
    io_uring_prep_close(sqe, slots[slot].fd);
  }
  io_uring_sqe_set_data64(sqe, pack(slot, kClose));
  if (skip_close) {  // a failed close still completes: reported below
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    free_slots[free_count++] = slot;
  }
}

static void shut_write(struct io_uring* ring, int slot) {
  if (!ring_shutdown) {
    shutdown(slots[slot].fd, SHUT_WR);
    return;
  }
  // Not linked to the drain that follows (the drain does not need the FIN out first, and the peer
  // ends the input only after it saw it); the shutdown's completion is skipped unless it fails.
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_shutdown(sqe, slots[slot].fd, SHUT_WR);
  use_file(sqe);
  sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
  io_uring_sqe_set_data64(sqe, pack(slot, kShutdown));
}

static int accepting;  // a drain of the backlog is running

static void poll_listener(struct io_uring* ring, int listener) {
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_poll_multishot(sqe, listener, POLLIN);
  io_uring_sqe_set_data64(sqe, pack(0, kPoll));
}

// A multishot accept with IORING_ACCEPT_DONTWAIT (kernel 6.10; liburing 2.3 does not name it):
// one completion per queued connection, then -EAGAIN.
static void accept_all(struct io_uring* ring, int listener) {
  struct io_uring_sqe* sqe = floor_sqe(ring);
  if (direct) {
    io_uring_prep_multishot_accept_direct(sqe, listener, NULL, NULL, 0);
  } else {
    io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, 0);
  }
  sqe->ioprio |= 1u << 1;  // IORING_ACCEPT_DONTWAIT
  io_uring_sqe_set_data64(sqe, pack(0, kAccept));
  accepting = 1;
}

static void on_poll(struct io_uring* ring, int listener, const struct io_uring_cqe* cqe) {
  if ((cqe->flags & IORING_CQE_F_MORE) == 0) poll_listener(ring, listener);
  if (!accepting) accept_all(ring, listener);
}

static void on_accept(struct io_uring* ring, int listener, const struct io_uring_cqe* cqe) {
  if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
    accepting = 0;
    if (cqe->res != -EAGAIN) accept_all(ring, listener);  // ended early: drain again
  }
  if (cqe->res < 0) return;
  if (free_count == 0) {
    if (!direct) close(cqe->res);  // a direct one stays in the table: a floor, not a server
    return;
  }
  const int slot = free_slots[--free_count];
  slots[slot].fd = cqe->res;
  slots[slot].head_bytes = 0;
  receive_head(ring, slot);
}

// Whether the head's blank line is in `text`: each '\n' found by memchr (vectorised in glibc;
// memmem's two-way search costs 3x more here) checked for the "\r\n\r\n" around it.
static int has_end_of_head(const char* text, size_t size) {
  for (const char* p = text; (p = memchr(p, '\n', (size_t)(text + size - p))) != NULL; ++p) {
    if (p - text >= 3 && p[-1] == '\r' && p[-2] == '\n' && p[-3] == '\r') return 1;
  }
  return 0;
}

static void on_head(struct io_uring* ring, int slot, int result) {
  struct Slot* s = &slots[slot];
  if (result <= 0) return close_slot(ring, slot);
  s->head_bytes += (unsigned)result;
  if (!has_end_of_head(s->head, s->head_bytes) && s->head_bytes < kHeadBytes) {
    return receive_head(ring, slot);
  }
  struct io_uring_sqe* sqe = floor_sqe(ring);
  io_uring_prep_send(sqe, s->fd, response, response_bytes,
                     MSG_NOSIGNAL | MSG_WAITALL | (fin_with_data ? MSG_MORE : 0));
  use_file(sqe);
  io_uring_sqe_set_data64(sqe, pack(slot, kSend));
}

// A request whose success posts no completion failed (a peer's reset can fail the shutdown).
static void report_failure(const char* request, int result) {
  fprintf(stderr, "floorserve: a %s failed: %s\n", request, strerror(-result));
}

static void dispatch(struct io_uring* ring, int listener, const struct io_uring_cqe* cqe) {
  const int slot = (int)(cqe->user_data >> 8);
  switch ((enum Op)(cqe->user_data & 0xff)) {
    case kPoll:
      return on_poll(ring, listener, cqe);
    case kAccept:
      return on_accept(ring, listener, cqe);
    case kHead:
      return on_head(ring, slot, cqe->res);
    case kSend:  // whole (MSG_WAITALL) or failed: either way the write side is done
      shut_write(ring, slot);
      return mshot_drain ? drain_multishot(ring, slot) : drain(ring, slot);
    case kDrain:
      return cqe->res > 0 ? drain(ring, slot) : close_slot(ring, slot);
    case kClose:
      if (skip_close) return report_failure("close", cqe->res);  // only a failure completes
      free_slots[free_count++] = slot;
      return;
    case kShutdown:  // only a failure completes; the drain then ends the connection
      return report_failure("shutdown", cqe->res);
    case kDrainMultishot:
      floor_give_back(drain_buffers, kDrainBuffers, drain_area, kDrainBytes, cqe);
      if (cqe->res > 0) {
        // Still running, or ended early (the ring out of buffers, the CQ full): start it again.
        if ((cqe->flags & IORING_CQE_F_MORE) == 0) drain_multishot(ring, slot);
        return;
      }
      if (cqe->res == -ENOBUFS) return drain_multishot(ring, slot);
      return close_slot(ring, slot);  // EOF (it ends the multishot) or an error
  }
}

// bench/harness/http.hpp's payload_byte(): what the client expects at each offset.
static char payload_byte(uint64_t index) {
  static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW";
  return kAlphabet[(index + index / 4093) % 59];
}

static void make_response(unsigned body_bytes) {
  char head[160];
  const int head_bytes = snprintf(head, sizeof head,
                                  "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                  "Content-Length: %u\r\nConnection: close\r\n\r\n",
                                  body_bytes);
  response_bytes = (unsigned)head_bytes + body_bytes;
  response = malloc(response_bytes);
  if (response == NULL) exit(1);
  memcpy(response, head, (size_t)head_bytes);
  for (unsigned i = 0; i < body_bytes; ++i) response[head_bytes + i] = payload_byte(i);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: floorserve PORT [RESPONSE_BYTES "
                    "[skip-close|ring-shutdown|direct|mshot-drain|defer-accept|fin-with-data]...]\n");
    return 2;
  }
  for (int i = 3; i < argc; ++i) {
    if (strcmp(argv[i], "skip-close") == 0) {
      skip_close = 1;
    } else if (strcmp(argv[i], "ring-shutdown") == 0) {
      ring_shutdown = 1;
    } else if (strcmp(argv[i], "direct") == 0) {
      direct = ring_shutdown = 1;
    } else if (strcmp(argv[i], "mshot-drain") == 0) {
      mshot_drain = 1;
    } else if (strcmp(argv[i], "defer-accept") == 0) {
      defer_accept = 1;
    } else if (strcmp(argv[i], "fin-with-data") == 0) {
      fin_with_data = 1;
    } else {
      fprintf(stderr, "floorserve: unknown variant '%s'\n", argv[i]);
      return 2;
    }
  }
  make_response(argc >= 3 ? (unsigned)strtoul(argv[2], NULL, 10) : 16384);
  for (int slot = kSlots; slot-- > 0;) free_slots[free_count++] = slot;
  const int listener = floor_listen("floorserve", atoi(argv[1]));
  const int defer_seconds = 10;
  if (defer_accept &&
      setsockopt(listener, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_seconds, sizeof defer_seconds) != 0) {
    perror("floorserve: TCP_DEFER_ACCEPT");
    return 1;
  }
  struct io_uring ring;
  struct io_uring_params params = {
      .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
  if (io_uring_queue_init_params(4096, &ring, &params) != 0) {
    perror("floorserve: io_uring_queue_init_params");
    return 1;
  }
  if (direct && io_uring_register_files_sparse(&ring, kSlots) != 0) {
    fprintf(stderr, "floorserve: io_uring_register_files_sparse failed\n");
    return 1;
  }
  if (mshot_drain) {
    drain_buffers = floor_buffer_ring(&ring, kDrainGroup, kDrainBuffers, drain_area, kDrainBytes);
  }
  poll_listener(&ring, listener);
  for (;;) {
    floor_wait_for_batch(&ring, (unsigned)(kSlots - free_count));
    struct io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      dispatch(&ring, listener, cqe);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }
}
