// TCP_INFO's state and in-flight counts, FIONREAD's unread bytes.
#include "classify.hpp"

// <linux/tcp.h>: glibc's <netinet/tcp.h> lacks tcpi_notsent_bytes (and the two do not mix).
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>

namespace ringlinger::preload {
namespace {

// The kernel's TCP states (include/net/tcp_states.h), which no user-space header has beside
// <linux/tcp.h>'s struct tcp_info.
enum TcpState : std::uint8_t {
  kEstablished = 1, kFinWait1 = 4, kFinWait2 = 5, kCloseWait = 8, kLastAck = 9, kClosing = 11,
};

// Connected: our data or the peer's may still be moving. SYN_SENT/SYN_RECV have nothing to
// lose, LISTEN is a listener, TIME_WAIT/CLOSE are over.
bool connected(std::uint8_t state) noexcept {
  switch (state) {
    case kEstablished:
    case kCloseWait:
    case kFinWait1:  // the program's shutdown(SHUT_WR) came first (Python's socketserver)
    case kFinWait2:
    case kClosing:
    case kLastAck:
      return true;
    default:
      return false;
  }
}

bool pending(int fd) noexcept {
  // First the socket's queued memory (SO_MEMINFO: atomic counters, no socket lock), which fails
  // at once for anything but a socket: a socket with empty receive and write queues has nothing
  // to lose, and most closes end here after one system call. (TCP_INFO alone costs 450 ns on a
  // quiet socket here, FIONREAD another 275: docs/WRAP.md.)
  std::uint32_t memory[SK_MEMINFO_VARS] = {};
  socklen_t memory_length = sizeof memory;
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, memory, &memory_length) != 0) return false;
  if (memory[SK_MEMINFO_RMEM_ALLOC] == 0 && memory[SK_MEMINFO_WMEM_QUEUED] == 0) return false;
  // Then whether it is a connected TCP socket, and what exactly is pending.
  tcp_info info{};
  socklen_t length = sizeof info;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return false;
  if (!connected(info.tcpi_state)) return false;
  // Sent and not acknowledged (segments, FIN included), or not sent yet (bytes): a reset now
  // could reach the peer before it read them.
  if (info.tcpi_unacked > 0 || info.tcpi_notsent_bytes > 0) return true;
  int unread = 0;
  return ioctl(fd, FIONREAD, &unread) == 0 && unread > 0;
}

}  // namespace

bool has_pending_bytes(int fd) noexcept {
  const int saved = errno;
  const bool result = pending(fd);
  errno = saved;
  return result;
}

bool wants_reset(int fd) noexcept {
  const int saved = errno;
  linger value{};
  socklen_t length = sizeof value;
  const bool reset = getsockopt(fd, SOL_SOCKET, SO_LINGER, &value, &length) == 0 &&
                     value.l_onoff != 0 && value.l_linger == 0;
  errno = saved;
  return reset;
}

}  // namespace ringlinger::preload
