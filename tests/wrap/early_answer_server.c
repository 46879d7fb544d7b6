/* A server that answers before it has read the request, then closes the way ordinary programs do:
 * plain POSIX, no ringlinger code, so `ringlinger wrap` can be tested on a program that was never
 * written for it. Each connection: read the request head (up to the blank line), answer
 * "HTTP/1.1 413" with a body of --response-bytes, close WITHOUT reading the request body. Without
 * a graceful close the kernel answers that close() with a reset, and the client loses the answer.
 *
 *   early_answer_server MODE [--connections N] [--response-bytes B] [--max-threads T]
 *                            [--nofile N] [--watch-ms M] [--hold] [--open-per-request]
 *
 * MODE, the way the program runs and drops its sockets:
 *   epoll        one thread, non-blocking, level-triggered epoll. The client fd is added with
 *                EPOLL_CTL_ADD and never removed before close(): a socket the preload hands off
 *                must stop producing events here. Each event carries (generation << 32 | fd); an
 *                event for an fd that is closed (or reused by a later connection) is reported and
 *                the server exits 3.
 *   threads      a thread per connection (at most --max-threads at once), blocking, close().
 *   blocking     one thread, one connection after another, close().
 *   linger0      as blocking, with SO_LINGER {1, 0} set before close(): an abort (a reset).
 *   fork         the parent accepts, forks a child per connection and closes its own copy once
 *                the child has read the request head (so the body is unread in the socket then);
 *                the child answers, close()s and exit()s. The parent reports children that failed.
 *   exec         as blocking; after the first close it lists its own descriptors ("self-fd N
 *                TARGET"), then fork+execs `ls -l /proc/self/fd` (between "exec-begin" and
 *                "exec-end" lines), so a test can see which descriptors the exec'd program got.
 *   fclose       as blocking; the answer goes through fdopen() + fwrite(), closed by fclose().
 *   dup2         as blocking; closed by dup2(a /dev/null fd, the client fd) (then that close()).
 *   close_range  as blocking; closed by close_range(fd, fd, 0).
 * --connections N: exit after N connections were answered (default 1). --nofile N: set
 * RLIMIT_NOFILE to N first. --open-per-request: open (and close) /dev/null before reading each
 * request head, a second descriptor per request. --watch-ms M (epoll): keep waiting for events M ms after the last
 * connection (default 300). --hold: after the last connection, wait for EOF on stdin (epoll: stdin
 * is in the epoll set, so stale events are still caught meanwhile).
 *
 * stdout: "port P" first; at the end "served N", "write_errors N" and "fds N" (its open
 * descriptors, from /proc/self/fd). Exit codes: 0 done, 2 usage, 3 stale epoll event, 4 a system
 * call failed (accept's EMFILE included). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kHeadMax = 8192, kMaxFds = 1 << 16 };

static const char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW";

static struct {
  const char* mode;
  long connections;
  long response_bytes;
  long max_threads;
  long nofile;
  long watch_ms;
  int hold;
  int open_per_request;
} options = {"", 1, 1 << 20, 64, 0, 300, 0, 0};

static int head_read_fd = -1;  /* fork: the child says on it that it read the request head */
static char* response;  /* head + body, built once */
static size_t response_size;
static atomic_long write_errors;

static void die(const char* what) {
  fprintf(stderr, "early_answer_server: %s: %s\n", what, strerror(errno));
  exit(4);
}

static void usage(void) {
  fprintf(stderr, "usage: early_answer_server epoll|threads|blocking|linger0|fork|exec|fclose|dup2|"
                  "close_range [--connections N] [--response-bytes B] [--max-threads T] "
                  "[--nofile N] [--watch-ms M] [--hold] [--open-per-request]\n");
  exit(2);
}

static long number_argument(int argc, char** argv, int* i) {
  if (*i + 1 >= argc) usage();
  char* end = NULL;
  long value = strtol(argv[++*i], &end, 10);
  if (*end != '\0' || value < 0) usage();
  return value;
}

