// The synchronous socket calls both backends make, in one place: the listener's setup, SHUT_WR,
// the reset-on-close option, and sendfile(2) without SIGPIPE (the zero-copy path of
// Manager::send_file: the kernel hands page-cache pages to the socket instead of copying the
// bytes from user memory, which is where a large response spends most of its CPU). Reading
// TCP_INFO is in tcp_info.cpp (<linux/tcp.h> and <netinet/tcp.h> do not mix).
// The calls made per connection count themselves in `syscalls` (the listener's setup, made once
// before any load, is not counted: the counter is compared with perf's count of a running server).
#pragma once

#include <cstdint>

#include "ringlinger/address.hpp"
#include "ringlinger/listen_options.hpp"

namespace ringlinger::detail {

// A non-blocking, close-on-exec listening socket bound to `address` (SO_REUSEADDR, and what
// `options` asks for). Throws std::system_error naming the address on failure.
int open_listener(const SocketAddress& address, const ListenOptions& options);

// shutdown(fd, SHUT_WR): 0 or -errno.
int shutdown_write(int fd, std::uint64_t& syscalls) noexcept;

// TCP_NODELAY, which sends at once what MSG_MORE held back. Fails only for a bad fd.
void push_pending(int fd, std::uint64_t& syscalls) noexcept;

// SO_LINGER {1, 0}: the coming close sends RST. Fails only for a bad fd, which the engine never
// passes; the close then ends as it would.
void set_reset_on_close(int fd, std::uint64_t& syscalls) noexcept;
// TCP_USER_TIMEOUT = milliseconds (bounds how long an orphaned socket retries delivery).
void limit_orphan_time(int fd, std::uint32_t milliseconds, std::uint64_t& syscalls) noexcept;

// sendfile has no MSG_DONTWAIT: a socket it writes to must be O_NONBLOCK. Sockets the manager
// accepts are; an adopted one may not be. Returns 0 or -errno.
int make_nonblocking(int fd, std::uint64_t& syscalls) noexcept;

// Sends up to `length` bytes of `file_fd` starting at `offset` to `socket_fd` (which must be
// non-blocking: see make_nonblocking()). Returns the bytes sent, or -errno: -EAGAIN when the
// socket buffer is full, -ENODATA when the file ends before the range. sendfile has no
// MSG_NOSIGNAL: unless the process ignores SIGPIPE, the signal a send to a reset peer raises is
// blocked for the call and consumed, so it never kills the process.
int send_file_now(int socket_fd, int file_fd, std::uint64_t offset, std::uint32_t length,
                  std::uint64_t& syscalls) noexcept;

}  // namespace ringlinger::detail
