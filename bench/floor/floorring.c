// The floor of an L4 proxy's CPU on io_uring: the least a single-threaded proxy on one ring does
// per request, to compare `ringlinger proxy` against (issue 17, target 3), beside floorproxy.c's
// epoll floors. One upstream connection per client, made with a non-blocking connect(2) as
// ringlinger's proxy makes it. Each direction has one multishot receive into a ring of provided
// buffers (64 KiB each, 64 of them: the proxy's default pool) and at most one send in flight;
// the received buffers wait in order behind it and go back to the ring once sent. The ring waits
// as ringlinger's does (a batch of completions for half the open connections, or 2 ms:
// min_wait_usec), so one io_uring_enter submits and reaps a whole batch.
// A FIN is passed on as shutdown(2) once what came before it is sent; the pair is closed (in the
// ring, no completion) when both sides sent FIN, or after its requests are cancelled on an error.
// No graceful-close niceties (no drain, no timeouts, no flow-control limits beyond the pool): a
// measuring instrument, not a proxy to deploy.
//   floorring ring|inline|lean LISTEN_PORT UPSTREAM_PORT   (127.0.0.1 both; runs until killed)
// ring: every send in the ring. inline: a send(2) straight away when nothing waits in that
// direction (the rest in the ring), as ringlinger's proxy sends its long forwards (there, only
// those of at least 32 KiB; here every one).
// lean: ring, and three system calls fewer per client connection than ringlinger's proxy makes: no
// TCP_NODELAY on either socket, and the second FIN goes out with the close, not with a shutdown(2).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "floor_ring.h"

enum {
  kPairs = 4096,         // client connections at once
  kBuffers = 64,         // provided buffers (a power of two), each a queue entry at most
  kBufferBytes = 65536,
  kGroup = 0,
};
enum Op { kPoll, kAccept, kRecv, kSend = kRecv + 2, kIgnore = kSend + 2 };  // + direction (0, 1)

struct Chunk {
  uint16_t buffer;
  uint32_t offset, length;
};

// One direction: bytes received on fds[dir], sent on fds[1 - dir].
struct Flow {
  struct Chunk queue[kBuffers];  // received, not yet sent; queue[head] is being sent
  unsigned head, count;
  int waiting;       // it ended for want of a buffer: armed again when one comes back
  int sending;       // a send is in flight
  int eof, shut;     // the source sent FIN; it was passed on
};

struct Pair {
  int fds[2];  // 0: the client, 1: the upstream
  struct Flow flows[2];
  int in_flight;  // receives armed and sends in flight
  int dead;       // an error: cancelled, closed once nothing is in flight
};

static struct Pair pairs[kPairs];
static int free_pairs[kPairs];
static int free_count;
static struct io_uring ring;
static struct io_uring_buf_ring* buffer_ring;
static char* buffer_area;
static int inline_sends, lean, accepting, buffers_returned;
static int waiting_flows[2 * kPairs];  // pair * 2 + direction: receives that found no buffer
static int waiting_count;
static struct sockaddr_in upstream;

static void die(const char* what) {
  perror(what);
  exit(1);
}

static uint64_t pack(int pair, enum Op op) { return ((uint64_t)pair << 8) | (uint64_t)op; }

static void give_back(uint16_t buffer) {
  io_uring_buf_ring_add(buffer_ring, buffer_area + (size_t)buffer * kBufferBytes, kBufferBytes,
                        buffer, io_uring_buf_ring_mask(kBuffers), 0);
  io_uring_buf_ring_advance(buffer_ring, 1);
  buffers_returned = 1;
}

// The flow's oldest chunk was sent (or is dropped): its buffer goes back to the ring.
static void pop_head(struct Flow* f) {
  give_back(f->queue[f->head].buffer);
  f->head = (f->head + 1) % kBuffers;
  --f->count;
}

