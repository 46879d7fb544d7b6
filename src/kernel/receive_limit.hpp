// Whether this kernel stops a multishot receive at a total byte limit (sqe->optlen, which
// Debian 12's headers call file_index): the drain then runs as one receive. The kernel checks the
// limit after each part, and stops once the total reached it: the part that reaches it may go
// beyond it, by less than a part (a buffer's length, measured on 6.18: a limit of 3000 on parts
// of 2000 bytes ends after 4000). Asked once per io_uring backend, never by kernel version
// (probe.cpp).
#pragma once

namespace ringlinger::detail {

// On a small ring of its own and a socket pair, torn down before it returns: two bytes sent, one
// multishot receive limited to one. True when that receive ends (no IORING_CQE_F_MORE) with its
// first part, which is what a limit changes: without one, the same receive goes on. A kernel
// before the limit (6.1 refuses a nonzero file_index in a receive with EINVAL), one that cannot
// run a multishot receive or a provided-buffer ring, and any surprise, give false.
bool multishot_receive_stops_at_limit() noexcept;

}  // namespace ringlinger::detail
