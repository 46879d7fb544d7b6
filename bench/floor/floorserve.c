// The floor of a graceful close's user-space work on io_uring: the least a single-threaded server
// does per connection in the order ringlinger keeps (answer, shutdown(SHUT_WR), drain until EOF,
// close), to compare `ringlinger serve`'s instructions per close against (issue 17, target 2).
// One ring; a multishot accept; per connection one receive of the head into its own 2 KiB
// buffer, one send of a fixed response, shutdown(2), receives with MSG_TRUNC until 0, and an
// IORING_OP_CLOSE: the same six completions per close as ringlinger serve. No timers, no limits,
// no reports, no provided buffers, no HTTP beyond finding the end of the head: a measuring
// instrument, not a server to deploy (a peer that never sends its head holds its slot forever).
//   floorserve PORT [RESPONSE_BYTES]     (127.0.0.1; default 16384; runs until killed)
// The response is the one `ringlinger client` checks: ringlinger serve's body pattern.
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  kSlots = 16384,        // connections at once (RLIMIT_NOFILE bounds it anyway)
  kHeadBytes = 2048,     // a head that does not fit is answered as if it did: a floor
  kDrainBytes = 262144,  // what ringlinger asks per discarding receive
};
enum Op { kAccept, kHead, kSend, kDrain, kClose };

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

static uint64_t pack(int slot, enum Op op) { return ((uint64_t)slot << 8) | (uint64_t)op; }

static struct io_uring_sqe* sqe_for(struct io_uring* ring) {
  struct io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == NULL) {  // the queue is full: hand it to the kernel first
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

static void receive_head(struct io_uring* ring, int slot) {
  struct Slot* s = &slots[slot];
  struct io_uring_sqe* sqe = sqe_for(ring);
  io_uring_prep_recv(sqe, s->fd, s->head + s->head_bytes, kHeadBytes - s->head_bytes, 0);
  io_uring_sqe_set_data64(sqe, pack(slot, kHead));
}

static void drain(struct io_uring* ring, int slot) {
  struct io_uring_sqe* sqe = sqe_for(ring);
  io_uring_prep_recv(sqe, slots[slot].fd, drain_area, kDrainBytes, MSG_TRUNC);
  io_uring_sqe_set_data64(sqe, pack(slot, kDrain));
}

static void close_slot(struct io_uring* ring, int slot) {
  struct io_uring_sqe* sqe = sqe_for(ring);
  io_uring_prep_close(sqe, slots[slot].fd);
  io_uring_sqe_set_data64(sqe, pack(slot, kClose));
}

static void accept_all(struct io_uring* ring, int listener) {
  struct io_uring_sqe* sqe = sqe_for(ring);
  io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, 0);
  io_uring_sqe_set_data64(sqe, pack(0, kAccept));
}

static void on_accept(struct io_uring* ring, int listener, const struct io_uring_cqe* cqe) {
  if ((cqe->flags & IORING_CQE_F_MORE) == 0) accept_all(ring, listener);
  if (cqe->res < 0) return;
  if (free_count == 0) {
    close(cqe->res);
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
  struct io_uring_sqe* sqe = sqe_for(ring);
  io_uring_prep_send(sqe, s->fd, response, response_bytes, MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, pack(slot, kSend));
}

static void dispatch(struct io_uring* ring, int listener, const struct io_uring_cqe* cqe) {
  const int slot = (int)(cqe->user_data >> 8);
  switch ((enum Op)(cqe->user_data & 0xff)) {
    case kAccept:
      return on_accept(ring, listener, cqe);
    case kHead:
      return on_head(ring, slot, cqe->res);
    case kSend:  // whole (MSG_WAITALL) or failed: either way the write side is done
      shutdown(slots[slot].fd, SHUT_WR);
      return drain(ring, slot);
    case kDrain:
      return cqe->res > 0 ? drain(ring, slot) : close_slot(ring, slot);
    case kClose:
      free_slots[free_count++] = slot;
      return;
  }
}

static int listen_on(int port) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  const int on = 1;
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      bind(listener, (struct sockaddr*)&address, sizeof address) != 0 ||
      listen(listener, 4096) != 0) {
    perror("floorserve: listen");
    exit(1);
  }
  return listener;
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
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: floorserve PORT [RESPONSE_BYTES]\n");
    return 2;
  }
  make_response(argc == 3 ? (unsigned)strtoul(argv[2], NULL, 10) : 16384);
  for (int slot = kSlots; slot-- > 0;) free_slots[free_count++] = slot;
  const int listener = listen_on(atoi(argv[1]));
  struct io_uring ring;
  struct io_uring_params params = {
      .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
  if (io_uring_queue_init_params(4096, &ring, &params) != 0) {
    perror("floorserve: io_uring_queue_init_params");
    return 1;
  }
  accept_all(&ring, listener);
  for (;;) {
    io_uring_submit_and_wait(&ring, 1);
    struct io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      dispatch(&ring, listener, cqe);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
  }
}
