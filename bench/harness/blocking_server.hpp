// The seed's synchronous procedure, one connection at a time: accept, read the request head,
// send the response, shutdown(SHUT_WR), read and discard until recv returns 0 (or the drain idle
// timeout, drain timeout or byte cap), close. Blocking sockets with SO_RCVTIMEO/SO_SNDTIMEO for
// the timeouts. The baseline of `ringlinger bench --backend blocking`, and the kernel floor: the
// same kernel operations as the manager, with no event loop at all.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "ringlinger/address.hpp"
#include "ringlinger/outcome.hpp"

namespace ringlinger::tools {

struct BlockingServerOptions {
  SocketAddress listen;  // port 0 picks a free port
  std::uint64_t response_bytes = 16384;
  int backlog = 4096;
  std::uint32_t drain_idle_timeout_ms = 5'000;
  std::uint32_t drain_timeout_ms = 30'000;
  std::uint64_t drain_max_bytes = 16u << 20;  // 0 = unlimited
  std::uint32_t send_timeout_ms = 60'000;
  std::uint32_t head_timeout_ms = 10'000;     // reading the request head
  bool reset_on_timeout = false;              // SO_LINGER {1,0} before close on a timeout
  bool defer_accept = false;                  // TCP_DEFER_ACCEPT on the listener (one second)
};

class BlockingServer {
 public:
  // Binds and listens; throws std::system_error on failure.
  explicit BlockingServer(const BlockingServerOptions& options);
  ~BlockingServer();
  BlockingServer(const BlockingServer&) = delete;
  BlockingServer& operator=(const BlockingServer&) = delete;

  const SocketAddress& address() const noexcept;
  // Serves one connection at a time until stop().
  void run();
  // Makes run() return within ~100 ms (after the connection in hand, bounded by its timeouts).
  // Async-signal-safe and thread-safe.
  void stop() noexcept;
  // Connections closed so far, by outcome (same meanings as the manager's CloseReport).
  std::array<std::uint64_t, kOutcomeCount> outcomes() const noexcept;
  std::uint64_t connections_closed() const noexcept;
  // Close latency samples (response handed over -> fd closed), microseconds; valid after run().
  const std::vector<std::uint32_t>& close_latencies_us() const noexcept;
  // Bytes read and discarded after the response.
  std::uint64_t bytes_discarded() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringlinger::tools