static void parse_options(int argc, char** argv) {
  if (argc < 2) usage();
  options.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    if (strcmp(argv[i], "--connections") == 0) options.connections = number_argument(argc, argv, &i);
    else if (strcmp(argv[i], "--response-bytes") == 0) options.response_bytes = number_argument(argc, argv, &i);
    else if (strcmp(argv[i], "--max-threads") == 0) options.max_threads = number_argument(argc, argv, &i);
    else if (strcmp(argv[i], "--nofile") == 0) options.nofile = number_argument(argc, argv, &i);
    else if (strcmp(argv[i], "--watch-ms") == 0) options.watch_ms = number_argument(argc, argv, &i);
    else if (strcmp(argv[i], "--hold") == 0) options.hold = 1;
    else if (strcmp(argv[i], "--open-per-request") == 0) options.open_per_request = 1;
    else usage();
  }
  if (options.max_threads < 1) usage();
}

/* The body: byte i = kAlphabet[(i + i / 4093) % 59], as bench/harness/http.hpp's payload. */
static void build_response(void) {
  char head[256];
  int head_size = snprintf(head, sizeof head,
                           "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/octet-stream\r\n"
                           "Content-Length: %ld\r\nConnection: close\r\n\r\n", options.response_bytes);
  response_size = (size_t)head_size + (size_t)options.response_bytes;
  response = malloc(response_size);
  if (response == NULL) die("malloc");
  memcpy(response, head, (size_t)head_size);
  for (long i = 0; i < options.response_bytes; ++i) {
    response[head_size + i] = kAlphabet[(i + i / 4093) % 59];
  }
}

static int listen_socket(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&address, sizeof address) != 0) die("bind");
  if (listen(fd, 1024) != 0) die("listen");
  return fd;
}

/* "port P": the server is ready (its own descriptors are all open). */
static void announce_port(int listen_fd) {
  struct sockaddr_in address;
  socklen_t size = sizeof address;
  if (getsockname(listen_fd, (struct sockaddr*)&address, &size) != 0) die("getsockname");
  printf("port %d\n", ntohs(address.sin_port));
  fflush(stdout);
}

static int accept_one(int listen_fd) {
  for (;;) {
    int fd = accept(listen_fd, NULL, NULL);
    if (fd >= 0) return fd;
    if (errno != EINTR && errno != ECONNABORTED) die("accept");
  }
}

static long fd_count(void) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == NULL) die("opendir /proc/self/fd");
  long count = 0;
  for (struct dirent* entry; (entry = readdir(dir)) != NULL;) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count - 1;  /* opendir's own */
}

/* Reads until the blank line that ends the request head (a blocking fd). Body bytes that came
 * in the same read stay read; the rest of the body stays unread in the kernel. */
static int read_head(int fd) {
  char buffer[kHeadMax + 1];
  size_t have = 0;
  while (have < kHeadMax) {
    ssize_t got = recv(fd, buffer + have, kHeadMax - have, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return -1;
    have += (size_t)got;
    buffer[have] = '\0';
    if (strstr(buffer, "\r\n\r\n") != NULL) return 0;
  }
  return -1;
}

static int write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t sent = send(fd, data, size, MSG_NOSIGNAL);
    if (sent < 0 && errno == EINTR) continue;
    if (sent <= 0) {
      fprintf(stderr, "early_answer_server: send to fd %d: %s (%zu bytes left)\n", fd, strerror(errno), size);
      return -1;
    }
    data += sent;
    size -= (size_t)sent;
  }
  return 0;
}

/* The answer through stdio, and fclose() as the close. */
static void answer_with_stdio(int fd) {
  FILE* stream = fdopen(fd, "w");
  if (stream == NULL) die("fdopen");
  if (fwrite(response, 1, response_size, stream) != response_size) ++write_errors;
  if (fclose(stream) != 0) ++write_errors;  /* the flush's error, if any */
}

