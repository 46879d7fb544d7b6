/* The C API end to end, compiled as C11 and using nothing but ringlinger.h, over real TCP on
 * 127.0.0.1. Every manager here is driven only from a plain epoll loop (rl_manager_event_fd,
 * rl_manager_poll_timeout_ms, rl_manager_poll), never from rl_manager_run_once.
 *   1. config: rl_config_init's defaults; bad configs rejected with a message naming the field
 *   2. serving: listen on 127.0.0.1:0; blocking clients send a request; the manager replies
 *      64 KiB from on_receive and closes (or half-closes, or aborts); each client reads the exact
 *      bytes and a clean EOF (or a reset); on_closed's report says clean (or aborted)
 *   3. errors: stale and invalid ids, bad addresses, fd -1, NULL arguments, small size fields
 *   4. handoff: 4 producer threads x 200 real TCP connections; each hands its server side off
 *      with final bytes; its client side reads exactly those bytes and EOF; every done callback
 *      runs once, with outcome clean; a handoff pending when its manager is freed is aborted
 *   5. stats: outcomes, handed-off, accepted, bytes and live counts match what happened
 *   6. post, snapshot, reconfigure: calls posted from another thread run in order on the main
 *      thread; a snapshot from that thread answers while the main loop drives; reconfigure
 *      names a field it refuses; the close-latency bounds; a first-version rl_stats size
 * Threads: callbacks run on the main thread (the managers' thread); client and producer threads
 * touch only their own structs (read by the main thread after pthread_join) and call
 * rl_manager_handoff, which is thread-safe; the only shared variables are C11 atomics. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ringlinger/ringlinger.h"

/* --- checks -------------------------------------------------------------------------------- */

static int failures; /* main thread only */

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
      ++failures;                                                                \
    }                                                                            \
  } while (0)

#define CHECK_EQ(a, b)                                                                     \
  do {                                                                                     \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);                        \
    if (check_a_ != check_b_) {                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__, \
              #a, #b, check_a_, check_b_);                                                 \
      ++failures;                                                                          \
    }                                                                                      \
  } while (0)

/* For setup steps without which the rest cannot run. */
#define REQUIRE(cond)                                                            \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s (errno %d: %s)\n", __FILE__,    \
              __LINE__, #cond, errno, strerror(errno));                          \
      exit(1);                                                                   \
    }                                                                            \
  } while (0)

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* --- sockets (blocking, with timeouts so no thread can hang) ------------------------------- */

enum { kSocketTimeoutSeconds = 20 };

static void set_timeouts(int fd) {
  struct timeval tv = {kSocketTimeoutSeconds, 0};
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0);
}

/* A listening socket on 127.0.0.1:0 owned by the test; its port in *port. */
static int listen_loopback(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  REQUIRE(listen(fd, 512) == 0);
  socklen_t length = sizeof a;
  REQUIRE(getsockname(fd, (struct sockaddr *)&a, &length) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* A blocking client connected to 127.0.0.1:port; -1 with errno on failure. */
static int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  set_timeouts(fd);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

static int write_all(int fd, const void *data, size_t length) {
  const char *p = data;
  while (length > 0) {
    ssize_t n = write(fd, p, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    length -= (size_t)n;
  }
  return 0;
}

/* The bytes every test stream carries: byte `offset` of stream `stream`. */
static unsigned char pattern(unsigned stream, size_t offset) {
  return (unsigned char)((stream * 131u + offset * 7u + (offset >> 8)) & 0xffu);
}

/* What a client saw reading until EOF or an error. */
typedef struct read_result {
  size_t bytes;       /* bytes read */
  size_t first_wrong; /* offset of the first byte not matching the pattern, or SIZE_MAX */
  int eof;            /* 1: read returned 0 (a clean EOF) */
  int error;          /* errno of a failed read (ECONNRESET, EAGAIN on timeout, ...), else 0 */
} read_result;

static read_result read_to_end(int fd, unsigned stream) {
  read_result r = {0, SIZE_MAX, 0, 0};
  unsigned char buffer[16384];
  for (;;) {
    ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      r.error = errno;
      return r;
    }
    if (n == 0) {
      r.eof = 1;
      return r;
    }
    for (ssize_t i = 0; i < n; ++i) {
      if (r.first_wrong == SIZE_MAX && buffer[i] != pattern(stream, r.bytes + (size_t)i)) {
        r.first_wrong = r.bytes + (size_t)i;
      }
    }
    r.bytes += (size_t)n;
  }
}

/* --- the host's event loop ----------------------------------------------------------------- */

/* One epoll set with one manager's event fd in it: what a C proxy's loop would hold. */
typedef struct host_loop {
  rl_manager *manager;
  int epoll_fd;
  int event_fd;
  int finished;        /* rl_manager_poll returned 0 */
  long waits;          /* epoll_wait calls */
  long woken;          /* of those, returned with the event fd ready */
} host_loop;

static void host_loop_init(host_loop *loop, rl_manager *manager) {
  memset(loop, 0, sizeof *loop);
  loop->manager = manager;
  loop->event_fd = rl_manager_event_fd(manager);
  REQUIRE(loop->event_fd >= 0);
  CHECK_EQ(rl_manager_event_fd(manager), loop->event_fd); /* created once, then the same */
  loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(loop->epoll_fd >= 0);
  struct epoll_event event;
  memset(&event, 0, sizeof event);
  event.events = EPOLLIN;
  event.data.fd = loop->event_fd;
  REQUIRE(epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, loop->event_fd, &event) == 0);
}

static void host_loop_close(host_loop *loop) { close(loop->epoll_fd); }

/* Runs the loop until done(arg) or the manager finished, for at most timeout_ms. The wait is
 * bounded only by the deadline and the manager's own timers, so a missing wake-up through the
 * event fd shows up as a timeout, not as a slow pass. Returns 1 when done(arg) became true. */
static int drive(host_loop *loop, int (*done)(void *), void *arg, int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (!(done != NULL ? done(arg) : loop->finished)) {
    const int64_t left = deadline - now_ms();
    if (left <= 0) return 0;
    if (loop->finished) return 0;
    int wait = rl_manager_poll_timeout_ms(loop->manager, (int)left);
    CHECK(wait >= 0 && wait <= left);
    struct epoll_event events[4];
    ++loop->waits;
    int n = epoll_wait(loop->epoll_fd, events, 4, wait);
    if (n < 0 && errno != EINTR) REQUIRE(!"epoll_wait failed");
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == loop->event_fd) ++loop->woken;
    }
    int result = rl_manager_poll(loop->manager);
    CHECK(result >= 0);
    if (result == 0) loop->finished = 1;
  }
  return 1;
}

