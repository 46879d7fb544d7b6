/* ringlinger's C API: graceful TCP close (send -> shutdown(SHUT_WR) -> drain to EOF -> close)
 * for thousands of connections on one io_uring ring (or epoll where io_uring is unavailable),
 * for programs written in C (C99 or later).
 * A thin layer over the C++ API (ringlinger/manager.hpp); the semantics are the same.
 * Build: cc prog.c $(pkg-config --cflags --libs ringlinger); statically:
 * cc prog.c $(pkg-config --static --cflags --libs ringlinger) (adds -luring and the C++ runtime).
 *
 * Embedding in a host epoll loop, handing connections over to be closed gracefully:
 *
 *   rl_config config;
 *   rl_config_init(&config);                     // the defaults; change what you need
 *   char err[256];
 *   rl_manager *m = rl_manager_new(&config, NULL, err, sizeof err);   // NULL: see err
 *   int efd = rl_manager_event_fd(m);            // add to your epoll set, EPOLLIN
 *   ...
 *   rl_manager_handoff(m, client_fd, "bye\n", 4, on_done, ctx);  // any thread; m owns the fd
 *   ...
 *   for (;;) {                                   // your loop, on the thread that created m
 *     int n = epoll_wait(ep, events, 64, rl_manager_poll_timeout_ms(m, 1000));
 *     ... handle your own events ...
 *     if (rl_manager_poll(m) == 0) break;        // 0: stopped and every connection closed
 *   }
 *   rl_manager_free(m);
 *
 * Serving instead: pass rl_callbacks (on_accept, on_receive, on_closed, ...), rl_manager_listen(),
 * and rl_manager_send() + rl_manager_close() from on_receive. rl_manager_stop(m, grace_ms) (also
 * from a signal handler) ends the loop gracefully.
 *
 * Threads: a manager belongs to the thread that created it; call every rl_manager_* function on
 * that thread, except rl_manager_handoff(), rl_manager_post(), rl_manager_snapshot() and
 * rl_manager_stop(), which any thread (and, for stop, a signal handler) may call. Callbacks run on that thread, inside rl_manager_poll() or
 * rl_manager_run_once(), and may call any rl_manager_* function except poll, run_once, run and
 * free. Functions on no manager (rl_config_*, rl_outcome_name) are thread-safe.
 *
 * Errors: functions returning int return 0 (or a non-negative result) on success and a negative
 * errno value on failure (-EINVAL, -EBADF, -ENOMEM, ...). rl_manager_new returns NULL and writes
 * a message. No C++ exception ever leaves this API.
 *
 * ABI: rl_config, rl_callbacks, rl_stats and rl_close_report start with `size_t size`, the size
 * of the struct as the program was compiled: a later version of the library only appends
 * fields, reads just the `size` bytes a program passed in (defaults for the rest) and writes just
 * the `size` bytes a program's buffer has, so a program built against this header keeps working
 * with a newer library. (A size field rather than one setter per field: rl_config reads like the
 * C++ Config, one call fills it, and rl_callbacks can be written with designated initializers.)
 * Initialise rl_config with rl_config_init(); set the other structs' size to sizeof. */
#ifndef RINGLINGER_RINGLINGER_H
#define RINGLINGER_RINGLINGER_H

#include <stddef.h>
#include <stdint.h>

#include "ringlinger/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- version ------------------------------------------------------------------------------- */

/* The running library's version ("0.2.0") and its parts, which may be newer than the headers'
 * RINGLINGER_VERSION_* (version.h). Thread-safe. */
const char *rl_version(void);
int rl_version_major(void);
int rl_version_minor(void);
int rl_version_patch(void);

/* --- connections --------------------------------------------------------------------------- */

/* Identifies one connection for its whole life: the slot in the low 32 bits (below
 * max_connections, reused after the connection closed, so a program may index its own tables by
 * rl_conn_slot(id)), the slot's generation in the high 32 bits (an id kept after its connection
 * closed is stale: calls with it fail with -EBADF). */
typedef uint64_t rl_conn_id;
static inline uint32_t rl_conn_slot(rl_conn_id id) {
  const uint32_t slot = id & 0xffffffffu;
  return slot;
}