/* Answers one connection on a blocking fd and drops it the way MODE says. */
static void answer_and_close(int fd, const char* mode) {
  /* --open-per-request: one more descriptor made per request, as by a server that opens a page
   * or a log: with lingering sockets holding the rest, this is the call that meets EMFILE. */
  int file = options.open_per_request ? open("/dev/null", O_RDONLY | O_CLOEXEC) : -1;
  if (options.open_per_request && file < 0) die("open /dev/null");
  if (file >= 0) close(file);
  if (read_head(fd) != 0) {
    fprintf(stderr, "early_answer_server: no request head on fd %d: %s\n", fd, strerror(errno));
    ++write_errors;
    close(fd);
    return;
  }
  if (head_read_fd >= 0 && write(head_read_fd, "h", 1) != 1) die("write to the parent");
  if (strcmp(mode, "fclose") == 0) {
    answer_with_stdio(fd);
    return;
  }
  if (write_all(fd, response, response_size) != 0) ++write_errors;
  if (strcmp(mode, "linger0") == 0) {
    struct linger abort_on_close = {.l_onoff = 1, .l_linger = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close, sizeof abort_on_close) != 0) die("SO_LINGER");
    close(fd);
  } else if (strcmp(mode, "dup2") == 0) {
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) die("open /dev/null");
    if (dup2(null_fd, fd) != fd) die("dup2");
    close(fd);  /* now /dev/null */
    close(null_fd);
  } else if (strcmp(mode, "close_range") == 0) {
    if (close_range((unsigned)fd, (unsigned)fd, 0) != 0) die("close_range");
  } else {
    close(fd);
  }
}

/* Its own descriptors, then those `ls -l /proc/self/fd` gets when fork+exec'd now. */
static void list_descriptors(void) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == NULL) die("opendir /proc/self/fd");
  for (struct dirent* entry; (entry = readdir(dir)) != NULL;) {
    char path[300], target[300];
    snprintf(path, sizeof path, "/proc/self/fd/%s", entry->d_name);
    ssize_t size = readlink(path, target, sizeof target - 1);
    if (entry->d_name[0] == '.' || size < 0) continue;
    target[size] = '\0';
    printf("self-fd %s %s\n", entry->d_name, target);
  }
  closedir(dir);
  printf("exec-begin\n");
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    execl("/bin/ls", "ls", "-l", "/proc/self/fd", (char*)NULL);
    _exit(127);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child) die("waitpid");
  printf("exec-end %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  fflush(stdout);
}

static void wait_for_stdin_eof(void) {
  char buffer[256];
  for (;;) {
    ssize_t got = read(0, buffer, sizeof buffer);
    if (got == 0 || (got < 0 && errno != EINTR)) return;
  }
}

static void serve_one_by_one(int listen_fd) {
  for (long served = 0; served < options.connections; ++served) {
    answer_and_close(accept_one(listen_fd), options.mode);
    if (served == 0 && strcmp(options.mode, "exec") == 0) list_descriptors();
  }
}

/* --- fork ----------------------------------------------------------------------------------- */

static void serve_forking(int listen_fd) {
  long failed_children = 0;
  for (long served = 0; served < options.connections; ++served) {
    int fd = accept_one(listen_fd);
    int head_read[2];
    if (pipe2(head_read, O_CLOEXEC) != 0) die("pipe2");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      close(listen_fd);
      close(head_read[0]);
      head_read_fd = head_read[1];
      answer_and_close(fd, "blocking");
      exit(write_errors == 0 ? 0 : 1);
    }
    /* The parent closes its copy while the child answers, with the body unread in the socket:
     * a close that must stay plain (the child's copy carries the connection on). */
    close(head_read[1]);
    char byte;
    if (read(head_read[0], &byte, 1) != 1) ++failed_children;
    close(head_read[0]);
    close(fd);
  }
  for (long children = 0; children < options.connections; ++children) {
    int status = 0;
    if (wait(&status) < 0) die("wait");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed_children;
  }
  printf("failed_children %ld\n", failed_children);
}