static void receive(int pair, int dir) {
  struct Flow* f = &pairs[pair].flows[dir];
  struct io_uring_sqe* sqe = floor_sqe(&ring);
  io_uring_prep_recv_multishot(sqe, pairs[pair].fds[dir], NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kGroup;
  io_uring_sqe_set_data64(sqe, pack(pair, (enum Op)(kRecv + dir)));
  f->waiting = 0;
  ++pairs[pair].in_flight;
}

static void release(int pair) {
  struct Pair* p = &pairs[pair];
  for (int dir = 0; dir < 2; ++dir) {
    while (p->flows[dir].count > 0) pop_head(&p->flows[dir]);
    struct io_uring_sqe* sqe = floor_sqe(&ring);
    io_uring_prep_close(sqe, p->fds[dir]);
    sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(sqe, pack(pair, kIgnore));
  }
  free_pairs[free_count++] = pair;
}

static void kill_pair(int pair) {
  struct Pair* p = &pairs[pair];
  if (p->dead) return;
  p->dead = 1;
  for (int dir = 0; dir < 2; ++dir) {
    struct io_uring_sqe* sqe = floor_sqe(&ring);
    io_uring_prep_cancel_fd(sqe, p->fds[dir], IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, pack(pair, kIgnore));
  }
}

// Sends the flow's oldest chunk: inline when allowed and the socket takes it all, else in the
// ring. Returns 0, or -1 when the pair failed.
static int send_head(int pair, int dir) {
  struct Pair* p = &pairs[pair];
  struct Flow* f = &p->flows[dir];
  struct Chunk* c = &f->queue[f->head];
  const char* bytes = buffer_area + (size_t)c->buffer * kBufferBytes + c->offset;
  if (inline_sends) {
    const ssize_t sent = send(p->fds[1 - dir], bytes, c->length, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent < 0 && errno != EAGAIN) return -1;
    if (sent == (ssize_t)c->length) return 1;  // done: the caller takes the next
    if (sent > 0) {
      c->offset += (uint32_t)sent;
      c->length -= (uint32_t)sent;
      bytes += sent;
    }
  }
  struct io_uring_sqe* sqe = floor_sqe(&ring);
  io_uring_prep_send(sqe, p->fds[1 - dir], bytes, c->length, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, pack(pair, (enum Op)(kSend + dir)));
  f->sending = 1;
  ++p->in_flight;
  return 0;
}

// Sends what waits in the flow, then passes its FIN on once everything before it went.
static int pump(int pair, int dir) {
  struct Flow* f = &pairs[pair].flows[dir];
  while (!f->sending && f->count > 0) {
    const int result = send_head(pair, dir);
    if (result < 0) return -1;
    if (result == 0) return 0;
    pop_head(f);
  }
  if (f->eof && !f->shut && !f->sending && f->count == 0) {
    f->shut = 1;
    // lean: the other way's FIN was passed on, so the pair closes next: its close sends this one.
    if (!lean || !pairs[pair].flows[1 - dir].shut) shutdown(pairs[pair].fds[1 - dir], SHUT_WR);
  }
  return 0;
}

// Once nothing is in flight: a dead pair, or one whose two FINs were both passed on, is closed.
static void settle(int pair) {
  struct Pair* p = &pairs[pair];
  if (p->in_flight > 0) return;
  if (p->dead || (p->flows[0].shut && p->flows[1].shut)) release(pair);
}

static void on_receive(int pair, int dir, const struct io_uring_cqe* cqe) {
  struct Pair* p = &pairs[pair];
  struct Flow* f = &p->flows[dir];
  const int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
  if (!more) --p->in_flight;  // the multishot receive ended
  if (cqe->res > 0) {
    const uint16_t buffer = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
    if (p->dead) {
      give_back(buffer);
    } else {
      f->queue[(f->head + f->count++) % kBuffers] =
          (struct Chunk){buffer, 0, (uint32_t)cqe->res};
      if (pump(pair, dir) < 0) kill_pair(pair);
    }
  } else if (cqe->res == 0) {
    f->eof = 1;
    if (!p->dead && pump(pair, dir) < 0) kill_pair(pair);
  } else if (cqe->res == -ENOBUFS) {
    f->waiting = 1;
    waiting_flows[waiting_count++] = pair * 2 + dir;  // once per arm: the receive ended
  } else if (cqe->res != -ECANCELED) {
    kill_pair(pair);
  }
  if (!more && !p->dead && !f->eof && !f->waiting) receive(pair, dir);  // ended early: again
  settle(pair);
}

static void on_send(int pair, int dir, int result) {
  struct Pair* p = &pairs[pair];
  struct Flow* f = &p->flows[dir];
  f->sending = 0;
  --p->in_flight;
  if (p->dead) return settle(pair);
  struct Chunk* c = &f->queue[f->head];
  if (result > 0 && (uint32_t)result < c->length) {  // short: the rest goes next
    c->offset += (uint32_t)result;
    c->length -= (uint32_t)result;
  } else if (result > 0) {
    pop_head(f);
  }
  if (result <= 0 || pump(pair, dir) < 0) kill_pair(pair);
  settle(pair);
}

static void poll_listener(int listener) {
  struct io_uring_sqe* sqe = floor_sqe(&ring);
  io_uring_prep_poll_multishot(sqe, listener, POLLIN);
  io_uring_sqe_set_data64(sqe, pack(0, kPoll));
}

// A multishot accept with IORING_ACCEPT_DONTWAIT (kernel 6.10; liburing 2.3 does not name it):
// one completion per queued connection, then -EAGAIN (floorserve.c's way, and ringlinger's).
static void accept_all(int listener) {
  struct io_uring_sqe* sqe = floor_sqe(&ring);
  io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  sqe->ioprio |= 1u << 1;  // IORING_ACCEPT_DONTWAIT
  io_uring_sqe_set_data64(sqe, pack(0, kAccept));
  accepting = 1;
}

static void on_accepted(int client) {
  const int one = 1;
  const int server = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (free_count == 0 || server < 0 ||
      (connect(server, (struct sockaddr*)&upstream, sizeof upstream) != 0 &&
       errno != EINPROGRESS)) {
    close(client);
    if (server >= 0) close(server);
    return;
  }
  if (!lean) {
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  const int pair = free_pairs[--free_count];
  memset(&pairs[pair], 0, sizeof pairs[pair]);
  pairs[pair].fds[0] = client;
  pairs[pair].fds[1] = server;
  receive(pair, 0);
  receive(pair, 1);
}

static void dispatch(int listener, const struct io_uring_cqe* cqe) {
  const int pair = (int)(cqe->user_data >> 8);
  const int op = (int)(cqe->user_data & 0xff);  // an Op, + the direction for kRecv and kSend
  switch (op) {
    case kPoll:
      if ((cqe->flags & IORING_CQE_F_MORE) == 0) poll_listener(listener);
      if (!accepting) accept_all(listener);
      return;
    case kAccept:
      if ((cqe->flags & IORING_CQE_F_MORE) == 0) {
        accepting = 0;
        if (cqe->res != -EAGAIN) accept_all(listener);  // ended early: drain again
      }
      if (cqe->res >= 0) on_accepted(cqe->res);
      return;
    case kRecv:
    case kRecv + 1:
      return on_receive(pair, op - kRecv, cqe);
    case kSend:
    case kSend + 1:
      return on_send(pair, op - kSend, cqe->res);
    case kIgnore:  // a cancel's count, or a close that failed
      return;
  }
}

// Receives that ended for want of a buffer start again once buffers came back.
static void rearm_waiting(void) {
  const int returned = buffers_returned;
  buffers_returned = 0;
  if (!returned || waiting_count == 0) return;
  const int count = waiting_count;
  waiting_count = 0;
  for (int i = 0; i < count; ++i) {
    const int pair = waiting_flows[i] / 2, dir = waiting_flows[i] % 2;
    // Still waiting: a pair closed meanwhile (or reused: cleared) is not armed again.
    if (pairs[pair].flows[dir].waiting && !pairs[pair].dead) receive(pair, dir);
  }
}

static void setup_buffers(void) {
  buffer_area = aligned_alloc(4096, (size_t)kBuffers * kBufferBytes);
  if (posix_memalign((void**)&buffer_ring, 4096, kBuffers * sizeof(struct io_uring_buf)) != 0 ||
      buffer_area == NULL) {
    die("floorring: memory");
  }
  io_uring_buf_ring_init(buffer_ring);
  struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)buffer_ring,
                                 .ring_entries = kBuffers, .bgid = kGroup};
  if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) die("floorring: io_uring_register_buf_ring");
  for (uint16_t buffer = 0; buffer < kBuffers; ++buffer) give_back(buffer);
}