static int is_finished(void *arg) { return ((host_loop *)arg)->finished; }

/* Stops the manager gracefully and drives it until rl_manager_poll says it is done. */
static void stop_and_finish(host_loop *loop, int64_t grace_ms) {
  rl_manager_stop(loop->manager, grace_ms);
  CHECK(drive(loop, is_finished, loop, 10000));
  CHECK_EQ(rl_manager_poll(loop->manager), 0); /* stays finished */
}

/* --- 0. version ---------------------------------------------------------------------------- */

/* The running library is the headers' version, in every form. */
static void test_version(void) {
  char expected[32];
  snprintf(expected, sizeof expected, "%d.%d.%d", RINGLINGER_VERSION_MAJOR,
           RINGLINGER_VERSION_MINOR, RINGLINGER_VERSION_PATCH);
  CHECK(strcmp(rl_version(), RINGLINGER_VERSION) == 0);
  CHECK(strcmp(rl_version(), expected) == 0);
  CHECK_EQ(rl_version_major(), RINGLINGER_VERSION_MAJOR);
  CHECK_EQ(rl_version_minor(), RINGLINGER_VERSION_MINOR);
  CHECK_EQ(rl_version_patch(), RINGLINGER_VERSION_PATCH);
  CHECK(RINGLINGER_VERSION_NUMBER ==
        RINGLINGER_VERSION_AT(rl_version_major(), rl_version_minor(), rl_version_patch()));
  CHECK(RINGLINGER_VERSION_NUMBER < RINGLINGER_VERSION_AT(RINGLINGER_VERSION_MAJOR,
                                                          RINGLINGER_VERSION_MINOR + 1, 0));
}

/* --- 1. configuration ---------------------------------------------------------------------- */

static void test_config(void) {
  rl_config config;
  memset(&config, 0xab, sizeof config);
  rl_config_init(&config);
  CHECK_EQ(config.size, sizeof config);
  CHECK_EQ(config.backend, RL_BACKEND_AUTOMATIC);
  CHECK_EQ(config.drain_idle_timeout_ms, 5000);
  CHECK_EQ(config.drain_timeout_ms, 30000);
  CHECK_EQ(config.drain_max_bytes, 16u << 20);
  CHECK_EQ(config.send_timeout_ms, 60000);
  CHECK_EQ(config.on_timeout, RL_ON_TIMEOUT_CLOSE);
  CHECK_EQ(config.orphan_timeout_ms, 10000);
  CHECK_EQ(config.shutdown_mode, RL_SHUTDOWN_SYSCALL);
  CHECK_EQ(config.ring_entries, 4096);
  CHECK_EQ(config.max_connections, 16384);
  CHECK_EQ(config.receive_buffer_bytes, 2048);
  CHECK_EQ(config.receive_buffer_count, 256);
  CHECK_EQ(config.batch_wait_us, 2000);
  CHECK_EQ(config.defer_taskrun, 1);

  char err[256];
  strcpy(err, "not cleared");
  CHECK_EQ(rl_config_validate(&config, err, sizeof err), 0);
  CHECK_EQ(err[0], '\0');

  /* Each bad field is named, with its value, by validate and by rl_manager_new. */
  struct {
    const char *field;
    const char *value;
    rl_config config;
  } bad[6];
  for (int i = 0; i < 6; ++i) bad[i].config = config;
  bad[0].field = "ring_entries", bad[0].value = "1000", bad[0].config.ring_entries = 1000;
  bad[1].field = "drain_idle_timeout_ms", bad[1].value = "0", bad[1].config.drain_idle_timeout_ms = 0;
  bad[2].field = "receive_buffer_count", bad[2].value = "3", bad[2].config.receive_buffer_count = 3;
  /* 256 would wrap to a valid 0 in the C++ enum's 8 bits: it must be refused before that. */
  bad[3].field = "backend", bad[3].value = "256", bad[3].config.backend = 256;
  bad[4].field = "shutdown_mode", bad[4].value = "-1", bad[4].config.shutdown_mode = -1;
  bad[5].field = "rl_config.size", bad[5].value = "got 0", bad[5].config.size = 0;
  for (int i = 0; i < 6; ++i) {
    err[0] = '\0';
    CHECK_EQ(rl_config_validate(&bad[i].config, err, sizeof err), -EINVAL);
    CHECK(strstr(err, bad[i].field) != NULL && strstr(err, bad[i].value) != NULL);
    strcpy(err, "stale text");
    errno = 0;
    rl_manager *manager = rl_manager_new(&bad[i].config, NULL, err, sizeof err);
    CHECK(manager == NULL);
    CHECK_EQ(errno, EINVAL);
    if (strstr(err, bad[i].field) == NULL || strstr(err, bad[i].value) == NULL) {
      fprintf(stderr, "config %d: message \"%s\" does not name %s = %s\n", i, err, bad[i].field,
              bad[i].value);
      ++failures;
    }
    rl_manager_free(manager); /* NULL is ignored */
  }
  printf("bad config message: %s\n", err);

  /* Messages are truncated to the buffer, always terminated; no buffer is fine too. */
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  CHECK_EQ(rl_config_validate(&bad[0].config, tiny, sizeof tiny), -EINVAL);
  CHECK_EQ(strlen(tiny), sizeof tiny - 1);
  CHECK_EQ(rl_config_validate(&bad[0].config, NULL, 0), -EINVAL);
  CHECK_EQ(rl_config_validate(NULL, err, sizeof err), -EINVAL);

  /* A callbacks struct whose size was not set is refused, naming the field. */
  rl_callbacks callbacks;
  memset(&callbacks, 0, sizeof callbacks);
  rl_manager *manager = rl_manager_new(&config, &callbacks, err, sizeof err);
  CHECK(manager == NULL);
  CHECK(strstr(err, "rl_callbacks.size") != NULL);

  /* A struct from a newer header (larger) is accepted: the library reads what it knows. */
  struct {
    rl_config config;
    uint64_t later_field;
  } newer;
  rl_config_init_sized(&newer.config, sizeof newer);
  CHECK_EQ(newer.config.size, sizeof newer);
  CHECK_EQ(newer.later_field, 0);
  CHECK_EQ(rl_config_validate(&newer.config, err, sizeof err), 0);

  /* A NULL config means the defaults. */
  manager = rl_manager_new(NULL, NULL, err, sizeof err);
  CHECK(manager != NULL && err[0] == '\0');
  rl_manager_free(manager);

  CHECK(strcmp(rl_outcome_name(RL_OUTCOME_CLEAN), "clean") == 0);
  CHECK(strcmp(rl_outcome_name(RL_OUTCOME_DRAIN_IDLE_TIMEOUT), "drain_idle_timeout") == 0);
  CHECK(strcmp(rl_outcome_name(RL_OUTCOME_STOP_DEADLINE), "stop_deadline") == 0);
  CHECK(rl_outcome_name(RL_OUTCOME_COUNT) == NULL);
  CHECK(rl_outcome_name(-1) == NULL);
  int named = 0;
  while (rl_outcome_name(named) != NULL) ++named;
  CHECK_EQ(named, RL_OUTCOME_COUNT);
}