/* --- threads -------------------------------------------------------------------------------- */

static sem_t thread_slots;

static void* connection_thread(void* argument) {
  answer_and_close((int)(intptr_t)argument, "threads");
  sem_post(&thread_slots);
  return NULL;
}

static void serve_threads(int listen_fd) {
  if (sem_init(&thread_slots, 0, (unsigned)options.max_threads) != 0) die("sem_init");
  for (long served = 0; served < options.connections; ++served) {
    while (sem_wait(&thread_slots) != 0) {
    }
    int fd = accept_one(listen_fd);
    pthread_t thread;
    if (pthread_create(&thread, NULL, connection_thread, (void*)(intptr_t)fd) != 0) die("pthread_create");
    pthread_detach(thread);
  }
  for (long slot = 0; slot < options.max_threads; ++slot) {  /* every thread done */
    while (sem_wait(&thread_slots) != 0) {
    }
  }
}

/* --- epoll ---------------------------------------------------------------------------------- */

struct connection {
  int open;
  uint32_t generation;
  size_t head_bytes;   /* reading: the head so far */
  size_t sent;         /* writing: of response_size */
  int writing;
  char head[kHeadMax + 1];
};

static struct connection* connections;  /* by fd */
static uint32_t last_generation;

static uint64_t tag(int fd) { return (uint64_t)connections[fd].generation << 32 | (uint32_t)fd; }

static void epoll_add(int epoll_fd, int fd, uint32_t events) {
  connections[fd].open = 1;
  connections[fd].generation = ++last_generation;
  struct epoll_event event = {.events = events, .data.u64 = tag(fd)};
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl ADD");
}

/* Reads what there is of the head; 1 when it is complete, -1 when the peer ended it early. */
static int epoll_read_head(struct connection* c, int fd) {
  for (;;) {
    ssize_t got = recv(fd, c->head + c->head_bytes, kHeadMax - c->head_bytes, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (got <= 0) return -1;
    c->head_bytes += (size_t)got;
    c->head[c->head_bytes] = '\0';
    if (strstr(c->head, "\r\n\r\n") != NULL) return 1;
    if (c->head_bytes == kHeadMax) return -1;
  }
}

/* Sends what the kernel takes; 1 when all of it is sent, -1 on an error. */
static int epoll_write(struct connection* c, int fd) {
  while (c->sent < response_size) {
    ssize_t sent = send(fd, response + c->sent, response_size - c->sent, MSG_NOSIGNAL);
    if (sent < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    if (sent <= 0) return -1;
    c->sent += (size_t)sent;
  }
  return 1;
}

/* One event on a connection; 1 when it was closed (answered or failed). No EPOLL_CTL_DEL. */
static int epoll_connection_event(int epoll_fd, int fd) {
  struct connection* c = &connections[fd];
  if (!c->writing) {
    int head = epoll_read_head(c, fd);
    if (head == 0) return 0;
    if (head > 0) {
      c->writing = 1;
      struct epoll_event event = {.events = EPOLLOUT | EPOLLRDHUP, .data.u64 = tag(fd)};
      if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &event) != 0) die("epoll_ctl MOD");
    } else {
      ++write_errors;
    }
  }
  int done = c->writing ? epoll_write(c, fd) : -1;
  if (done == 0) return 0;
  if (done < 0) ++write_errors;
  memset(c, 0, offsetof(struct connection, head));
  close(fd);  /* still in the epoll set: close() alone removes it (when it is the last reference) */
  return 1;
}

static long long now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Checks an event against the table of open fds: one for a closed fd (or for an earlier
 * connection on a reused number) is the bug this mode exists to catch. */
