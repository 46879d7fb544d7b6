// Which wake reaches a ring's registered eventfd, round after round? (docs/EMBEDDING.md, "Why a
// pipe and not an eventfd".) A ring with DEFER_TASKRUN has a read in flight on a wake fd and an
// eventfd registered with IORING_REGISTER_EVENTFD (what Manager::event_fd() is). Another thread
// writes the wake fd; we poll() the registered eventfd for up to 1 s, then reap the read. Three
// rounds with an eventfd as the wake fd, three with a pipe. On 6.18 the eventfd wake signals the
// registered eventfd only in the first round; the pipe in every round.
//   build/bench/micro/eventfd_wake
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <thread>

namespace {

int run(bool use_pipe) {
  io_uring ring{};
  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (io_uring_queue_init_params(8, &ring, &params) != 0) return -1;
  const int registered = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  io_uring_register_eventfd(&ring, registered);
  int read_fd = -1;
  int write_fd = -1;
  if (use_pipe) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    read_fd = fds[0];
    write_fd = fds[1];
  } else {
    read_fd = write_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  int signalled = 0;
  for (int round = 0; round < 3; ++round) {
    std::uint64_t value = 0;
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, read_fd, &value, sizeof(value), 0);
    io_uring_submit(&ring);
    std::uint64_t drained = 0;
    (void)!read(registered, &drained, sizeof(drained));
    std::thread writer([&] {
      const std::uint64_t one = 1;
      usleep(20'000);
      (void)!write(write_fd, &one, sizeof(one));
    });
    pollfd watch{registered, POLLIN, 0};
    const int readable = poll(&watch, 1, 1000);
    writer.join();
    signalled += readable;
    std::printf("  round %d: registered eventfd readable: %s\n", round + 1, readable == 1 ? "yes" : "no");
    io_uring_cqe* cqe = nullptr;
    __kernel_timespec timeout{1, 0};
    if (io_uring_wait_cqe_timeout(&ring, &cqe, &timeout) == 0) io_uring_cqe_seen(&ring, cqe);
  }
  io_uring_queue_exit(&ring);
  close(registered);
  close(read_fd);
  if (write_fd != read_fd) close(write_fd);
  return signalled;
}

}  // namespace

int main() {
  std::printf("wake fd = eventfd:\n");
  const int with_eventfd = run(false);
  std::printf("wake fd = pipe:\n");
  const int with_pipe = run(true);
  std::printf("signalled rounds: eventfd %d of 3, pipe %d of 3\n", with_eventfd, with_pipe);
  return with_pipe == 3 ? 0 : 1;
}