/* Why a connection's fd was closed: exactly one per connection (as ringlinger::Outcome). */
enum rl_outcome {
  RL_OUTCOME_CLEAN = 0,              /* our FIN after all our data, the peer's EOF seen */
  RL_OUTCOME_PEER_RESET = 1,         /* ECONNRESET, EPIPE: the peer may not have everything */
  RL_OUTCOME_DRAIN_IDLE_TIMEOUT = 2, /* draining, no progress for drain_idle_timeout_ms */
  RL_OUTCOME_DRAIN_TIMEOUT = 3,      /* SHUT_WR -> close took longer than drain_timeout_ms */
  RL_OUTCOME_DRAIN_BYTE_CAP = 4,     /* the peer sent more than drain_max_bytes after close */
  RL_OUTCOME_SEND_TIMEOUT = 5,       /* sending, no progress for send_timeout_ms */
  RL_OUTCOME_SEND_ERROR = 6,         /* a send, shutdown or connect failed (not a reset) */
  RL_OUTCOME_RECEIVE_ERROR = 7,      /* a receive failed (not a reset) */
  RL_OUTCOME_ABORTED = 8,            /* rl_manager_abort() (or _abort_after_send()): a reset */
  RL_OUTCOME_STOP_DEADLINE = 9       /* rl_manager_stop()'s grace ran out: reset */
};
/* Outcomes this header knows; rl_stats has room for RL_OUTCOME_SLOTS of them. */
#define RL_OUTCOME_COUNT 10
#define RL_OUTCOME_SLOTS 16

/* The lower-case name of an outcome ("clean", "drain_idle_timeout", ...); NULL when `outcome`
 * is not one (so `for (i = 0; rl_outcome_name(i); ++i)` lists them). Thread-safe. */
const char *rl_outcome_name(int outcome);

/* Everything known about one connection when its fd was closed (as ringlinger::CloseReport).
 * Valid only during the callback that receives it. */
typedef struct rl_close_report {
  size_t size;              /* sizeof(rl_close_report) in the library: fields past it absent */
  int outcome;              /* an rl_outcome */
  int first_error;          /* the first error seen (positive errno), 0 if none */
  int reset_sent;           /* 1: closed with SO_LINGER {1, 0}, i.e. with an RST */
  int close_requested;      /* 1: close was requested (0: abort, an error or stop while open) */
  uint64_t bytes_sent;      /* handed to the kernel by completed sends */
  uint64_t bytes_received;  /* delivered to on_receive */
  uint64_t bytes_discarded; /* read and thrown away after close was requested */
  uint64_t open_time_ns;    /* adopt/accept -> close requested (or -> outcome decided) */
  uint64_t flush_time_ns;   /* close requested -> SHUT_WR done */
  uint64_t drain_time_ns;   /* SHUT_WR done -> outcome decided (reading to the peer's EOF) */
  uint64_t teardown_time_ns; /* outcome decided -> fd closed (0: see CloseReport) */
  /* Appended after 0.1 (present when size covers it): */
  uint64_t bytes_unsent;    /* queued (send, handoff's final bytes) but never handed to the
                               kernel: what the peer cannot have received */
} rl_close_report;

/* --- configuration ------------------------------------------------------------------------- */

enum rl_backend { RL_BACKEND_AUTOMATIC = 0, RL_BACKEND_IO_URING = 1, RL_BACKEND_EPOLL = 2 };
enum rl_on_timeout { RL_ON_TIMEOUT_CLOSE = 0, RL_ON_TIMEOUT_RESET = 1 };
enum rl_shutdown_mode { RL_SHUTDOWN_SYSCALL = 0, RL_SHUTDOWN_RING = 1 };

/* The fields of ringlinger::Config, in its order; see config.hpp for each one's meaning, limits
 * and default (rl_config_init() sets the defaults). */
