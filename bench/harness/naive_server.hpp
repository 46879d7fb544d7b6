// The server most code is: read the request head, send the response, close(). No shutdown, no
// drain: with unread input (a request body, a pipelined request) the kernel answers close() with
// RST, and the client loses whatever of the response it had not read yet. HEAD is answered with
// the head alone; every response carries a Date (http.hpp's ResponseCache). Used as the control in
// tests and in `ringlinger demo` to show the loss; one epoll loop, non-blocking sockets.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

struct NaiveServerOptions {
  SocketAddress listen;             // port 0 picks a free port
  std::uint64_t response_bytes = 16384;
  int backlog = 4096;
  bool defer_accept = false;  // TCP_DEFER_ACCEPT on the listener (one second)
};

class NaiveServer {
 public:
  // Binds and listens; throws std::system_error on failure.
  explicit NaiveServer(const NaiveServerOptions& options);
  ~NaiveServer();
  NaiveServer(const NaiveServer&) = delete;
  NaiveServer& operator=(const NaiveServer&) = delete;

  // The bound address (with the real port).
  const SocketAddress& address() const noexcept;
  // Serves until stop(); then closes every fd it holds.
  void run();
  // Makes run() return within ~100 ms. Async-signal-safe and thread-safe.
  void stop() noexcept;
  // Connections whose response was fully handed to the kernel and then closed.
  std::uint64_t connections_closed() const noexcept;

 private:
  struct Internals;  // listener, epoll, per-fd connection table: see naive_server.cpp

  std::atomic<bool> stop_requested_{false};
  std::atomic<std::uint64_t> connections_closed_{0};
  std::unique_ptr<Internals> internals_;  // after the atomics: it refers to connections_closed_
};

}  // namespace ringlinger::tools
