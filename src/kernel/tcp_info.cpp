// Reading TCP_INFO as PeerAcks. In a file of its own: <linux/tcp.h> has the struct tcp_info with
// the fields used here (glibc's <netinet/tcp.h> lacks tcpi_bytes_acked and tcpi_notsent_bytes),
// and the two headers cannot be included together.
#include "kernel/tcp_info.hpp"

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>

namespace ringlinger::detail {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

// TCP_INFO gives ages in milliseconds counted in jiffies (1 to 10 ms each, by the kernel's HZ):
// an event read as d ms old may have happened up to one jiffy later, so a moment derived from
// an age is moved this much later, to stay an upper bound.
constexpr milliseconds kJiffyAtMost{10};

}  // namespace

PeerAcks read_peer_acks(int fd, std::chrono::steady_clock::time_point now,
                        std::uint64_t& syscalls) noexcept {
  ++syscalls;
  tcp_info info{};
  socklen_t length = sizeof(info);
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 ||
      length < offsetof(tcp_info, tcpi_notsent_bytes) + sizeof(info.tcpi_notsent_bytes)) {
    return {};  // not TCP, or a kernel older than 4.6
  }
  PeerAcks acks;
  acks.known = true;
  acks.bytes_acked = info.tcpi_bytes_acked;
  acks.all_acknowledged = info.tcpi_unacked == 0 && info.tcpi_notsent_bytes == 0;
  auto last_ack = now - milliseconds(info.tcpi_last_ack_recv) + kJiffyAtMost;
  if (info.tcpi_unacked == 0 && info.tcpi_notsent_bytes > 0) {
    // Nothing of ours in flight, the rest waits: the peer's window is closed. Our kernel probes
    // it (one retransmission timeout after it closed, then backing off) and the peer answers
    // every probe with an acknowledgement that moves nothing, so the last acknowledgement's age
    // says nothing of progress (measured: it stays under a second while the counter has not
    // moved for many). The last one that did move it acknowledged our last data segment, and
    // came within one retransmission timeout (RTO) of it: otherwise that segment would have
    // been retransmitted, and the retransmission would be our last data segment.
    const auto by_data = now - milliseconds(info.tcpi_last_data_sent) +
                         microseconds(info.tcpi_rto) + kJiffyAtMost;
    last_ack = std::min(last_ack, by_data);
  }
  acks.last_ack_by = std::min(last_ack, now);
  return acks;
}

}  // namespace ringlinger::detail