typedef struct rl_config {
  size_t size;                   /* sizeof(rl_config), set by rl_config_init() */
  int backend;                   /* rl_backend: automatic (io_uring, else epoll) */
  uint32_t drain_idle_timeout_ms; /* longest time without progress while draining; idle = no
                                     byte acknowledged and none received (Config) */
  uint32_t drain_timeout_ms;     /* longest SHUT_WR -> close */
  uint64_t drain_max_bytes;      /* most bytes discarded after close; 0 = unlimited */
  uint32_t send_timeout_ms;      /* the same while sending (no send completed either) */
  int on_timeout;                /* rl_on_timeout: close (FIN if possible) or reset (RST) */
  uint32_t orphan_timeout_ms;    /* TCP_USER_TIMEOUT before a timeout's close; 0 = the kernel's */
  int shutdown_mode;             /* rl_shutdown_mode: syscall (shutdown(2)) or ring */
  uint32_t ring_entries;         /* submission queue entries (power of two, 8..32768) */
  uint32_t max_connections;      /* connections at once */
  uint32_t receive_buffer_bytes; /* size of each shared receive buffer */
  uint32_t receive_buffer_count; /* shared receive buffers (power of two) */
  uint32_t batch_wait_us;        /* completion batching (kernel 6.12+); 0 = off */
  int defer_taskrun;             /* nonzero: DEFER_TASKRUN | SINGLE_ISSUER when offered */
} rl_config;

/* Fills `config` with the defaults for a struct of `size` bytes; use rl_config_init(). */
void rl_config_init_sized(rl_config *config, size_t size);
/* Fills `config` with the defaults (those of ringlinger::Config) and sets config->size.
 * Thread-safe. */
static inline void rl_config_init(rl_config *config) {
  rl_config_init_sized(config, sizeof(rl_config));
}

/* Checks `config` as rl_manager_new() does. Returns 0 when it is usable; otherwise -EINVAL and
 * a message naming the first bad field and its value in `err` (if not NULL; truncated to
 * `errlen` bytes, always terminated), e.g. "ring_entries must be a power of two between 8 and
 * 32768 (got 1000)". Thread-safe. */
int rl_config_validate(const rl_config *config, char *err, size_t errlen);

/* --- the manager --------------------------------------------------------------------------- */

/* One io_uring ring (or the epoll fallback) and every connection given to it. Opaque. */
typedef struct rl_manager rl_manager;

/* What the manager tells the program. Every callback gets the `user` pointer given here, runs on
 * the manager's thread, and may be NULL. */
typedef struct rl_callbacks {
  size_t size; /* sizeof(rl_callbacks) */
  void *user;
  /* A listener accepted a connection; it is open and its data will reach on_receive. */
  void (*on_accept)(void *user, rl_conn_id id);
  /* Data arrived on an open connection; `data` is valid only during the call. length 0: the
   * peer sent EOF. When NULL, the manager reads nothing before close is requested. Never called
   * after rl_manager_close(). */
  void (*on_receive)(void *user, rl_conn_id id, const void *data, size_t length);
  /* The connection's fd was closed, or handed to the kernel to close before the manager next
   * waits (io_uring, a drain the peer's FIN ended): exactly once per connection, after which
   * `id` is stale. Not called for connections handed off (their done callback is), nor for
   * connections still open when the manager is freed. */
  void (*on_closed)(void *user, rl_conn_id id, const rl_close_report *report);
  /* Every byte queued on an open connection was handed to the kernel: with
   * rl_manager_queued_bytes() and rl_manager_pause_receive(), a proxy's flow control. */
  void (*on_send_drained)(void *user, rl_conn_id id);
} rl_callbacks;

/* Creates a manager on the calling thread, which must be the one that drives it. `config` NULL:
 * the defaults; `callbacks` NULL: none. Returns NULL on failure with errno set (EINVAL: a bad
 * config, or a size field too small; ENOMEM; or the error that made the backend's setup fail,
 * e.g. EPERM with RL_BACKEND_IO_URING where io_uring is disabled) and a message in `err` (if not
 * NULL; truncated to `errlen` bytes, always terminated) naming the bad field and its value. */
rl_manager *rl_manager_new(const rl_config *config, const rl_callbacks *callbacks, char *err,
                           size_t errlen);

/* Frees the manager. Connections still open are reset and closed at once (call rl_manager_stop
 * and poll until it returns 0 first to close them gracefully); handoffs not yet adopted are
 * reset and their done callback runs here with outcome "aborted". NULL is ignored. Not from a
 * callback. */
void rl_manager_free(rl_manager *manager);

/* rl_manager_listen's flags. */
#define RL_LISTEN_REUSE_PORT 1u /* SO_REUSEPORT: several managers may listen on one port */
/* TCP_DEFER_ACCEPT, one second: a connection is accepted once its first bytes arrive (for
 * protocols where the client speaks first; see ListenOptions::defer_accept in
 * listen_options.hpp) */
