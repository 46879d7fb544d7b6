// What the kernel knows of the peer's acknowledgements of our bytes (TCP_INFO), for the progress
// timers: the send and drain idle timeouts end a connection only after a whole period without
// progress, and an acknowledgement is progress, but user space does not see one arrive. So when
// such a timer expires, the engine asks the kernel (one getsockopt, kernel/tcp_info.cpp) whether the counter of
// acknowledged bytes moved since it last asked, and when the last acknowledgement came.
#pragma once

#include <chrono>
#include <cstdint>

namespace ringlinger::detail {

struct PeerAcks {
  using TimePoint = std::chrono::steady_clock::time_point;
  // False when the kernel does not say (not a TCP socket, an error): the engine then judges
  // progress by what it sees itself (input, completed sends).
  bool known = false;
  // Bytes of ours (and our FIN) the peer acknowledged since the connection began
  // (tcpi_bytes_acked): it only ever grows. Progress is this counter moving, never a queue that
  // got shorter (a queue can empty between two looks and show nothing).
  std::uint64_t bytes_acked = 0;
  // No acknowledgement that moved bytes_acked arrived after this moment: an upper bound on the
  // time of the last one, at most `now`, never earlier than the truth (see kernel/tcp_info.cpp).
  TimePoint last_ack_by{};
  // Everything we wrote to the socket (and our FIN, if written) was sent and acknowledged.
  bool all_acknowledged = false;
};

}  // namespace ringlinger::detail