/* --- 2. serving: listen, on_receive replies 64 KiB, close / half-close / abort -------------- */

enum { kReplyBytes = 64 * 1024, kServeSlots = 64, kServedMax = 8 };

/* How the manager answers, chosen by the client's request line. */
enum mode { MODE_NONE, MODE_CLOSE, MODE_HALF, MODE_ABORT, MODE_LAST, MODE_ADOPTED };

/* One served connection, kept after it closed (its slot may be reused meanwhile). */
typedef struct served {
  int in_use; /* open: its slot maps to it */
  rl_conn_id id;
  enum mode mode;
  char request[32];
  size_t request_length;
  char after[32]; /* what came after the request line (MODE_HALF: "bye\n") */
  size_t after_length;
  int eof;             /* on_receive got the peer's EOF */
  int drained;         /* on_send_drained calls */
  int closed;          /* on_closed calls */
  rl_close_report report;
} served;

typedef struct server {
  rl_manager *manager;
  served conns[kServedMax]; /* every connection, in the order they came */
  int count;
  int by_slot[kServeSlots]; /* index in conns of the open connection in each slot, or -1 */
  rl_conn_id last_closed[kServedMax];
  int accepts;
  int closed;
  int poll_from_callback;     /* rl_manager_poll's result when called from on_accept */
  int run_once_from_callback; /* rl_manager_run_once's */
  unsigned char reply[kReplyBytes];
} server;

/* The open connection `id`; NULL if unknown. */
static served *served_of(server *s, rl_conn_id id) {
  const uint32_t slot = rl_conn_slot(id);
  if (slot >= kServeSlots || s->by_slot[slot] < 0) return NULL;
  served *c = &s->conns[s->by_slot[slot]];
  return c->id == id ? c : NULL;
}

/* A record for a new connection `id` (accepted or adopted). */
static served *served_new(server *s, rl_conn_id id) {
  const uint32_t slot = rl_conn_slot(id);
  CHECK(slot < kServeSlots && s->count < kServedMax);
  if (slot >= kServeSlots || s->count >= kServedMax) return NULL;
  CHECK_EQ(s->by_slot[slot], -1); /* the slot's previous connection was reported closed */
  served *c = &s->conns[s->count];
  memset(c, 0, sizeof *c);
  c->in_use = 1;
  c->id = id;
  s->by_slot[slot] = s->count++;
  return c;
}

static void on_accept(void *user, rl_conn_id id) {
  server *s = user;
  served *c = served_new(s, id);
  if (c == NULL) return;
  ++s->accepts;
  s->poll_from_callback = rl_manager_poll(s->manager);
  s->run_once_from_callback = rl_manager_run_once(s->manager, 0);
  /* The fd is there for getpeername; pausing and resuming receive is allowed at any time. */
  const int fd = rl_manager_fd(s->manager, id);
  CHECK(fd >= 0);
  struct sockaddr_in peer;
  socklen_t length = sizeof peer;
  CHECK(getpeername(fd, (struct sockaddr *)&peer, &length) == 0 && peer.sin_family == AF_INET);
  CHECK_EQ(rl_manager_pause_receive(s->manager, id), 0);
  CHECK_EQ(rl_manager_resume_receive(s->manager, id), 0);
}

static void on_receive(void *user, rl_conn_id id, const void *data, size_t length) {
  server *s = user;
  served *c = served_of(s, id);
  CHECK(c != NULL && c->in_use && c->id == id && !c->eof);
  if (c == NULL) return;
  if (length == 0) { /* the peer's EOF */
    c->eof = 1;
    CHECK_EQ(c->mode, MODE_HALF); /* the others close before the client's EOF */
    CHECK_EQ(rl_manager_close(s->manager, id), 0);
    return;
  }
  if (c->mode != MODE_NONE) { /* after the request line */
    CHECK(c->after_length + length <= sizeof c->after);
    if (c->after_length + length <= sizeof c->after) {
      memcpy(c->after + c->after_length, data, length);
      c->after_length += length;
    }
    return;
  }
  CHECK(c->request_length + length < sizeof c->request);
  if (c->request_length + length >= sizeof c->request) return;
  memcpy(c->request + c->request_length, data, length);
  c->request_length += length;
  c->request[c->request_length] = '\0';
  if (strchr(c->request, '\n') == NULL) return; /* not complete yet */

  rl_manager *m = s->manager;
  if (strcmp(c->request, "CLOSE\n") == 0) {
    c->mode = MODE_CLOSE;
    CHECK_EQ(rl_manager_send(m, id, s->reply, kReplyBytes), 0);
    CHECK(rl_manager_queued_bytes(m, id) <= kReplyBytes);
    CHECK_EQ(rl_manager_close(m, id), 0);
    CHECK_EQ(rl_manager_close(m, id), 0);                /* again: harmless */
    CHECK_EQ(rl_manager_send(m, id, "x", 1), -EPIPE);    /* closing: no more sends */
    CHECK_EQ(rl_manager_shutdown_write(m, id), -EPIPE);  /* nor a half-close */
  } else if (strcmp(c->request, "HALF\n") == 0) {
    c->mode = MODE_HALF;
    CHECK_EQ(rl_manager_send(m, id, s->reply, kReplyBytes / 2), 0);
    CHECK_EQ(rl_manager_send(m, id, s->reply + kReplyBytes / 2, kReplyBytes / 2), 0);
    CHECK_EQ(rl_manager_shutdown_write(m, id), 0);
    CHECK_EQ(rl_manager_shutdown_write(m, id), 0);    /* again: harmless */
    CHECK_EQ(rl_manager_send(m, id, "x", 1), -EPIPE); /* after our FIN: no more sends */
  } else if (strcmp(c->request, "ABORT\n") == 0) {
    c->mode = MODE_ABORT;
    CHECK_EQ(rl_manager_abort(m, id), 0);
  } else if (strcmp(c->request, "LAST\n") == 0) {
    c->mode = MODE_LAST;
    CHECK_EQ(rl_manager_send_and_close(m, id, s->reply, kReplyBytes), 0);
    CHECK_EQ(rl_manager_send_and_close(m, id, "x", 1), -EPIPE); /* closing: refused */
    CHECK_EQ(rl_manager_close(m, id), 0);                       /* harmless */
  } else {
    fprintf(stderr, "unexpected request \"%s\"\n", c->request);
    ++failures;
    CHECK_EQ(rl_manager_close(m, id), 0);
  }
}