static int checked_event_fd(const struct epoll_event* event) {
  int fd = (int)(uint32_t)event->data.u64;
  uint32_t generation = (uint32_t)(event->data.u64 >> 32);
  if (fd < 0 || fd >= kMaxFds || !connections[fd].open || connections[fd].generation != generation) {
    printf("stale-event fd %d generation %u events 0x%x\n", fd, generation, event->events);
    fflush(stdout);
    fprintf(stderr, "early_answer_server: epoll_wait returned an event (0x%x) for fd %d (generation "
            "%u), which is closed\n", event->events, fd, generation);
    exit(3);
  }
  return fd;
}

static void serve_epoll(int listen_fd) {
  connections = calloc(kMaxFds, sizeof *connections);
  if (connections == NULL) die("calloc");
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) die("epoll_create1");
  if (fcntl(listen_fd, F_SETFL, O_NONBLOCK) != 0) die("fcntl");
  epoll_add(epoll_fd, listen_fd, EPOLLIN);
  if (options.hold) epoll_add(epoll_fd, 0, EPOLLIN);
  announce_port(listen_fd);
  long accepted = 0, served = 0;
  long long deadline = 0;  /* after the last connection: until then, or stdin's EOF (--hold) */
  int stdin_open = options.hold;
  for (;;) {
    int timeout = -1;
    if (served == options.connections && !stdin_open) {
      long long left = deadline - now_ms();
      if (left <= 0) break;
      timeout = (int)left;
    }
    struct epoll_event events[64];
    int ready = epoll_wait(epoll_fd, events, 64, timeout);
    if (ready < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < ready; ++i) {
      int fd = checked_event_fd(&events[i]);
      if (fd == listen_fd) {
        while (accepted < options.connections) {
          int client = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK);
          if (client < 0 && (errno == EAGAIN || errno == EINTR)) break;
          if (client < 0) die("accept4");
          if (client >= kMaxFds) die("fd over the table");
          ++accepted;
          epoll_add(epoll_fd, client, EPOLLIN | EPOLLRDHUP);
        }
      } else if (fd == 0) {
        char buffer[256];
        if (read(0, buffer, sizeof buffer) <= 0) {
          stdin_open = 0;
          connections[0].open = 0;
          if (epoll_ctl(epoll_fd, EPOLL_CTL_DEL, 0, NULL) != 0) die("epoll_ctl DEL stdin");
        }
      } else if (epoll_connection_event(epoll_fd, fd) && ++served == options.connections) {
        deadline = now_ms() + options.watch_ms;
      }
    }
  }
}

int main(int argc, char** argv) {
  parse_options(argc, argv);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (options.nofile > 0) {
    struct rlimit limit = {.rlim_cur = (rlim_t)options.nofile, .rlim_max = (rlim_t)options.nofile};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) die("setrlimit");
  }
  build_response();
  int listen_fd = listen_socket();
  const char* mode = options.mode;
  if (strcmp(mode, "epoll") != 0) announce_port(listen_fd);
  if (strcmp(mode, "epoll") == 0) {
    serve_epoll(listen_fd);
  } else if (strcmp(mode, "threads") == 0) {
    serve_threads(listen_fd);
  } else if (strcmp(mode, "fork") == 0) {
    serve_forking(listen_fd);
  } else if (strcmp(mode, "blocking") == 0 || strcmp(mode, "linger0") == 0 ||
             strcmp(mode, "exec") == 0 || strcmp(mode, "fclose") == 0 ||
             strcmp(mode, "dup2") == 0 || strcmp(mode, "close_range") == 0) {
    serve_one_by_one(listen_fd);
  } else {
    usage();
  }
  if (options.hold && strcmp(mode, "epoll") != 0) wait_for_stdin_eof();
  printf("served %ld\nwrite_errors %ld\nfds %ld\n", options.connections, (long)write_errors, fd_count());
  return 0;
}
