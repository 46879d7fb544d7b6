// The floor of an L4 proxy's CPU on this kernel: the least a single-threaded proxy does per
// request, to compare `ringlinger proxy` and HAProxy against (issue 17, target 3). epoll,
// edge-triggered, every fd registered once (EPOLLIN|EPOLLOUT|EPOLLRDHUP, never modified), one
// upstream connection per client, bytes moved either by read/write through a 64 KiB buffer per
// direction ("rw") or by splice(2) through a pipe per direction ("splice", no copy to user space).
// A FIN is passed on as shutdown(SHUT_WR) once what came before it is written; the pair is closed
// when both sides sent FIN, or at once on an error. No graceful-close niceties (no drain, no
// timeouts): a measuring instrument, not a proxy to deploy.
//   floorproxy rw|splice LISTEN_PORT UPSTREAM_PORT [READ_SIZE]   (127.0.0.1 both; runs until
// killed; READ_SIZE: rw's buffer, default 64 KiB)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

// kPipe: each pipe is grown to it (F_SETPIPE_SZ) so one splice moves up to that much.
enum { kPipe = 262144, kMaxFd = 65536 };
static size_t read_size = 65536;  // rw: bytes per read (argv[4])

// One direction of a pair: bytes read from `from`, not yet written to `to`.
struct Flow {
  int from, to;
  int pipe[2];          // splice mode
  char* buffer;         // rw mode
  size_t start, end;    // rw: pending bytes are buffer[start, end); splice: pending = end
  int eof;              // `from` sent FIN
  int shut;             // FIN passed on to `to`
};

struct Pair {
  struct Flow up;    // client -> upstream
  struct Flow down;  // upstream -> client
  int fds[2];
};

static int use_splice;
static struct Pair* pair_of[kMaxFd];
static struct sockaddr_in upstream;
static int epfd;

static void die(const char* what) { perror(what); exit(1); }

static void add_fd(int fd) {
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.fd = fd};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl");
}

static void init_flow(struct Flow* f, int from, int to) {
  memset(f, 0, sizeof(*f));
  f->from = from;
  f->to = to;
  if (use_splice) {
    if (pipe2(f->pipe, O_NONBLOCK | O_CLOEXEC) != 0) die("pipe2");
    fcntl(f->pipe[1], F_SETPIPE_SZ, kPipe);
  } else {
    f->buffer = malloc(read_size);
  }
}

static void free_pair(struct Pair* p) {
  struct Flow* flows[2] = {&p->up, &p->down};
  for (int i = 0; i < 2; ++i) {
    if (use_splice) {
      close(flows[i]->pipe[0]);
      close(flows[i]->pipe[1]);
    } else {
      free(flows[i]->buffer);
    }
  }
  for (int i = 0; i < 2; ++i) {
    pair_of[p->fds[i]] = NULL;
    close(p->fds[i]);  // also removes it from the epoll set
  }
  free(p);
}

// Writes what is pending. Returns -1 on an error, 0 when something stays pending, 1 when empty.
static int flush(struct Flow* f) {
  while (f->end > f->start) {
    ssize_t n = use_splice
        ? splice(f->pipe[0], NULL, f->to, NULL, f->end, SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
        : write(f->to, f->buffer + f->start, f->end - f->start);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (use_splice) f->end -= (size_t)n; else f->start += (size_t)n;
  }
  f->start = f->end = 0;
  return 1;
}

// Moves bytes from `from` to `to` until `from` is empty or `to` is full. -1: close the pair.
static int pump(struct Flow* f) {
  for (;;) {
    int flushed = flush(f);
    if (flushed < 0) return -1;
    if (!flushed) return 0;  // EPOLLOUT on `to` resumes
    if (f->eof) break;
    ssize_t n = use_splice
        ? splice(f->from, NULL, f->pipe[1], NULL, kPipe, SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
        : read(f->from, f->buffer, read_size);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (n == 0) {
      f->eof = 1;
      break;
    }
    f->end = (size_t)n;
    flush(f);
    // A short read emptied the socket: the next arrival raises a new edge. Not so for a short
    // splice, which may have stopped at the pipe's slots (one per skb fragment): read to EAGAIN.
    if (!use_splice && f->end == 0 && (size_t)n < read_size) return 0;
  }
  if (!f->shut) {
    f->shut = 1;
    shutdown(f->to, SHUT_WR);
  }
  return 0;
}

static void on_accept(int listener) {
  for (;;) {
    int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) return;
    int u = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(u, (struct sockaddr*)&upstream, sizeof(upstream)) != 0 && errno != EINPROGRESS) {
      close(c);
      close(u);
      continue;
    }
    struct Pair* p = calloc(1, sizeof(*p));
    p->fds[0] = c;
    p->fds[1] = u;
    init_flow(&p->up, c, u);
    init_flow(&p->down, u, c);
    pair_of[c] = pair_of[u] = p;
    add_fd(c);
    add_fd(u);
  }
}

static void on_event(int fd) {
  struct Pair* p = pair_of[fd];
  if (p == NULL) return;
  // Either direction may have moved: the fd's own input, or room on it for its peer's bytes.
  if (pump(&p->up) < 0 || pump(&p->down) < 0 ||
      (p->up.shut && p->down.shut && p->up.end == 0 && p->down.end == 0)) {
    free_pair(p);
  }
}

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: floorproxy rw|splice LISTEN_PORT UPSTREAM_PORT [READ_SIZE]\n");
    return 2;
  }
  if (argc == 5) read_size = (size_t)atol(argv[4]);
  use_splice = strcmp(argv[1], "splice") == 0;
  signal(SIGPIPE, SIG_IGN);  // a write to a reset peer fails with EPIPE instead
  upstream.sin_family = AF_INET;
  upstream.sin_port = htons((unsigned short)atoi(argv[3]));
  upstream.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[2])),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(listener, (struct sockaddr*)&address, sizeof(address)) != 0) die("bind");
  if (listen(listener, 4096) != 0) die("listen");
  if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
  epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(epfd, events, 256, -1);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == listener) on_accept(listener); else on_event(events[i].data.fd);
    }
  }
}