#define RL_LISTEN_DEFER_ACCEPT 2u

/* Binds and listens on `address`, "IPv4:port" or "[IPv6]:port" (port 0 picks a free one), and
 * accepts connections (on_accept). `backlog` <= 0: 4096. Returns the bound port, and writes the
 * bound address as text to `bound` (if not NULL; up to `boundlen` bytes, always terminated;
 * RL_ADDRESS_MAX is enough). Errors: -EINVAL (address not parsable, or unknown flags), the
 * errno of socket/bind/listen (-EADDRINUSE, -EACCES, ...). */
#define RL_ADDRESS_MAX 64
int rl_manager_listen(rl_manager *manager, const char *address, int backlog, unsigned flags,
                      char *bound, size_t boundlen);

/* Takes ownership of a connected (or still connecting: non-blocking connect returned
 * EINPROGRESS) TCP socket and stores its id in `*id`. Errors: -EBADF (fd < 0), -EBUSY (the
 * table is full or the manager is stopping: the fd stays the caller's), -EINVAL (id NULL). */
int rl_manager_adopt(rl_manager *manager, int fd, rl_conn_id *id);

/* The done callback of rl_manager_handoff: `report` says how the handed-off connection
 * ended. Runs once per successful handoff, on the manager's thread (or in rl_manager_free). */
typedef void (*rl_handoff_done_fn)(void *user, const rl_close_report *report);

/* Thread-safe, never blocks: gives the manager a connected TCP socket to close gracefully. The
 * manager's thread adopts it, sends the `length` bytes at `final_bytes` (copied now), closes it
 * (flush, SHUT_WR, drain to EOF, close), then calls `done(user, report)` (if not NULL). The
 * caller must not touch `fd` again after a 0 return. Errors (nothing queued, the fd stays the
 * caller's, done is not called): -EBADF (fd < 0), -EINVAL (manager NULL, or final_bytes NULL
 * with length > 0), -ENOMEM. */
int rl_manager_handoff(rl_manager *manager, int fd, const void *final_bytes, size_t length,
                       rl_handoff_done_fn done, void *user);

/* Queues a copy of `length` bytes to send, after everything queued before. Errors: -EBADF
 * (stale id), -EPIPE (close or shutdown_write was requested, or the connection is failing),
 * -EINVAL (data NULL with length > 0), -ENOMEM. */
int rl_manager_send(rl_manager *manager, rl_conn_id id, const void *data, size_t length);

/* rl_manager_send() then rl_manager_close() in one call, for a server's last response: where
 * nothing was queued before, the bytes and the FIN may leave in one segment. Errors as
 * rl_manager_send()'s; then nothing is queued and the connection is not closed. */
int rl_manager_send_and_close(rl_manager *manager, rl_conn_id id, const void *data,
                              size_t length);

/* Starts the graceful close: flush what is queued, shutdown(SHUT_WR), read and discard until the
 * peer's EOF (or a drain limit), close; on_closed follows. Calling it again is harmless.
 * Error: -EBADF (stale id). */
int rl_manager_close(rl_manager *manager, rl_conn_id id);

/* Half-close: once every queued byte is sent, shutdown(SHUT_WR), while receiving goes on; later
 * sends fail with -EPIPE; rl_manager_close() completes the close. Calling it again is harmless.
 * Errors: -EBADF (stale id), -EPIPE (close was already requested). */
int rl_manager_shutdown_write(rl_manager *manager, rl_conn_id id);

/* Resets the connection now (the peer sees RST); outcome "aborted" unless one was already
 * decided. Error: -EBADF (stale id). */
int rl_manager_abort(rl_manager *manager, rl_conn_id id);

/* Resets the connection once every queued byte was sent and acknowledged by the peer, which
 * reads them all and then sees the reset instead of an EOF (a proxy passing on a cut stream). No
 * FIN is sent; the send timeout bounds the wait; outcome "aborted". Errors: -EBADF (stale id),
 * -EPIPE (the FIN may be out: shutdown_write or close got that far). */
int rl_manager_abort_after_send(rl_manager *manager, rl_conn_id id);

/* Flow control: stop delivering received data to on_receive (one receive already in flight may
 * still deliver), and start again. Error: -EBADF (stale id). */
