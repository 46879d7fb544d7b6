// Which descriptors a close hands to the manager thread: a connected TCP socket (IPv4 or IPv6)
// with unread input, or output the peer has not acknowledged yet (unsent, or sent and in flight).
// Everything else is closed at once: a plain close cannot lose anything there.
#pragma once

namespace ringlinger::preload {

// One getsockopt(SO_MEMINFO) (which fails at once for anything but a socket, and finds a quiet
// socket's queues empty); only for a socket with queued bytes, getsockopt(TCP_INFO) and
// ioctl(FIONREAD). Leaves errno as it found it.
bool has_pending_bytes(int fd) noexcept;

// SO_LINGER {1, 0}: the program asked for a reset, and gets one (a plain close).
bool wants_reset(int fd) noexcept;

}  // namespace ringlinger::preload
