// nginx (Debian's nginx-light) as a comparison server for `ringlinger bench --backend nginx`: one
// worker pinned to a CPU, lingering_close on, keepalive off, serving the same response body from
// a file (sendfile) to the client's POST, whose body it does not read (nginx discards it, then
// lingers). The settings of the graceful close map onto nginx's: drain idle timeout ->
// lingering_timeout, drain timeout -> lingering_time, send timeout -> send_timeout.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "child_process.hpp"
#include "ringlinger/address.hpp"

namespace ringlinger::tools {

struct NginxOptions {
  std::uint64_t response_bytes = 16384;
  std::uint64_t drain_idle_timeout_ms = 5000;
  std::uint64_t drain_timeout_ms = 30000;
  std::uint64_t send_timeout_ms = 60000;
  std::uint32_t worker_connections = 4096;
  int cpu = 0;
  bool deferred = false;  // `listen ... deferred` (TCP_DEFER_ACCEPT)
};

// What /proc says about the worker at one moment.
struct ProcessSample {
  double user_us = 0;
  double system_us = 0;
  std::uint64_t voluntary_context_switches = 0;
  std::uint64_t involuntary_context_switches = 0;
  std::uint64_t rss_kib = 0;
  std::uint64_t rss_peak_kib = 0;
};

class NginxServer {
 public:
  // The nginx binary, or an empty string when it is not installed.
  static std::string find_binary();

  // Writes the configuration and the response file into a fresh temporary directory, starts
  // nginx (master + one worker) and waits until it accepts connections. Throws
  // std::runtime_error with nginx's own error log when it does not start.
  explicit NginxServer(const NginxOptions& options);
  // Stops nginx (SIGQUIT, then SIGKILL) and removes the directory.
  ~NginxServer();
  NginxServer(const NginxServer&) = delete;
  NginxServer& operator=(const NginxServer&) = delete;

  const SocketAddress& address() const noexcept { return address_; }
  pid_t worker_pid() const noexcept { return worker_pid_; }
  ProcessSample sample() const;

 private:
  void stop() noexcept;

  std::string directory_;
  SocketAddress address_;
  std::unique_ptr<ChildProcess> master_;
  pid_t worker_pid_ = -1;
};

}  // namespace ringlinger::tools
