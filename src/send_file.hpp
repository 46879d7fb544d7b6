// sendfile(2) from a file to a non-blocking socket, without SIGPIPE: the zero-copy send path of
// Manager::send_file() (the kernel hands page-cache pages to the socket instead of copying the
// bytes from user memory, which is where a large response spends most of its CPU).
#pragma once

#include <cstdint>

namespace ringlinger::detail {

// Sends up to `length` bytes of `file_fd` starting at `offset` to `socket_fd` (which must be
// non-blocking: see make_nonblocking()). Returns the bytes sent, or -errno: -EAGAIN when the
// socket buffer is full, -ENODATA when the file ends before the range.
// sendfile has no MSG_NOSIGNAL: unless the process ignores SIGPIPE, the signal a send to a reset
// peer raises is blocked for the call and consumed, so it never kills the process.
// sendfile has no MSG_DONTWAIT: a socket it writes to must be O_NONBLOCK. Sockets the manager
// accepts are; an adopted one may not be. Returns 0 or -errno.
int make_nonblocking(int fd) noexcept;

// `syscalls` grows by the system calls made (fcntl, sigaction, sendfile, and the SIGPIPE guard).
int send_file_now(int socket_fd, int file_fd, std::uint64_t offset, std::uint32_t length,
                  std::uint64_t& syscalls) noexcept;

}  // namespace ringlinger::detail