int rl_manager_pause_receive(rl_manager *manager, rl_conn_id id);
int rl_manager_resume_receive(rl_manager *manager, rl_conn_id id);

/* Bytes queued on the connection and not yet handed to the kernel; 0 for a stale id. */
uint64_t rl_manager_queued_bytes(const rl_manager *manager, rl_conn_id id);

/* The connection's fd (for getpeername, setsockopt; do not close it). Error: -EBADF (stale id). */
int rl_manager_fd(const rl_manager *manager, rl_conn_id id);

/* --- driving it ---------------------------------------------------------------------------- */

/* From the host's event loop: add this fd to the host's epoll (EPOLLIN, level- or
 * edge-triggered) or poll set; it becomes readable when the manager has work (completions, or
 * handoffs from other threads). Owned by the manager: do not close it. Errors: the errno of
 * creating it (-EMFILE, ...). */
int rl_manager_event_fd(rl_manager *manager);

/* How long the host may wait for the event fd before calling rl_manager_poll() again, in ms: up
 * to the manager's next timer, 0 when requests are prepared but not submitted yet (after calls
 * made outside a callback), at most `max_ms`. `max_ms` < 0 means no limit: then -1 (wait
 * forever, as epoll_wait wants it) when nothing is due. */
int rl_manager_poll_timeout_ms(const rl_manager *manager, int max_ms);

/* A non-blocking loop step: clears the event fd's readiness, submits what is prepared, handles
 * every completion ready (running callbacks), expires timers. Call it after every wait, and
 * after calls made outside callbacks. Returns 1 while running, 0 once rl_manager_stop() was
 * called and every connection and listener is closed. Errors: -EDEADLK (called from a
 * callback), -EINVAL (manager NULL), or an errno from the kernel. */
int rl_manager_poll(rl_manager *manager);

/* Without a host loop: one loop step that waits up to `max_wait_ms` (< 0: 0) for work. Returns
 * and fails like rl_manager_poll(). rl_manager_run() loops until it would return 0. */
int rl_manager_run_once(rl_manager *manager, int max_wait_ms);
int rl_manager_run(rl_manager *manager);

/* Stops accepting, closes every open connection gracefully and lets closing ones finish;
 * connections still there after `grace_ms` (< 0: 0) are reset (outcome "stop_deadline").
 * Async-signal-safe and thread-safe; takes effect at the next loop step. */
void rl_manager_stop(rl_manager *manager, int64_t grace_ms);

/* Thread-safe, never blocks: runs `fn(arg)` on the manager's thread at its next loop step
 * (inside rl_manager_poll() or _run_once(), like a callback: it may call any rl_manager_*
 * function except poll, run_once, run and free). Calls run in the order posted; the manager is
 * woken as by a handoff. A call still queued when the manager is freed never runs. Errors
 * (nothing queued): -ECANCELED (the manager finished: poll/run_once returned 0), -EINVAL
 * (manager or fn NULL), -ENOMEM. */
int rl_manager_post(rl_manager *manager, void (*fn)(void *arg), void *arg);

/* Changes the timeouts and caps while the manager runs: drain_idle_timeout_ms,
 * drain_timeout_ms, drain_max_bytes, send_timeout_ms, orphan_timeout_ms, on_timeout,
 * shutdown_mode. Timers armed from now on use them; those already armed keep their deadlines;
 * drain_max_bytes applies at once, also to connections draining (see Manager::reconfigure).
 * The other fields are fixed for the manager's life and must equal its current ones. On the
 * manager's thread only (from another: inside a rl_manager_post() call). Returns 0, or -EINVAL
 * with a message naming the field in `err` (if not NULL; truncated to `errlen` bytes, always
 * terminated), e.g. "max_connections cannot change while the manager runs (restart to change
 * it)"; nothing changes then. */
int rl_manager_reconfigure(rl_manager *manager, const rl_config *config, char *err,
                           size_t errlen);

/* Writes what the backend is ("io_uring SUBMIT_ALL|...", or "epoll (...)") to `text` (up to
 * `length` bytes, always terminated). Returns the full length of the description (like
 * snprintf), or -EINVAL. */
int rl_manager_describe_backend(const rl_manager *manager, char *text, size_t length);

/* --- counters ------------------------------------------------------------------------------ */