int main(int argc, char** argv) {
  if (argc != 4 || (strcmp(argv[1], "ring") != 0 && strcmp(argv[1], "inline") != 0 &&
                    strcmp(argv[1], "lean") != 0)) {
    fprintf(stderr, "usage: floorring ring|inline|lean LISTEN_PORT UPSTREAM_PORT\n");
    return 2;
  }
  inline_sends = strcmp(argv[1], "inline") == 0;
  lean = strcmp(argv[1], "lean") == 0;
  signal(SIGPIPE, SIG_IGN);
  upstream.sin_family = AF_INET;
  upstream.sin_port = htons((uint16_t)atoi(argv[3]));
  upstream.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int pair = kPairs; pair-- > 0;) free_pairs[free_count++] = pair;
  const int listener = floor_listen("floorring", atoi(argv[2]));
  struct io_uring_params params = {
      .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
  if (io_uring_queue_init_params(4096, &ring, &params) != 0) die("floorring: io_uring_queue_init");
  setup_buffers();
  poll_listener(listener);
  for (;;) {
    floor_wait_for_batch(&ring, 2 * (unsigned)(kPairs - free_count));  // two per pair
    struct io_uring_cqe* cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      dispatch(listener, cqe);
      ++seen;
    }
    io_uring_cq_advance(&ring, seen);
    rearm_waiting();
  }
}
