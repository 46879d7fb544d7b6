// A child process running another program (usually `ringlinger serve` or `ringlinger client`),
// optionally pinned to one CPU, with its stdout readable line by line. Used by `demo` and by the
// tests, so that servers and load generators each have their own process and fd limit.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

class ChildProcess {
 public:
  struct Options {
    std::string executable;              // e.g. "/proc/self/exe"
    std::vector<std::string> arguments;  // without argv[0]
    int cpu = -1;                        // pin to this CPU (when the machine has more than one)
    bool capture_stdout = true;          // read_line() reads it; otherwise it is inherited
  };

  // Starts the program; throws std::system_error when fork or pipe fails.
  explicit ChildProcess(const Options& options);
  // Kills the child (SIGKILL) if it is still running, and reaps it.
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // The next line of the child's stdout (without the newline); nullopt on EOF or timeout.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);
  // Reads lines until one contains "listening on ADDRESS" and returns that address.
  std::optional<SocketAddress> read_listening_address(std::chrono::milliseconds timeout);
  // Whether the child has exited (without waiting); its exit code is then exit_code().
  bool exited();
  // Waits up to `timeout` for the child to exit; SIGKILL after that. Returns the exit code
  // (128 + signal number when killed by a signal).
  int wait(std::chrono::milliseconds timeout);
  // SIGTERM, then wait() up to `timeout`.
  int terminate(std::chrono::milliseconds timeout);
  int exit_code() const noexcept { return exit_code_; }
  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool running_ = false;
  int exit_code_ = -1;
  std::string buffered_;
};

// Pins the calling process to one CPU (no-op on a one-CPU machine).
void pin_to_cpu(int cpu);

}  // namespace ringlinger::tools