static void on_send_drained(void *user, rl_conn_id id) {
  served *c = served_of(user, id);
  CHECK(c != NULL && c->in_use);
  if (c != NULL) ++c->drained;
}

static void on_closed(void *user, rl_conn_id id, const rl_close_report *report) {
  server *s = user;
  served *c = served_of(s, id);
  CHECK(c != NULL);
  if (c == NULL) return;
  ++c->closed;
  c->report = *report;
  c->in_use = 0;
  s->by_slot[rl_conn_slot(id)] = -1;
  if (s->closed < kServedMax) s->last_closed[s->closed] = id;
  ++s->closed;
}

/* A blocking client in its own thread: request, then read to the end; MODE_HALF then says bye. */
typedef struct client {
  uint16_t port;
  const char *request;
  const char *after_eof; /* sent after the server's EOF, before closing */
  read_result result;
  int error; /* errno of a failed connect or write */
  atomic_int finished;
} client;

static void *client_main(void *arg) {
  client *c = arg;
  int fd = connect_loopback(c->port);
  if (fd < 0) {
    c->error = errno;
  } else {
    if (write_all(fd, c->request, strlen(c->request)) != 0) c->error = errno;
    c->result = read_to_end(fd, 0);
    if (c->after_eof != NULL && c->result.eof &&
        write_all(fd, c->after_eof, strlen(c->after_eof)) != 0) {
      c->error = errno;
    }
    close(fd);
  }
  atomic_store(&c->finished, 1);
  return NULL;
}

typedef struct serve_progress {
  server *server;
  client *clients;
  int count;
} serve_progress;

/* Done when the manager closed every connection. Not when the client threads are done: their
 * progress does not wake the loop, so waiting for it would end by the deadline (30 s), not by
 * the event fd; the caller joins them next and checks what they read. */
static int serve_done(void *arg) {
  serve_progress *p = arg;
  return p->server->closed == p->count;
}

/* The client read the whole reply, byte for byte, then a clean EOF. */
static void check_whole_reply(const client *c) {
  CHECK_EQ(c->error, 0);
  CHECK_EQ(c->result.bytes, kReplyBytes);
  CHECK_EQ(c->result.first_wrong, SIZE_MAX);
  CHECK_EQ(c->result.eof, 1);
  CHECK_EQ(c->result.error, 0);
}

static served *find_mode(server *s, enum mode mode) {
  for (int i = 0; i < s->count; ++i) {
    if (s->conns[i].mode == mode) return &s->conns[i];
  }
  return NULL;
}

/* TCP_DEFER_ACCEPT of the listening socket on `port` in this process; -1 when there is none. */
static int defer_accept_of(int port) {
  for (int fd = 0; fd < 1024; ++fd) {
    int accepting = 0, seconds = -1;
    socklen_t size = sizeof accepting;
    struct sockaddr_in local;
    socklen_t local_size = sizeof local;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) != 0 || !accepting ||
        getsockname(fd, (struct sockaddr *)&local, &local_size) != 0 ||
        local.sin_family != AF_INET || ntohs(local.sin_port) != port) {
      continue;
    }
    size = sizeof seconds;
    return getsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, &size) == 0 ? seconds : -1;
  }
  return -1;
}

