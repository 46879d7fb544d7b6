#include "kernel/socket_calls.hpp"

#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/sendfile.h>
#include <time.h>

#include <cerrno>
#include <system_error>

namespace ringlinger::detail {
namespace {

bool sigpipe_ignored() noexcept {
  struct sigaction current {};
  return sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

}  // namespace

int send_file_once(int socket_fd, int file_fd, std::uint64_t offset, std::uint32_t length,
                   std::uint64_t& syscalls) noexcept;

int open_listener(const SocketAddress& address, const ListenOptions& options) {
  const int fd = ::socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::system_category(), "socket");
  const int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const auto refuse = [fd](const char* what) {
    const int error = errno;
    ::close(fd);
    throw std::system_error(error, std::system_category(), what);
  };
  if (options.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    refuse("SO_REUSEPORT");
  }
  // One second, as nginx's `deferred`: the kernel rounds it to one SYN-ACK retransmission.
  if (options.defer_accept &&
      setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &one, sizeof(one)) != 0) {
    refuse("TCP_DEFER_ACCEPT");
  }
  if (::bind(fd, address.data(), address.size()) != 0 || ::listen(fd, options.backlog) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::system_error(error, std::system_category(), "listen on " + address.to_string());
  }
  return fd;
}

int shutdown_write(int fd, std::uint64_t& syscalls) noexcept {
  ++syscalls;
  return ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
}

void limit_orphan_time(int fd, std::uint32_t milliseconds, std::uint64_t& syscalls) noexcept {
  ++syscalls;
  const unsigned int value = milliseconds;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &value, sizeof(value));
}

void push_pending(int fd, std::uint64_t& syscalls) noexcept {
  ++syscalls;
  const int on = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
}

void set_reset_on_close(int fd, std::uint64_t& syscalls) noexcept {
  ++syscalls;
  const linger reset{1, 0};
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
}

int make_nonblocking(int fd, std::uint64_t& syscalls) noexcept {
  ++syscalls;
  const int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return -errno;
  if ((flags & O_NONBLOCK) != 0) return 0;
  ++syscalls;
  return fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 ? 0 : -errno;
}

int send_file_now(int socket_fd, int file_fd, std::uint64_t offset, std::uint32_t length,
                  std::uint64_t& syscalls) noexcept {
  const int result = send_file_once(socket_fd, file_fd, offset, length, syscalls);
  // 0 bytes for a non-empty range: the file ends before it. Not progress: an error.
  return result == 0 && length > 0 ? -ENODATA : result;
}

int send_file_once(int socket_fd, int file_fd, std::uint64_t offset, std::uint32_t length,
                   std::uint64_t& syscalls) noexcept {
  auto position = static_cast<off_t>(offset);
  // Asked each time (one cheap syscall) rather than cached: the application may change it.
  ++syscalls;
  if (sigpipe_ignored()) {
    ++syscalls;
    const ssize_t sent = ::sendfile(socket_fd, file_fd, &position, length);
    return sent < 0 ? -errno : static_cast<int>(sent);
  }
  // The classic recipe: block SIGPIPE in this thread, send, and if the send raised it (EPIPE)
  // and it was not already pending, take it back with a zero-timeout sigtimedwait.
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  syscalls += 4;  // sigpending, two pthread_sigmask, sendfile
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask);
  const ssize_t sent = ::sendfile(socket_fd, file_fd, &position, length);
  const int error = sent < 0 ? errno : 0;
  if (error == EPIPE && !was_pending) {
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
    ++syscalls;
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return sent < 0 ? -error : static_cast<int>(sent);
}

}  // namespace ringlinger::detail
