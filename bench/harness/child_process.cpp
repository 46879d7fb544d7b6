#include "child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>

namespace ringlinger::tools {

void pin_to_cpu(int cpu) {
  if (cpu < 0 || std::thread::hardware_concurrency() < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)sched_setaffinity(0, sizeof(set), &set);
}

ChildProcess::ChildProcess(const Options& options) {
  int pipe_fds[2] = {-1, -1};
  if (options.capture_stdout && pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::system_category(), "pipe");
  }
  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::vector<std::string> storage = options.arguments;
  storage.insert(storage.begin(), options.executable);
  std::vector<char*> argv;
  for (std::string& argument : storage) argv.push_back(argument.data());
  argv.push_back(nullptr);
  pid_ = fork();
  if (pid_ < 0) {
    const int error = errno;
    if (pipe_fds[0] >= 0) {
      ::close(pipe_fds[0]);
      ::close(pipe_fds[1]);
    }
    throw std::system_error(error, std::system_category(), "fork");
  }
  if (pid_ == 0) {
    if (pipe_fds[1] >= 0) dup2(pipe_fds[1], STDOUT_FILENO);
    pin_to_cpu(options.cpu);
    execv(options.executable.c_str(), argv.data());
    _exit(127);
  }
  running_ = true;
  if (pipe_fds[1] >= 0) ::close(pipe_fds[1]);
  stdout_fd_ = pipe_fds[0];
}

ChildProcess::~ChildProcess() {
  if (running_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto newline = buffered_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (stdout_fd_ < 0 || left.count() <= 0) return std::nullopt;
    pollfd poll_fd{stdout_fd_, POLLIN, 0};
    if (poll(&poll_fd, 1, static_cast<int>(left.count())) <= 0) continue;
    char buffer[512];
    const ssize_t count = ::read(stdout_fd_, buffer, sizeof(buffer));
    if (count <= 0) return std::nullopt;
    buffered_.append(buffer, static_cast<std::size_t>(count));
  }
}

std::optional<SocketAddress> ChildProcess::read_listening_address(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = read_line(std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now()));
    if (!line) return std::nullopt;
    constexpr std::string_view kMarker = "listening on ";
    const auto at = line->find(kMarker);
    if (at == std::string::npos) continue;
    const auto start = at + kMarker.size();
    return SocketAddress::parse(line->substr(start, line->find(' ', start) - start));
  }
  return std::nullopt;
}

bool ChildProcess::exited() {
  if (!running_) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
  running_ = false;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return true;
}

int ChildProcess::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!exited()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      running_ = false;
      exit_code_ = 128 + SIGKILL;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return exit_code_;
}

int ChildProcess::terminate(std::chrono::milliseconds timeout) {
  if (running_) ::kill(pid_, SIGTERM);
  return wait(timeout);
}

}  // namespace ringlinger::tools
