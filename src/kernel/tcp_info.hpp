// getsockopt(TCP_INFO) read as the peer's progress (core/peer_acks.hpp says what it means).
#pragma once

#include <chrono>
#include <cstdint>

#include "core/peer_acks.hpp"

namespace ringlinger::detail {

// getsockopt(TCP_INFO) on `fd`, read as PeerAcks; counts one system call in `syscalls`.
PeerAcks read_peer_acks(int fd, std::chrono::steady_clock::time_point now,
                        std::uint64_t& syscalls) noexcept;

}  // namespace ringlinger::detail