/* Buckets of rl_stats.close_latency_counts (as ringlinger::kCloseLatencyBuckets). */
#define RL_CLOSE_LATENCY_BUCKETS 15

/* The upper bound of close-latency bucket `i` in nanoseconds (1 ms, 2.5 ms, 5 ms, ... 30 s);
 * UINT64_MAX for the last bucket (no bound) and for `i` >= RL_CLOSE_LATENCY_BUCKETS.
 * Thread-safe. */
uint64_t rl_close_latency_bound_ns(size_t i);

/* What a manager did so far (as ringlinger::Stats; all cumulative but the live gauge). */
typedef struct rl_stats {
  size_t size;                       /* set to sizeof(rl_stats) before rl_manager_stats() */
  uint64_t outcomes[RL_OUTCOME_SLOTS]; /* connections closed, per rl_outcome; unused slots 0 */
  uint64_t closed_connections;       /* the sum of outcomes */
  uint64_t live_connections;         /* connections using a slot now */
  uint64_t peak_live_connections;    /* the most at once */
  uint64_t connections_accepted;     /* by the manager's listeners */
  uint64_t connections_adopted;      /* by rl_manager_adopt() */
  uint64_t connections_handed_off;   /* by rl_manager_handoff(), counted when adopted */
  uint64_t handoff_wakes;            /* wakes of the manager's thread by handoffs */
  uint64_t accepts_rejected;         /* accepted, closed unserved (stopping) */
  uint64_t accepts_queued;           /* accepted while the table was full, held for a slot */
  uint64_t accept_errors;            /* EMFILE, ENFILE, ENOMEM, ... */
  uint64_t bytes_sent;               /* handed to the kernel by completed sends */
  uint64_t bytes_received;           /* delivered to on_receive */
  uint64_t bytes_discarded;          /* read and thrown away after close was requested */
  uint64_t syscalls;                 /* every system call on the data path, any backend */
  uint64_t enter_calls;              /* of those, io_uring_enter */
  uint64_t shutdown_syscalls;        /* of those, shutdown(2) */
  uint64_t write_shutdowns;          /* half-closes by rl_manager_shutdown_write() */
  uint64_t submissions;              /* submission queue entries consumed by the kernel */
  uint64_t completions;              /* completion queue entries handled */
  uint64_t sq_full_submits;          /* submits made early because the queue was full */
  uint64_t cq_overflows;             /* completion queue overflows (kept, then flushed) */
  uint64_t drain_idle_extensions;    /* drain idle timers restarted at an acknowledgement */
  uint64_t send_timeout_extensions;  /* send timers restarted at an acknowledgement */
  uint64_t receive_buffer_waits;     /* receives that found no free receive buffer */
  uint64_t stale_completions;        /* should stay 0: non-zero is a bug worth reporting */
  /* Appended after 0.1 (written only when stats->size covers them): */
  /* Connections whose close was requested, by close latency (close requested -> fd closed):
   * entry i counts latencies <= rl_close_latency_bound_ns(i) and above the bound before it, the
   * last entry those above every bound. Not cumulative (Prometheus wants the running sum). */
  uint64_t close_latency_counts[RL_CLOSE_LATENCY_BUCKETS];
  uint64_t close_latency_sum_ns;     /* the sum of those latencies */
} rl_stats;

/* Fills `*stats` (its first stats->size bytes; set size = sizeof(rl_stats) first) with a
 * snapshot of the counters; fields this library does not know are set to 0. The per-state
 * counts are taken then, a pass over the max_connections slots (about 140 us for 20000): for a
 * scrape or a report, not every loop step. Errors: -EINVAL
 * (NULL, or a size smaller than the first version of rl_stats, which ends at
 * stale_completions), -ENOMEM. */
int rl_manager_stats(const rl_manager *manager, rl_stats *stats);

/* Thread-safe rl_manager_stats(): on the manager's thread (a callback, or between loop steps of
 * the thread that drives it) it reads the counters at once; from another thread it asks the
 * manager's thread and waits up to `wait_ms` (< 0: 0) for the answer. Errors: -ETIMEDOUT (the
 * manager's thread ran no loop step in that time: not driven, or finished), -EINVAL as
 * rl_manager_stats(), -ENOMEM. */
int rl_manager_snapshot(const rl_manager *manager, rl_stats *stats, int wait_ms);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RINGLINGER_RINGLINGER_H */
