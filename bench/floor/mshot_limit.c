// What a multishot receive with MSG_TRUNC does on TCP, for a drain that takes a body and its FIN
// through one request (issue 17, target 2; floorserve's mshot-drain variant): how much each
// completion takes, and whether the kernel honours a per-completion cap (sqe->len, refused by
// kernels before the per-invocation cap) and a total byte limit (sqe->optlen, the kernel's
// IORING_RECV_MSHOT_LIM), which the engine's drain byte cap would need. Buffers come from a ring
// whose entries all point at one 256 KiB area (nothing is copied: MSG_TRUNC), each given back at
// its completion. Each case on a fresh loopback connection, the receive submitted before the
// peer writes 20 x 100000 bytes (2 ms apart) and shuts down its write side. A limit is not a cap:
// the receive ends after the completion that reaches it (the last two cases).
//   mshot_limit            # one line per case: completions, bytes, how the receive ended
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_ring.h"

enum {
  kArea = 262144,  // the engine's discard chunk (kDiscardChunkBytes)
  kBuffers = 64,
  kGroup = 1,
  kWrites = 20,
  kWriteBytes = 100000,
};
static char area[kArea];
static char payload[kWriteBytes];

// `cap`: sqe->len (0: a buffer's length); `limit`: sqe->optlen (0: none).
static void run(const char* name, unsigned cap, unsigned limit) {
  struct io_uring ring;
  int client = -1, server = -1;
  floor_check(io_uring_queue_init(64, &ring, 0) == 0, "io_uring_queue_init");
  struct io_uring_buf_ring* buffers = floor_buffer_ring(&ring, kGroup, kBuffers, area, kArea);
  floor_connect_pair(&client, &server);
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_recv_multishot(sqe, server, NULL, cap, MSG_TRUNC);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = kGroup;
  // sqe->optlen in newer kernel headers: the same 4 bytes as file_index, which Debian 12's (6.1)
  // name only so, and which 6.1's receive refuses when not 0.
  sqe->file_index = limit;
  floor_check(io_uring_submit(&ring) == 1, "io_uring_submit");
  for (int i = 0; i < kWrites; ++i) {  // 2 MB: less than loopback's socket buffers
    floor_check(write(client, payload, sizeof payload) == (ssize_t)sizeof payload, "write");
    usleep(2000);
  }
  floor_check(shutdown(client, SHUT_WR) == 0, "shutdown");
  long total = 0, largest = 0;
  int completions = 0, last = 0;
  for (;;) {
    struct io_uring_cqe* cqe = NULL;
    floor_check(io_uring_wait_cqe(&ring, &cqe) == 0, "io_uring_wait_cqe");
    ++completions;
    last = cqe->res;
    if (cqe->res > 0) {
      total += cqe->res;
      if (cqe->res > largest) largest = cqe->res;
    }
    const int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    floor_give_back(buffers, kBuffers, area, kArea, cqe);
    io_uring_cqe_seen(&ring, cqe);
    if (!more) break;
  }
  printf("%-16s len %-6u optlen %-7u: %2d completions, %7ld bytes (largest %6ld), "
         "ended with %d%s%s\n",
         name, cap, limit, completions, total, largest, last, last < 0 ? " " : "",
         last < 0 ? strerror(-last) : (last == 0 ? " (EOF)" : " (stopped with data)"));
  close(client);
  close(server);
  io_uring_queue_exit(&ring);
}

int main(void) {
  run("unlimited", 0, 0);
  run("per-completion", 65536, 0);
  run("total-limit", 0, 300000);
  run("both", 65536, 300000);
  // A total between two writes: the kernel checks it after each completion, so the one that
  // reaches it goes beyond it (to 300000 here), by less than a completion's most.
  run("limit-mid-write", 0, 250000);
  run("both-mid-write", 65536, 250000);
  return 0;
}
