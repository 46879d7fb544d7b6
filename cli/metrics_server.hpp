// `--metrics ADDRESS`: a small HTTP server on its own thread that answers GET /metrics (and HEAD)
// with the Prometheus text, "Content-Type: text/plain; version=0.0.4; charset=utf-8"; 404 for
// other paths, 405 for other methods, "Connection: close" after each response (a scrape is one
// request). One thread and poll(): it sleeps when nobody scrapes and adds nothing to the
// managers' threads; it never touches a Manager (render() collects a thread-safe snapshot).
//
// A slow or hostile scraper cannot hold it: several scrapers are served side by side, each one's
// request head is bounded (8 KiB, 5 s), and so is every later phase. Its sockets close as
// ringlinger closes them: the response, shutdown(SHUT_WR), a bounded read to the peer's EOF,
// close.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

class MetricsServer {
 public:
  // Binds and listens on every address now (throws std::system_error naming the address, e.g.
  // "--metrics 127.0.0.1:80: Permission denied"), then serves on a thread until destroyed.
  // render() runs on that thread for each scrape; when it throws, the scraper gets a 500 with
  // the exception's message, and the server goes on.
  MetricsServer(std::vector<SocketAddress> addresses, std::function<std::string()> render);
  // Stops the thread (an eventfd wakes its poll), joins it and closes every socket.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The addresses listened on, port 0 resolved.
  const std::vector<SocketAddress>& bound() const noexcept { return bound_; }

 private:
  struct Loop;  // the thread's state (metrics_server.cpp)

  std::vector<SocketAddress> bound_;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace ringlinger::tools
