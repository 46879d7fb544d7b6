// What the two io_uring floors (floorserve.c, floorring.c) share: the listening socket, taking an
// SQE, and ringlinger's way of waiting for a batch of completions; and what the probes
// (waitall_trunc.c, mshot_limit.c) share: a connected pair of sockets on loopback.
#ifndef RINGLINGER_BENCH_FLOOR_RING_H
#define RINGLINGER_BENCH_FLOOR_RING_H

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// A listening TCP socket on 127.0.0.1:port (SOCK_CLOEXEC, SO_REUSEADDR, backlog 4096); exits
// naming `program` on failure.
static inline int floor_listen(const char* program, int port) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int on = 1;
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      bind(listener, (struct sockaddr*)&address, sizeof address) != 0 ||
      listen(listener, 4096) != 0) {
    fprintf(stderr, "%s: ", program);
    perror("listen");
    exit(1);
  }
  return listener;
}

// A submission queue entry; when the queue is full, what it holds is handed to the kernel first.
static inline struct io_uring_sqe* floor_sqe(struct io_uring* ring) {
  struct io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (sqe == NULL) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

// ringlinger's Ring::submit_and_wait: one io_uring_enter that submits what was prepared and waits
// for completions for half the `open` connections (at most 256) for up to 2 ms (min_wait_usec,
// kernel 6.12: then it returns as soon as there is one), and at most 250 ms in all.
static inline void floor_wait_for_batch(struct io_uring* ring, unsigned open) {
  struct io_uring_sq* sq = &ring->sq;
  if (sq->sqe_head != sq->sqe_tail) {  // liburing's __io_uring_flush_sq, which 2.3 does not export
    sq->sqe_head = sq->sqe_tail;
    io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
  }
  const unsigned to_submit = sq->sqe_tail - IO_URING_READ_ONCE(*sq->khead);
  unsigned batch = (open < 512 ? open : 512) / 2;
  if (batch == 0) batch = 1;
  struct __kernel_timespec timeout = {.tv_sec = 0, .tv_nsec = 250 * 1000 * 1000};
  struct io_uring_getevents_arg arg = {.sigmask = 0, .sigmask_sz = _NSIG / 8,
                                       .pad = batch > 1 ? 2000 : 0,  // min_wait_usec
                                       .ts = (uint64_t)(uintptr_t)&timeout};
  syscall(__NR_io_uring_enter, ring->ring_fd, to_submit, batch,
          IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
}

// Exits naming `what` (with errno's text) unless `ok`.
static inline void floor_check(int ok, const char* what) {
  if (!ok) {
    perror(what);
    exit(1);
  }
}

// A ring of `entries` provided buffers registered as `group`, each of them all of `area` (`bytes`
// long): for receives with MSG_TRUNC, which copy nothing. Give an entry back with
// floor_give_back().
static inline struct io_uring_buf_ring* floor_buffer_ring(struct io_uring* ring,
                                                          unsigned short group, unsigned entries,
                                                          char* area, unsigned bytes) {
  void* memory = mmap(NULL, entries * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  floor_check(memory != MAP_FAILED, "mmap");
  struct io_uring_buf_ring* buffers = memory;
  io_uring_buf_ring_init(buffers);
  struct io_uring_buf_reg reg = {
      .ring_addr = (unsigned long)memory, .ring_entries = entries, .bgid = group};
  floor_check(io_uring_register_buf_ring(ring, &reg, 0) == 0, "io_uring_register_buf_ring");
  for (unsigned i = 0; i < entries; ++i) {
    io_uring_buf_ring_add(buffers, area, bytes, (unsigned short)i, io_uring_buf_ring_mask(entries),
                          (int)i);
  }
  io_uring_buf_ring_advance(buffers, (int)entries);
  return buffers;
}

// Gives back the entry a completion took from floor_buffer_ring()'s ring, if it took one.
static inline void floor_give_back(struct io_uring_buf_ring* buffers, unsigned entries, char* area,
                                   unsigned bytes, const struct io_uring_cqe* cqe) {
  if ((cqe->flags & IORING_CQE_F_BUFFER) == 0) return;
  const unsigned short id = (unsigned short)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
  io_uring_buf_ring_add(buffers, area, bytes, id, io_uring_buf_ring_mask(entries), 0);
  io_uring_buf_ring_advance(buffers, 1);
}

// A connected pair of TCP sockets on loopback: *client and *server.
static inline void floor_connect_pair(int* client, int* server) {
  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  floor_check(listener >= 0, "socket");
  floor_check(bind(listener, (struct sockaddr*)&address, sizeof address) == 0, "bind");
  floor_check(listen(listener, 1) == 0, "listen");
  floor_check(getsockname(listener, (struct sockaddr*)&address, &length) == 0, "getsockname");
  *client = socket(AF_INET, SOCK_STREAM, 0);
  floor_check(*client >= 0, "socket");
  floor_check(connect(*client, (struct sockaddr*)&address, sizeof address) == 0, "connect");
  *server = accept(listener, NULL, NULL);
  floor_check(*server >= 0, "accept");
  close(listener);
}

#endif
