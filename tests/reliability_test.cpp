// Reliability scenarios against the real `ringlinger serve` in its own process, on both backends:
// a slowloris peer is cut off at the head timeout and pins nothing; oversized and malformed heads
// get 431 or 400, then a graceful close with the exact bytes and a clean EOF; when the server runs
// out of file descriptors it neither spins nor drops the connections waiting in its backlog, and
// serves them once descriptors come back; SIGTERM with thousands of connections lingering ends
// every one of them by the stop deadline, each counted with its outcome.
//
// Each test prints one "reliability-row:" line (JSON) with its figures; docs/RELIABILITY.md is
// made from them (tools/reliability collects them). RELIABILITY_SCALE=5000 runs the larger
// connection counts (the `reliability-long` suite).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "child_process.hpp"
#include "http.hpp"
#include "tcp_support.hpp"

namespace ringlinger::tools {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing_support::connect_client;
using testing_support::read_to_end;
using testing_support::send_all;
using testing_support::set_receive_timeout;

// The larger connection count of each scenario: 1000 in CI, RELIABILITY_SCALE (e.g. 5000) in the
// long suite.
std::size_t scale() {
  const char* value = std::getenv("RELIABILITY_SCALE");
  return value != nullptr ? std::stoul(value) : 1000;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void record_row(const nlohmann::json& row) {
  std::printf("reliability-row: %s\n", row.dump().c_str());
  std::fflush(stdout);
}

// Open file descriptors of a process.
std::size_t fd_count(pid_t pid) {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++count;
  }
  return count;
}

// Resident memory of a process, KiB.
std::uint64_t rss_kib(pid_t pid) {
  std::ifstream statm("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE)) / 1024;
}

// User + system CPU time of a process, seconds (from /proc/PID/stat, in clock ticks).
double cpu_seconds(pid_t pid) {
  std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  unsigned long long user = 0, system = 0;
  for (int index = 3; fields >> field; ++index) {  // field 3 is the state
    if (index == 14) user = std::stoull(field);
    if (index == 15) {
      system = std::stoull(field);
      break;
    }
  }
  return static_cast<double>(user + system) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// `ringlinger serve` in a child process, with its counters written as JSON at exit.
class Serve {
 public:
  Serve(const std::string& backend, std::vector<std::string> flags, std::string prefix = {})
      : json_path_(std::filesystem::temp_directory_path() /
                   ("reliability-serve-" + std::to_string(::getpid()) + "-" +
                    std::to_string(next_id_++) + ".json")) {
    std::vector<std::string> arguments = {"serve", "--listen", "127.0.0.1:0", "--backend", backend,
                                          "--json", json_path_.string(), "--quiet"};
    arguments.insert(arguments.end(), flags.begin(), flags.end());
    if (prefix.empty()) {
      child_.emplace(ChildProcess::Options{testing_support::ringlinger_exe(), arguments, -1, true});
    } else {
      // Through a shell, e.g. "ulimit -n 64": the limit applies to serve only.
      std::vector<std::string> shell = {"-c", prefix + "; exec \"$0\" \"$@\"",
                                        testing_support::ringlinger_exe()};
      shell.insert(shell.end(), arguments.begin(), arguments.end());
      child_.emplace(ChildProcess::Options{"/bin/sh", shell, -1, true});
    }
    const auto address = child_->read_listening_address(10s);
    if (!address) throw std::runtime_error("serve did not start");
    address_ = *address;
  }
  ~Serve() { std::filesystem::remove(json_path_); }

  const SocketAddress& address() const { return address_; }
  pid_t pid() const { return child_->pid(); }

  // SIGTERM, wait for the exit, return the counters. `exit_seconds` is how long the exit took.
  nlohmann::json stop(std::chrono::milliseconds limit = 20s, double* exit_seconds = nullptr) {
    const auto start = Clock::now();
    const int code = child_->terminate(limit);
    if (exit_seconds != nullptr) *exit_seconds = seconds_since(start);
    EXPECT_EQ(code, 0) << "serve exit code";
    std::ifstream file(json_path_);
    if (!file) {
      ADD_FAILURE() << "serve wrote no JSON";
      return {};
    }
    return nlohmann::json::parse(file);
  }

 private:
  static inline int next_id_ = 0;
  std::filesystem::path json_path_;
  std::optional<ChildProcess> child_;
  SocketAddress address_;
};

std::uint64_t outcome(const nlohmann::json& counters, const char* name) {
  return counters["stats"]["outcomes"][name].get<std::uint64_t>();
}

class Reliability : public ::testing::TestWithParam<std::string> {};

// --- 15. Slowloris: request heads dribbled a byte at a time ---------------------------------

void slowloris(const std::string& backend, std::size_t connections) {
  constexpr auto kHeadTimeout = 500ms;
  Serve serve(backend, {"--head-timeout", "500ms"});
  const auto rss_before = rss_kib(serve.pid());
  const auto fds_before = fd_count(serve.pid());
  std::vector<int> fds;
  std::vector<Clock::time_point> connected_at;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < connections; ++i) {
    const int fd = connect_client(serve.address());
    ASSERT_GE(fd, 0);
    fds.push_back(fd);
    connected_at.push_back(Clock::now());  // the head timeout counts from here (the accept)
  }
  // A head that never ends: a request line, then one header line as long as it takes.
  const std::string dribble = "GET / HTTP/1.1\r\nX-Slow: " + std::string(4096, 'a');
  std::vector<double> ended_at(connections, -1);
  std::vector<std::size_t> sent(connections, 0);
  std::size_t response_bytes = 0;
  std::size_t open = connections;
  // Meanwhile a cooperative client must be served as usual.
  std::thread cooperative([&] {
    std::this_thread::sleep_for(100ms);
    const int fd = connect_client(serve.address());
    set_receive_timeout(fd, 10s);
    send_all(fd, make_request(0));
    const auto read = read_to_end(fd);
    ::close(fd);
    EXPECT_EQ(read.bytes, make_response(16384));
    EXPECT_TRUE(read.clean_eof);
  });
  while (open > 0 && seconds_since(start) < 10) {
    for (std::size_t i = 0; i < connections; ++i) {
      if (ended_at[i] >= 0) continue;
      char buffer[256];
      const ssize_t got = ::recv(fds[i], buffer, sizeof(buffer), MSG_DONTWAIT);
      bool ended = got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      if (got > 0) response_bytes += static_cast<std::size_t>(got);
      if (!ended) {
        const ssize_t out = ::send(fds[i], dribble.data() + sent[i] % dribble.size(), 1,
                                   MSG_NOSIGNAL | MSG_DONTWAIT);
        if (out == 1) ++sent[i];
        ended = out < 0 && errno != EAGAIN && errno != EWOULDBLOCK;
      }
      if (ended) {
        ended_at[i] = seconds_since(connected_at[i]);
        --open;
      }
    }
    std::this_thread::sleep_for(20ms);
  }
  cooperative.join();
  for (int fd : fds) ::close(fd);
  ASSERT_EQ(open, 0u) << "slowloris connections still open after 10 s";
  const auto [first, last] = std::minmax_element(ended_at.begin(), ended_at.end());
  const double timeout_s = std::chrono::duration<double>(kHeadTimeout).count();
  EXPECT_GE(*first, timeout_s - 0.05) << "cut off before the head timeout";
  EXPECT_LE(*last, timeout_s + 1.5) << "cut off long after the head timeout";
  EXPECT_EQ(response_bytes, 0u) << "a slowloris peer was answered";
  std::this_thread::sleep_for(200ms);
  const auto fds_after = fd_count(serve.pid());
  const auto rss_after = rss_kib(serve.pid());
  EXPECT_EQ(fds_after, fds_before) << "serve kept descriptors of the slowloris connections";
  const auto counters = serve.stop();
  EXPECT_EQ(counters["head_timeouts"].get<std::uint64_t>(), connections);
  EXPECT_EQ(outcome(counters, "aborted"), connections);
  EXPECT_EQ(outcome(counters, "clean"), 1u);
  record_row({{"scenario", "15 slowloris"}, {"backend", backend}, {"connections", connections},
              {"expected", "reset at the head timeout (500 ms), unanswered"},
              {"ok", connections - static_cast<std::size_t>(std::count(ended_at.begin(), ended_at.end(), -1))},
              {"bytes_lost", 0}, {"cut_off_s_first", *first}, {"cut_off_s_last", *last},
              {"outcomes", counters["stats"]["outcomes"]}, {"fds_before", fds_before},
              {"fds_after", fds_after}, {"rss_kib_before", rss_before}, {"rss_kib_after", rss_after}});
}

TEST_P(Reliability, SlowlorisHeadsAreCutOffAtTheHeadTimeoutAndPinNothing) {
  slowloris(GetParam(), 1);
  slowloris(GetParam(), scale());
}

// --- 16. Oversized and malformed request heads -----------------------------------------------

void bad_heads(const std::string& backend, std::size_t connections) {
  Serve serve(backend, {});
  const std::string malformed = "NOT A REQUEST\r\n\r\n";
  const std::string oversized = "GET / HTTP/1.1\r\nX-Big: " + std::string(kMaxHeadBytes + 4096, 'a');
  const std::string answer_400 = make_error_response(400, "Bad Request");
  const std::string answer_431 = make_error_response(431, "Request Header Fields Too Large");
  std::size_t ok = 0, lost = 0;
  constexpr std::size_t kAtOnce = 100;
  for (std::size_t base = 0; base < connections; base += kAtOnce) {
    std::vector<std::pair<int, bool>> batch;  // fd, oversized
    for (std::size_t i = base; i < std::min(connections, base + kAtOnce); ++i) {
      const int fd = connect_client(serve.address());
      ASSERT_GE(fd, 0);
      set_receive_timeout(fd, 10s);
      const bool big = i % 2 == 1;
      // The server answers 431 after 64 KiB and drains the rest: sending it all must work.
      ASSERT_TRUE(send_all(fd, big ? oversized : malformed));
      batch.emplace_back(fd, big);
    }
    for (const auto& [fd, big] : batch) {
      const auto read = read_to_end(fd);
      ::close(fd);
      const std::string& expected = big ? answer_431 : answer_400;
      if (read.bytes == expected && read.clean_eof) {
        ++ok;
      } else {
        lost += expected.size() - std::min(expected.size(), read.bytes.size());
        ADD_FAILURE() << (big ? "431" : "400") << " case: got " << read.bytes.size()
                      << " bytes, clean EOF " << read.clean_eof << ", error " << read.error;
      }
    }
  }
  const auto counters = serve.stop();
  EXPECT_EQ(ok, connections);
  EXPECT_EQ(outcome(counters, "clean"), connections);
  record_row({{"scenario", "16 oversized/malformed heads"}, {"backend", backend},
              {"connections", connections}, {"expected", "431 or 400, then graceful close"},
              {"ok", ok}, {"bytes_lost", lost}, {"outcomes", counters["stats"]["outcomes"]}});
}

TEST_P(Reliability, OversizedAndMalformedHeadsGet431Or400ThenAGracefulClose) {
  bad_heads(GetParam(), 2);
  bad_heads(GetParam(), scale());
}

// --- 13. File descriptor exhaustion -----------------------------------------------------------

void fd_exhaustion(const std::string& backend) {
  constexpr int kLimit = 96;
  constexpr std::size_t kConnections = 200;  // more than the limit: the rest wait in the backlog
  Serve serve(backend, {"--max-connections", "1000"}, "ulimit -n " + std::to_string(kLimit));
  std::vector<int> fds;
  for (std::size_t i = 0; i < kConnections; ++i) {
    const int fd = connect_client(serve.address());  // the kernel completes the handshake
    ASSERT_GE(fd, 0);
    set_receive_timeout(fd, 20s);
    fds.push_back(fd);
  }
  // Let serve accept what it can and hit EMFILE; then measure its CPU while it is out of fds.
  std::this_thread::sleep_for(500ms);
  const auto held = fd_count(serve.pid());
  EXPECT_GE(held, static_cast<std::size_t>(kLimit - 2)) << "serve did not run out of descriptors";
  const double cpu_before = cpu_seconds(serve.pid());
  std::this_thread::sleep_for(1s);
  const double cpu_exhausted = cpu_seconds(serve.pid()) - cpu_before;
  EXPECT_LT(cpu_exhausted, 0.1) << "serve spins while out of descriptors";
  // Now every client sends its request: the accepted ones are answered and closed, which frees
  // descriptors for the ones still in the backlog.
  const auto start = Clock::now();
  for (int fd : fds) ASSERT_TRUE(send_all(fd, make_request(0)));
  std::size_t ok = 0;
  double last_answer = 0;
  const std::string expected = make_response(16384);
  for (int fd : fds) {
    const auto read = read_to_end(fd);
    ::close(fd);
    if (read.bytes == expected && read.clean_eof) ++ok;
    last_answer = std::max(last_answer, seconds_since(start));
  }
  EXPECT_EQ(ok, kConnections) << "connections lost while out of descriptors";
  const auto counters = serve.stop();
  EXPECT_EQ(outcome(counters, "clean"), kConnections);
  EXPECT_GT(counters["stats"]["accept_errors"].get<std::uint64_t>(), 0u);
  record_row({{"scenario", "13 fd exhaustion"}, {"backend", backend},
              {"connections", kConnections}, {"rlimit_nofile", kLimit},
              {"expected", "no busy loop; backlog served once fds free up"}, {"ok", ok},
              {"bytes_lost", (kConnections - ok) * expected.size()},
              {"cpu_s_while_exhausted_1s", cpu_exhausted}, {"fds_held", held},
              {"recover_s", last_answer}, {"accept_errors", counters["stats"]["accept_errors"]},
              {"outcomes", counters["stats"]["outcomes"]}});
}

TEST_P(Reliability, OutOfDescriptorsServerDoesNotSpinAndServesTheBacklogLater) {
  fd_exhaustion(GetParam());
}

// --- 18. SIGTERM with thousands of connections lingering --------------------------------------

void sigterm_lingering(const std::string& backend, std::size_t connections) {
  Serve serve(backend, {"--stop-grace", "1s", "--drain-idle-timeout", "30s",
                        "--max-connections", std::to_string(connections + 100)});
  const auto fds_before = fd_count(serve.pid());
  // Clients that read 30 s late: every connection lingers (answered, shut down, draining).
  ChildProcess client({testing_support::ringlinger_exe(),
                       {"client", "--connect", serve.address().to_string(), "--connections",
                        std::to_string(connections), "--concurrency", std::to_string(connections),
                        "--body-bytes", "16KiB", "--read-delay", "30s", "--timeout", "60s"},
                       -1, true});
  const auto start = Clock::now();
  while (fd_count(serve.pid()) < fds_before + connections && seconds_since(start) < 20) {
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_GE(fd_count(serve.pid()), fds_before + connections) << "the connections never all lingered";
  double exit_seconds = 0;
  const auto counters = serve.stop(20s, &exit_seconds);
  (void)client.wait(1ms);  // the client's verdict is not the point; it is killed now
  EXPECT_LT(exit_seconds, 1.0 + 2.0) << "serve took longer than its stop grace";
  const auto closed = counters["stats"]["connections_closed"].get<std::uint64_t>();
  EXPECT_EQ(closed, connections);
  EXPECT_EQ(outcome(counters, "stop_deadline") + outcome(counters, "clean"), connections);
  record_row({{"scenario", "18 SIGTERM while lingering"}, {"backend", backend},
              {"connections", connections}, {"expected", "all closed by the 1 s stop deadline"},
              {"ok", closed}, {"exit_s", exit_seconds}, {"outcomes", counters["stats"]["outcomes"]},
              {"fds_before", fds_before}});
}

TEST_P(Reliability, SigtermWithThousandsLingeringClosesEveryOneByTheDeadline) {
  sigterm_lingering(GetParam(), scale());
}

INSTANTIATE_TEST_SUITE_P(Backends, Reliability, ::testing::Values("uring", "epoll"),
                         [](const auto& param_info) { return param_info.param; });

}  // namespace
}  // namespace ringlinger::tools