static void test_serve_and_errors(int backend) {
  static server s; /* 64 KiB of reply: not on the stack */
  memset(&s, 0, sizeof s);
  for (int i = 0; i < kServeSlots; ++i) s.by_slot[i] = -1;
  for (size_t i = 0; i < kReplyBytes; ++i) s.reply[i] = pattern(0, i);

  rl_config config;
  rl_config_init(&config);
  config.backend = backend;
  config.max_connections = kServeSlots;
  rl_callbacks callbacks;
  memset(&callbacks, 0, sizeof callbacks);
  callbacks.size = sizeof callbacks;
  callbacks.user = &s;
  callbacks.on_accept = on_accept;
  callbacks.on_receive = on_receive;
  callbacks.on_closed = on_closed;
  callbacks.on_send_drained = on_send_drained;
  char err[256];
  s.manager = rl_manager_new(&config, &callbacks, err, sizeof err);
  if (s.manager == NULL) fprintf(stderr, "rl_manager_new: %s\n", err);
  REQUIRE(s.manager != NULL);
  rl_manager *m = s.manager;
  char description[256];
  CHECK(rl_manager_describe_backend(m, description, sizeof description) > 0);
  printf("backend: %s\n", description);

  char bound[RL_ADDRESS_MAX];
  const int port = rl_manager_listen(m, "127.0.0.1:0", 0, 0, bound, sizeof bound);
  REQUIRE(port > 0);
  char expected[RL_ADDRESS_MAX];
  snprintf(expected, sizeof expected, "127.0.0.1:%d", port);
  CHECK(strcmp(bound, expected) == 0);
  printf("listening on %s\n", bound);

  host_loop loop;
  host_loop_init(&loop, m);

  /* Four clients at once, one per way of ending. */
  client clients[4];
  memset(clients, 0, sizeof clients);
  const char *requests[4] = {"CLOSE\n", "HALF\n", "ABORT\n", "LAST\n"};
  pthread_t threads[4];
  for (int i = 0; i < 4; ++i) {
    clients[i].port = (uint16_t)port;
    clients[i].request = requests[i];
    clients[i].after_eof = i == 1 ? "bye\n" : NULL;
    atomic_init(&clients[i].finished, 0);
    REQUIRE(pthread_create(&threads[i], NULL, client_main, &clients[i]) == 0);
  }
  serve_progress progress = {&s, clients, 4};
  CHECK(drive(&loop, serve_done, &progress, 30000));
  for (int i = 0; i < 4; ++i) REQUIRE(pthread_join(threads[i], NULL) == 0);

  CHECK_EQ(s.accepts, 4);
  CHECK_EQ(s.closed, 4);
  CHECK_EQ(s.poll_from_callback, -EDEADLK); /* driving it from a callback is refused */
  CHECK_EQ(s.run_once_from_callback, -EDEADLK);

  /* CLOSE: the exact 64 KiB, then a clean EOF; the report says clean. */
  check_whole_reply(&clients[0]);
  served *c = find_mode(&s, MODE_CLOSE);
  CHECK(c != NULL);
  if (c != NULL) {
    CHECK_EQ(c->closed, 1);
    CHECK_EQ(c->report.size, sizeof(rl_close_report));
    CHECK_EQ(c->report.outcome, RL_OUTCOME_CLEAN);
    CHECK_EQ(c->report.first_error, 0);
    CHECK_EQ(c->report.reset_sent, 0);
    CHECK_EQ(c->report.close_requested, 1);
    CHECK_EQ(c->report.bytes_sent, kReplyBytes);
    CHECK_EQ(c->report.bytes_received, strlen("CLOSE\n"));
    CHECK_EQ(c->eof, 0);
  }

  /* HALF: the 64 KiB and EOF reached the client while the server still read its "bye". */
  CHECK_EQ(clients[1].error, 0);
  CHECK_EQ(clients[1].result.bytes, kReplyBytes);
  CHECK_EQ(clients[1].result.first_wrong, SIZE_MAX);
  CHECK_EQ(clients[1].result.eof, 1);
  c = find_mode(&s, MODE_HALF);
  CHECK(c != NULL);
  if (c != NULL) {
    CHECK_EQ(c->closed, 1);
    CHECK(c->after_length == 4 && memcmp(c->after, "bye\n", 4) == 0);
    CHECK_EQ(c->eof, 1);
    CHECK(c->drained >= 1); /* every queued byte reached the kernel while it was open */
    CHECK_EQ(c->report.outcome, RL_OUTCOME_CLEAN);
    CHECK_EQ(c->report.bytes_sent, kReplyBytes);
    CHECK_EQ(c->report.bytes_received, strlen("HALF\n") + 4);
    CHECK_EQ(c->report.reset_sent, 0);
  }

  /* ABORT: the client sees a reset, the report says aborted with an RST. */
  CHECK_EQ(clients[2].error, 0);
  CHECK_EQ(clients[2].result.bytes, 0);
  CHECK_EQ(clients[2].result.eof, 0);
  CHECK_EQ(clients[2].result.error, ECONNRESET);
  c = find_mode(&s, MODE_ABORT);
  CHECK(c != NULL);
  if (c != NULL) {
    CHECK_EQ(c->closed, 1);
    CHECK_EQ(c->report.outcome, RL_OUTCOME_ABORTED);
    CHECK_EQ(c->report.reset_sent, 1);
    CHECK_EQ(c->report.close_requested, 0);
  }

  /* LAST (send_and_close): the exact 64 KiB, then a clean EOF, as CLOSE. */
  check_whole_reply(&clients[3]);
  c = find_mode(&s, MODE_LAST);
  CHECK(c != NULL);
  if (c != NULL) {
    CHECK_EQ(c->closed, 1);
    CHECK_EQ(c->report.outcome, RL_OUTCOME_CLEAN);
    CHECK_EQ(c->report.close_requested, 1);
    CHECK_EQ(c->report.bytes_sent, kReplyBytes);
    CHECK_EQ(c->report.bytes_received, strlen("LAST\n"));
  }

  /* 5. The counters agree. */
  rl_stats stats;
  memset(&stats, 0xff, sizeof stats);
  stats.size = sizeof stats;
  CHECK_EQ(rl_manager_stats(m, &stats), 0);
  CHECK_EQ(stats.size, sizeof stats);
  CHECK_EQ(stats.connections_accepted, 4);
  CHECK_EQ(stats.connections_handed_off, 0);
  CHECK_EQ(stats.outcomes[RL_OUTCOME_CLEAN], 3);
  CHECK_EQ(stats.outcomes[RL_OUTCOME_ABORTED], 1);
  for (int i = RL_OUTCOME_COUNT; i < RL_OUTCOME_SLOTS; ++i) CHECK_EQ(stats.outcomes[i], 0);
  CHECK_EQ(stats.closed_connections, 4);
  CHECK_EQ(stats.live_connections, 0);
  CHECK(stats.peak_live_connections >= 1 && stats.peak_live_connections <= 4);
  CHECK_EQ(stats.bytes_sent, 3 * kReplyBytes);
  CHECK_EQ(stats.bytes_received,
           strlen("CLOSE\n") + strlen("HALF\n") + 4 + strlen("ABORT\n") + strlen("LAST\n"));
  CHECK_EQ(stats.write_shutdowns, 1);
  CHECK(stats.syscalls > 0);
  CHECK_EQ(stats.stale_completions, 0);

  /* 3. Error paths. Ids of closed connections are stale; made-up ones are invalid. */
  const rl_conn_id stale = s.last_closed[0];
  const rl_conn_id invalid[3] = {stale, UINT64_MAX, ((uint64_t)77 << 32) | 5u};
  for (int i = 0; i < 3; ++i) {
    const rl_conn_id id = invalid[i];
    CHECK_EQ(rl_manager_send(m, id, "x", 1), -EBADF);
    CHECK_EQ(rl_manager_send_and_close(m, id, "x", 1), -EBADF);
    CHECK_EQ(rl_manager_close(m, id), -EBADF);
    CHECK_EQ(rl_manager_abort(m, id), -EBADF);
    CHECK_EQ(rl_manager_abort_after_send(m, id), -EBADF);
    CHECK_EQ(rl_manager_shutdown_write(m, id), -EBADF);
    CHECK_EQ(rl_manager_pause_receive(m, id), -EBADF);
    CHECK_EQ(rl_manager_resume_receive(m, id), -EBADF);
    CHECK_EQ(rl_manager_fd(m, id), -EBADF);
    CHECK_EQ(rl_manager_queued_bytes(m, id), 0);
  }
  CHECK_EQ(rl_manager_send(m, stale, NULL, 1), -EINVAL);
  CHECK_EQ(rl_manager_send_and_close(m, stale, NULL, 1), -EINVAL);
  rl_conn_id id = 0;
  CHECK_EQ(rl_manager_adopt(m, -1, &id), -EBADF);
  CHECK_EQ(rl_manager_adopt(m, 0, NULL), -EINVAL);
  CHECK_EQ(rl_manager_listen(m, "not an address", 0, 0, bound, sizeof bound), -EINVAL);
  CHECK_EQ(bound[0], '\0');
  CHECK_EQ(rl_manager_listen(m, "127.0.0.1:99999", 0, 0, NULL, 0), -EINVAL);
  CHECK_EQ(rl_manager_listen(m, "127.0.0.1:0", 0, 0x80u, NULL, 0), -EINVAL);
  CHECK_EQ(defer_accept_of(port), 0);
  const int deferred = rl_manager_listen(m, "127.0.0.1:0", 0, RL_LISTEN_DEFER_ACCEPT, NULL, 0);
  CHECK(deferred > 0);
  CHECK_EQ(defer_accept_of(deferred), 1);
  CHECK_EQ(rl_manager_listen(m, expected, 0, 0, NULL, 0), -EADDRINUSE);
  CHECK_EQ(rl_manager_listen(m, NULL, 0, 0, NULL, 0), -EINVAL);
  int done_calls = 0;
  CHECK_EQ(rl_manager_handoff(m, -1, "x", 1, NULL, &done_calls), -EBADF);
  CHECK_EQ(rl_manager_handoff(m, 0, NULL, 1, NULL, &done_calls), -EINVAL);
  CHECK_EQ(rl_manager_poll(NULL), -EINVAL);
  CHECK_EQ(rl_manager_send(NULL, stale, "x", 1), -EINVAL);
  CHECK_EQ(rl_manager_send_and_close(NULL, stale, "x", 1), -EINVAL);
  CHECK_EQ(rl_manager_abort_after_send(NULL, stale), -EINVAL);
  CHECK_EQ(rl_manager_stats(m, NULL), -EINVAL);
  rl_stats small;
  memset(&small, 0, sizeof small);
  small.size = sizeof(size_t) + sizeof(uint64_t);
  CHECK_EQ(rl_manager_stats(m, &small), -EINVAL);
  /* A larger (newer) rl_stats: what this library does not know is zeroed. */
  struct {
    rl_stats stats;
    uint64_t later[2];
  } newer;
  memset(&newer, 0xff, sizeof newer);
  newer.stats.size = sizeof newer;
  CHECK_EQ(rl_manager_stats(m, &newer.stats), 0);
  CHECK(newer.later[0] == 0 && newer.later[1] == 0);
  CHECK_EQ(newer.stats.connections_accepted, 4);

  /* A connection adopted by the program: the server side of a pair made on a listener the test
   * owns; its client (a thread, sending nothing) reads the 1000 bytes and EOF. */
  uint16_t own_port;
  const int own_listener = listen_loopback(&own_port);
  client reader;
  memset(&reader, 0, sizeof reader);
  reader.port = own_port;
  reader.request = "";
  atomic_init(&reader.finished, 0);
  pthread_t reader_thread;
  REQUIRE(pthread_create(&reader_thread, NULL, client_main, &reader) == 0);
  const int adopted_fd = accept4(own_listener, NULL, NULL, SOCK_CLOEXEC);
  REQUIRE(adopted_fd >= 0);
  close(own_listener);
  REQUIRE(rl_manager_adopt(m, adopted_fd, &id) == 0);
  CHECK_EQ(rl_manager_fd(m, id), adopted_fd);
  served *a = served_new(&s, id);
  REQUIRE(a != NULL);
  a->mode = MODE_ADOPTED;
  CHECK_EQ(rl_manager_send(m, id, s.reply, 1000), 0);
  CHECK_EQ(rl_manager_close(m, id), 0);
  /* Calls made outside a callback: the manager asks to be polled at once. */
  CHECK_EQ(rl_manager_poll_timeout_ms(m, 1000), 0);
  serve_progress adopt_progress = {&s, &reader, 1};
  s.closed = 0;
  CHECK(drive(&loop, serve_done, &adopt_progress, 30000));
  REQUIRE(pthread_join(reader_thread, NULL) == 0);
  CHECK_EQ(reader.error, 0);
  CHECK_EQ(reader.result.bytes, 1000);
  CHECK_EQ(reader.result.first_wrong, SIZE_MAX);
  CHECK_EQ(reader.result.eof, 1);
  CHECK_EQ(a->closed, 1);
  CHECK_EQ(a->report.outcome, RL_OUTCOME_CLEAN);
  CHECK_EQ(a->report.bytes_sent, 1000);
  stats.size = sizeof stats;
  CHECK_EQ(rl_manager_stats(m, &stats), 0);
  CHECK_EQ(stats.connections_adopted, 1);
  CHECK_EQ(stats.outcomes[RL_OUTCOME_CLEAN], 4);
  CHECK_EQ(stats.closed_connections, 5);

  /* Idle, nothing due: the host may wait as long as it likes. */
  const int idle = rl_manager_poll_timeout_ms(m, -1);
  CHECK(idle == -1 || idle >= 0);
  stop_and_finish(&loop, 2000);
  printf("serve: %ld epoll waits, %ld woken by the event fd\n", loop.waits, loop.woken);
  CHECK(loop.woken > 0);
  host_loop_close(&loop);
  rl_manager_free(m);
}

