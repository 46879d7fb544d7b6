// What a server loop does when accept4() fails, decided in one place for the comparison servers
// (blocking, naive).
#pragma once

#include <cerrno>

namespace ringlinger::tools {

enum class AcceptError {
  drained,    // EAGAIN: nothing waiting (EWOULDBLOCK is the same value on Linux)
  next,       // that connection is gone (or a firewall refused it): try the next one
  back_off,   // out of fds or memory: wait a little before accepting again
  unexpected  // a bug or a broken listener
};

inline AcceptError classify_accept_error(int error) noexcept {
  switch (error) {
    case EAGAIN: return AcceptError::drained;
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EPERM: return AcceptError::next;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: return AcceptError::back_off;
    default: return AcceptError::unexpected;
  }
}

}  // namespace ringlinger::tools
