// TCP_DEFER_ACCEPT on a comparison server's listener (blocking, naive), as
// ListenOptions::defer_accept sets it on the library's: one second, as nginx's `deferred`.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>

namespace ringlinger::tools {

inline void defer_accept(int listen_fd) {
  const int seconds = 1;
  if (setsockopt(listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof(seconds)) != 0) {
    throw std::system_error(errno, std::system_category(), "setsockopt(TCP_DEFER_ACCEPT)");
  }
}

}  // namespace ringlinger::tools