/* --- 4. handoff from several threads ------------------------------------------------------- */

enum { kProducers = 4, kPerProducer = 200, kHandoffs = kProducers * kPerProducer };

/* The final bytes of handoff k: 0 to 12000 bytes (every 50th none at all). */
static size_t final_length(unsigned k) { return k % 50 == 0 ? 0 : (k * 997u) % 12000u + 1; }

/* Written only on the manager's (main) thread, by the done callback. */
typedef struct handoff_record {
  int done_calls;
  rl_close_report report;
} handoff_record;

static handoff_record records[kHandoffs];
static int done_total; /* main thread only */

static void on_handoff_done(void *user, const rl_close_report *report) {
  handoff_record *record = user;
  ++record->done_calls;
  record->report = *report;
  ++done_total;
}

typedef struct producer {
  int index;
  rl_manager *manager;
  /* results, read by the main thread after pthread_join */
  int failures;
  char what[160];
  size_t bytes;
} producer;

static atomic_int producers_finished;

static void producer_failed(producer *p, const char *what, unsigned k, int error) {
  if (p->failures++ == 0) {
    snprintf(p->what, sizeof p->what, "producer %d, connection %u: %s (%s)", p->index, k, what,
             strerror(error));
  }
}

static void *producer_main(void *arg) {
  producer *p = arg;
  uint16_t port;
  const int listener = listen_loopback(&port); /* each producer its own: pairs stay pairs */
  static _Thread_local int clients[kPerProducer];
  static _Thread_local unsigned char bytes[12001];
  for (unsigned i = 0; i < kPerProducer; ++i) {
    const unsigned k = (unsigned)p->index * kPerProducer + i;
    clients[i] = connect_loopback(port);
    if (clients[i] < 0) {
      producer_failed(p, "connect", k, errno);
      continue;
    }
    const int server_side = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (server_side < 0) {
      producer_failed(p, "accept", k, errno);
      continue;
    }
    const size_t length = final_length(k);
    for (size_t j = 0; j < length; ++j) bytes[j] = pattern(k, j);
    const int result = rl_manager_handoff(p->manager, server_side, length > 0 ? bytes : NULL,
                                          length, on_handoff_done, &records[k]);
    if (result != 0) {
      producer_failed(p, "rl_manager_handoff", k, -result);
      close(server_side);
    }
  }
  close(listener);
  /* Every client reads exactly its final bytes, then a clean EOF. */
  for (unsigned i = 0; i < kPerProducer; ++i) {
    const unsigned k = (unsigned)p->index * kPerProducer + i;
    if (clients[i] < 0) continue;
    const read_result r = read_to_end(clients[i], k);
    if (r.bytes != final_length(k) || r.first_wrong != SIZE_MAX || !r.eof) {
      char what[96];
      snprintf(what, sizeof what, "read %zu of %zu bytes, first wrong %zu, eof %d", r.bytes,
               final_length(k), r.first_wrong, r.eof);
      producer_failed(p, what, k, r.error);
    }
    p->bytes += r.bytes;
    close(clients[i]);
  }
  atomic_fetch_add(&producers_finished, 1);
  return NULL;
}

