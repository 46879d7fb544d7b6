// What an io_uring receive with MSG_WAITALL does on TCP, with and without MSG_TRUNC (issue 17,
// target 2: could one receive take a drained body and the FIN behind it, one completion fewer
// per close?). Three cases on loopback, each on a fresh connection, the receive submitted before
// the peer writes:
//   fin:   the peer writes 65536 + 1000 bytes, then closes (FIN);
//   reset: the same, then closes with SO_LINGER {1, 0} (RST);
//   flood: the peer writes 20 x 100000 bytes, then shuts down its write side.
// For each, the receive's result and whether IORING_CQE_F_SOCK_NONEMPTY is set, then what a
// second receive returns. Needs liburing; bench/floor/build.sh builds it.
//   waitall_trunc            # prints one line per case and flag set
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "floor_ring.h"

enum { kAsk = 262144 };  // the engine's discard chunk (kDiscardChunkBytes)
static char area[kAsk];
static char payload[100000];

static void submit_receive(struct io_uring* ring, int fd, int flags) {
  struct io_uring_sqe* sqe = io_uring_get_sqe(ring);
  io_uring_prep_recv(sqe, fd, area, kAsk, flags);
  floor_check(io_uring_submit(ring) == 1, "io_uring_submit");
}

static void wait_receive(struct io_uring* ring, int* result, int* nonempty) {
  struct io_uring_cqe* cqe = NULL;
  floor_check(io_uring_wait_cqe(ring, &cqe) == 0, "io_uring_wait_cqe");
  *result = cqe->res;
  *nonempty = (cqe->flags & IORING_CQE_F_SOCK_NONEMPTY) != 0;
  io_uring_cqe_seen(ring, cqe);
}

static void write_all(int fd, size_t bytes) {
  for (size_t done = 0; done < bytes;) {
    size_t chunk = bytes - done < sizeof payload ? bytes - done : sizeof payload;
    ssize_t written = write(fd, payload, chunk);
    floor_check(written > 0, "write");
    done += (size_t)written;
  }
}

static void run(const char* name, int flags) {
  struct io_uring ring;
  int client = -1, server = -1, result = 0, nonempty = 0, again = 0, again_nonempty = 0;
  floor_check(io_uring_queue_init(8, &ring, 0) == 0, "io_uring_queue_init");
  floor_connect_pair(&client, &server);
  submit_receive(&ring, server, flags);
  if (strcmp(name, "flood") == 0) {
    for (int i = 0; i < 20; ++i) {  // 2 MB: less than loopback's socket buffers, no blocking
      write_all(client, sizeof payload);
      usleep(2000);
    }
    floor_check(shutdown(client, SHUT_WR) == 0, "shutdown");
  } else {
    write_all(client, 65536);
    usleep(20000);
    write_all(client, 1000);
    usleep(20000);
    if (strcmp(name, "reset") == 0) {
      const struct linger abort_on_close = {1, 0};
      floor_check(
          setsockopt(client, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) == 0,
          "setsockopt");
    }
    close(client);
    client = -1;
  }
  wait_receive(&ring, &result, &nonempty);
  submit_receive(&ring, server, flags);
  wait_receive(&ring, &again, &again_nonempty);
  printf("%-5s %-20s asked %d: got %d, SOCK_NONEMPTY %d; next receive: %d\n", name,
         (flags & MSG_TRUNC) ? "MSG_WAITALL|TRUNC" : "MSG_WAITALL", kAsk, result, nonempty, again);
  if (client >= 0) close(client);
  close(server);
  io_uring_queue_exit(&ring);
}

int main(void) {
  const char* cases[] = {"fin", "reset", "flood"};
  for (int i = 0; i < 3; ++i) {
    run(cases[i], MSG_WAITALL | MSG_TRUNC);
    run(cases[i], MSG_WAITALL);
  }
  return 0;
}