static int handoffs_done(void *arg) {
  (void)arg;
  return atomic_load(&producers_finished) == kProducers && done_total == kHandoffs;
}

static void test_handoff(int backend) {
  rl_config config;
  rl_config_init(&config);
  config.backend = backend;
  config.max_connections = 1024;
  /* Every producer reads its clients only after handing all 200 off: no idle timeout then. */
  config.drain_idle_timeout_ms = 60000;
  char err[256];
  rl_manager *m = rl_manager_new(&config, NULL, err, sizeof err); /* no callbacks at all */
  if (m == NULL) fprintf(stderr, "rl_manager_new: %s\n", err);
  REQUIRE(m != NULL);
  host_loop loop;
  host_loop_init(&loop, m);

  memset(records, 0, sizeof records);
  done_total = 0;
  atomic_init(&producers_finished, 0);
  producer producers[kProducers];
  pthread_t threads[kProducers];
  memset(producers, 0, sizeof producers);
  for (int i = 0; i < kProducers; ++i) {
    producers[i].index = i;
    producers[i].manager = m;
    REQUIRE(pthread_create(&threads[i], NULL, producer_main, &producers[i]) == 0);
  }
  CHECK(drive(&loop, handoffs_done, NULL, 60000));
  size_t total_bytes = 0;
  for (int i = 0; i < kProducers; ++i) {
    REQUIRE(pthread_join(threads[i], NULL) == 0);
    CHECK_EQ(producers[i].failures, 0);
    if (producers[i].failures > 0) fprintf(stderr, "%s\n", producers[i].what);
    total_bytes += producers[i].bytes;
  }

  size_t expected_bytes = 0;
  int not_once = 0, not_clean = 0, wrong_bytes = 0;
  for (unsigned k = 0; k < kHandoffs; ++k) {
    expected_bytes += final_length(k);
    not_once += records[k].done_calls != 1;
    not_clean += records[k].done_calls > 0 && records[k].report.outcome != RL_OUTCOME_CLEAN;
    wrong_bytes += records[k].done_calls > 0 && records[k].report.bytes_sent != final_length(k);
  }
  if (not_clean > 0) { /* which outcomes, and the first error of one of them */
    int per_outcome[RL_OUTCOME_COUNT] = {0};
    unsigned example = kHandoffs;
    for (unsigned k = 0; k < kHandoffs; ++k) {
      const int outcome = records[k].report.outcome;
      if (records[k].done_calls == 0 || outcome < 0 || outcome >= RL_OUTCOME_COUNT) continue;
      ++per_outcome[outcome];
      if (outcome != RL_OUTCOME_CLEAN && example == kHandoffs) example = k;
    }
    for (int i = 0; i < RL_OUTCOME_COUNT; ++i) {
      if (per_outcome[i] > 0) fprintf(stderr, "handoff outcome %s: %d\n", rl_outcome_name(i), per_outcome[i]);
    }
    if (example < kHandoffs) {
      const rl_close_report *r = &records[example].report;
      fprintf(stderr, "e.g. connection %u: %s, first error %d, sent %llu of %zu, flush %.3f s, drain %.3f s\n",
              example, rl_outcome_name(r->outcome), r->first_error, (unsigned long long)r->bytes_sent,
              final_length(example), (double)r->flush_time_ns / 1e9, (double)r->drain_time_ns / 1e9);
    }
  }
  CHECK_EQ(done_total, kHandoffs);
  CHECK_EQ(not_once, 0);
  CHECK_EQ(not_clean, 0);
  CHECK_EQ(wrong_bytes, 0);
  CHECK_EQ(total_bytes, expected_bytes);

  /* 5. The counters agree. */
  rl_stats stats;
  stats.size = sizeof stats;
  CHECK_EQ(rl_manager_stats(m, &stats), 0);
  CHECK_EQ(stats.connections_handed_off, kHandoffs);
  CHECK_EQ(stats.outcomes[RL_OUTCOME_CLEAN], kHandoffs);
  CHECK_EQ(stats.closed_connections, kHandoffs);
  CHECK_EQ(stats.live_connections, 0);
  CHECK_EQ(stats.connections_accepted, 0);
  CHECK(stats.handoff_wakes >= 1 && stats.handoff_wakes <= kHandoffs);
  CHECK(stats.peak_live_connections >= 1 && stats.peak_live_connections <= kHandoffs);
  CHECK_EQ(stats.bytes_sent, expected_bytes);
  CHECK_EQ(stats.bytes_received, 0);
  CHECK(stats.syscalls > 0);
  CHECK_EQ(stats.stale_completions, 0);
  printf("handoff: %d connections, %zu bytes, %llu wakes, peak %llu live, %llu syscalls; "
         "%ld epoll waits, %ld woken by the event fd\n",
         kHandoffs, expected_bytes, (unsigned long long)stats.handoff_wakes,
         (unsigned long long)stats.peak_live_connections, (unsigned long long)stats.syscalls,
         loop.waits, loop.woken);
  CHECK(loop.woken > 0);

  /* fd -1: refused, nothing queued, its done callback never runs. */
  handoff_record refused;
  memset(&refused, 0, sizeof refused);
  CHECK_EQ(rl_manager_handoff(m, -1, "x", 1, on_handoff_done, &refused), -EBADF);
  stop_and_finish(&loop, 2000);
  CHECK_EQ(refused.done_calls, 0);
  host_loop_close(&loop);
  rl_manager_free(m);

  /* A handoff still queued when its manager is freed: reset, done runs once, "aborted". */
  m = rl_manager_new(&config, NULL, err, sizeof err);
  REQUIRE(m != NULL);
  uint16_t port;
  const int listener = listen_loopback(&port);
  const int client_side = connect_loopback(port);
  REQUIRE(client_side >= 0);
  const int server_side = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  REQUIRE(server_side >= 0);
  close(listener);
  handoff_record pending;
  memset(&pending, 0, sizeof pending);
  CHECK_EQ(rl_manager_handoff(m, server_side, "never sent", 10, on_handoff_done, &pending), 0);
  rl_manager_free(m);
  CHECK_EQ(pending.done_calls, 1);
  CHECK_EQ(pending.report.outcome, RL_OUTCOME_ABORTED);
  const read_result r = read_to_end(client_side, 0);
  CHECK_EQ(r.bytes, 0);
  CHECK(r.error == ECONNRESET || r.eof); /* reset, or closed before anything was sent */
  close(client_side);
}

/* Open file descriptors of this process (to find leaks). */
static int count_open_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  REQUIRE(dir != NULL);
  int count = 0;
  while (readdir(dir) != NULL) ++count;
  closedir(dir);
  return count;
}

/* --- 6. post, snapshot, reconfigure --------------------------------------------------------- */

typedef struct posting {
  rl_manager *manager;
  int order[3];        /* main thread only (the posted calls run there) */
  int ran;             /* main thread only */
  int poll_inside;     /* what rl_manager_poll returned inside a posted call */
  int snapshot_result; /* the producer's, read after pthread_join */
  rl_stats snapshot;   /* the producer's, read after pthread_join */
  atomic_int producer_done;
} posting;

typedef struct posted_call {
  posting *state;
  int index;
} posted_call;

static void posted(void *arg) {
  posted_call *call = arg;
  call->state->order[call->state->ran++] = call->index;
  call->state->poll_inside = rl_manager_poll(call->state->manager);
}

static posted_call calls[3];

static void *poster_main(void *arg) {
  posting *state = arg;
  for (int i = 0; i < 3; ++i) {
    calls[i].state = state;
    calls[i].index = i;
    CHECK_EQ(rl_manager_post(state->manager, posted, &calls[i]), 0);
  }
  state->snapshot.size = sizeof state->snapshot;
  state->snapshot_result = rl_manager_snapshot(state->manager, &state->snapshot, 10000);
  atomic_store(&state->producer_done, 1);
  return NULL;
}

static int poster_finished(void *arg) { return atomic_load(&((posting *)arg)->producer_done); }

static void test_post_snapshot_reconfigure(int backend) {
  rl_config config;
  rl_config_init(&config);
  config.backend = backend;
  char err[256];
  rl_manager *m = rl_manager_new(&config, NULL, err, sizeof err);
  REQUIRE(m != NULL);
  host_loop loop;
  host_loop_init(&loop, m);

  static posting state;
  memset(&state, 0, sizeof state);
  state.manager = m;
  atomic_init(&state.producer_done, 0);
  pthread_t poster;
  REQUIRE(pthread_create(&poster, NULL, poster_main, &state) == 0);
  CHECK(drive(&loop, poster_finished, &state, 10000));
  REQUIRE(pthread_join(poster, NULL) == 0);
  CHECK_EQ(state.ran, 3);
  CHECK_EQ(state.order[0], 0);
  CHECK_EQ(state.order[1], 1);
  CHECK_EQ(state.order[2], 2);
  CHECK_EQ(state.poll_inside, -EDEADLK); /* a posted call is a callback */
  CHECK_EQ(state.snapshot_result, 0);
  CHECK_EQ(state.snapshot.closed_connections, 0);
  CHECK_EQ(rl_manager_post(NULL, posted, NULL), -EINVAL);
  CHECK_EQ(rl_manager_post(m, NULL, NULL), -EINVAL);

  /* On the driving thread: at once. A first-version rl_stats is written only up to its size. */
  rl_stats stats;
  memset(&stats, 0xab, sizeof stats);
  stats.size = offsetof(rl_stats, close_latency_counts);
  CHECK_EQ(rl_manager_snapshot(m, &stats, 0), 0);
  CHECK(stats.close_latency_sum_ns == UINT64_C(0xabababababababab));
  CHECK_EQ(stats.stale_completions, 0);

  CHECK(rl_close_latency_bound_ns(0) == UINT64_C(1000000));
  CHECK(rl_close_latency_bound_ns(1) == UINT64_C(2500000));
  CHECK(rl_close_latency_bound_ns(RL_CLOSE_LATENCY_BUCKETS - 2) == UINT64_C(30000000000));
  CHECK(rl_close_latency_bound_ns(RL_CLOSE_LATENCY_BUCKETS - 1) == UINT64_MAX);

  rl_config changed = config;
  changed.max_connections = config.max_connections / 2;
  CHECK_EQ(rl_manager_reconfigure(m, &changed, err, sizeof err), -EINVAL);
  CHECK(strcmp(err, "max_connections cannot change while the manager runs "
                    "(restart to change it)") == 0);
  changed = config;
  changed.drain_idle_timeout_ms = 0;
  CHECK_EQ(rl_manager_reconfigure(m, &changed, err, sizeof err), -EINVAL);
  CHECK(strstr(err, "drain_idle_timeout_ms") != NULL);
  changed = config;
  changed.drain_idle_timeout_ms = 1234;
  CHECK_EQ(rl_manager_reconfigure(m, &changed, err, sizeof err), 0);
  CHECK(err[0] == '\0');

  stop_and_finish(&loop, 0);
  CHECK_EQ(rl_manager_post(m, posted, &calls[0]), -ECANCELED);
  host_loop_close(&loop);
  rl_manager_free(m);
}

int main(void) {
  const int fds_at_start = count_open_fds();
  test_version();
  test_config();
  /* automatic: io_uring where it can be set up (else epoll, tested twice then) */
  const int backends[2] = {RL_BACKEND_AUTOMATIC, RL_BACKEND_EPOLL};
  for (int i = 0; i < 2; ++i) {
    const int before = failures;
    test_serve_and_errors(backends[i]);
    test_handoff(backends[i]);
    test_post_snapshot_reconfigure(backends[i]);
    printf("backend %s: %s\n", backends[i] == RL_BACKEND_EPOLL ? "epoll" : "automatic",
           failures == before ? "passed" : "FAILED");
  }
  CHECK_EQ(count_open_fds(), fds_at_start); /* every manager freed, every socket closed */
  if (failures > 0) {
    fprintf(stderr, "c_api_test: %d check(s) failed\n", failures);
    return 1;
  }
  printf("c_api_test: all checks passed\n");
  return 0;
}
