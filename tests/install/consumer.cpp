// A program that uses ringlinger the way a user of the installed library would: only the public
// header, built with `pkg-config --cflags --libs ringlinger` (tests/install/install_test.sh).
// A Manager listens on 127.0.0.1 (port 0), answers each accepted connection with kReplyBytes and
// closes it gracefully; a plain blocking client reads every byte and the EOF. Prints
// "consumer ok: <n> bytes, outcome clean" and exits 0 only when all of that happened, and the
// library it runs against is the headers' version. Also built by CMake (cmake/) and as a meson
// subproject's consumer (subproject/).
#include <ringlinger/ringlinger.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace {

constexpr std::size_t kReplyBytes = 5 * 1024 + 17;
constexpr auto kDeadline = std::chrono::seconds(20);

std::string reply() {
  std::string bytes(kReplyBytes, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>('a' + i % 26);
  return bytes;
}

struct ClientResult {
  bool done = false;
  std::string error;        // empty: no error
  std::string received;
};

// Connects, reads until EOF (each read bounded by SO_RCVTIMEO), closes. Blocking POSIX calls.
void run_client(const ringlinger::SocketAddress& server, ClientResult& result) {
  const int fd = ::socket(server.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    result.error = std::string("socket: ") + std::strerror(errno);
    result.done = true;
    return;
  }
  timeval timeout{};
  timeout.tv_sec = 10;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, server.data(), server.size()) != 0) {
    result.error = std::string("connect: ") + std::strerror(errno);
  } else {
    char buffer[1024];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n > 0) {
        result.received.append(buffer, static_cast<std::size_t>(n));
      } else if (n == 0) {
        break;  // the server's FIN, after all of its bytes
      } else if (errno != EINTR) {
        result.error = std::string("read: ") + std::strerror(errno);
        break;
      }
    }
  }
  ::close(fd);  // our EOF, which ends the server's drain
  result.done = true;
}

int run() {
  const std::string expected = reply();
  ringlinger::Manager* manager = nullptr;
  std::optional<ringlinger::CloseReport> report;
  int accepted = 0;
  std::string server_error;

  ringlinger::Callbacks callbacks;
  callbacks.on_accept = [&](ringlinger::ConnectionId id) {
    ++accepted;
    if (auto error = manager->send(id, expected)) server_error = "send: " + error.message();
    if (auto error = manager->close(id)) server_error = "close: " + error.message();
  };
  callbacks.on_closed = [&](ringlinger::ConnectionId, const ringlinger::CloseReport& closed) {
    report = closed;
  };

  ringlinger::Manager m(ringlinger::Config{}, callbacks);
  manager = &m;
  const auto any_port = ringlinger::SocketAddress::parse("127.0.0.1:0");
  if (!any_port) {
    std::fprintf(stderr, "consumer: cannot parse 127.0.0.1:0\n");
    return 1;
  }
  const ringlinger::SocketAddress bound = m.listen(*any_port);
  if (bound.port() == 0) {
    std::fprintf(stderr, "consumer: listen returned port 0\n");
    return 1;
  }

  ClientResult client;
  std::thread client_thread(run_client, bound, std::ref(client));
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!report && std::chrono::steady_clock::now() < deadline) {
    m.run_once(std::chrono::milliseconds(50));
  }
  client_thread.join();  // bounded: every read times out after 10 s
  m.stop(std::chrono::seconds(1));
  while (m.run_once(std::chrono::milliseconds(50)) && std::chrono::steady_clock::now() < deadline) {
  }

  bool ok = true;
  auto fail = [&ok](const std::string& what) {
    std::fprintf(stderr, "consumer: %s\n", what.c_str());
    ok = false;
  };
  if (!report) fail("no connection was closed within the deadline");
  if (accepted != 1) fail("accepted " + std::to_string(accepted) + " connections, expected 1");
  if (!server_error.empty()) fail(server_error);
  if (!client.error.empty()) fail("client: " + client.error);
  if (client.received.size() != expected.size()) {
    fail("client read " + std::to_string(client.received.size()) + " bytes, expected " +
         std::to_string(expected.size()));
  } else if (client.received != expected) {
    fail("client read the right number of bytes but not the right bytes");
  }
  if (report && report->outcome != ringlinger::Outcome::clean) {
    fail("outcome " + std::string(ringlinger::to_string(report->outcome)) + ", expected clean");
  }
  if (report && report->bytes_sent != expected.size()) {
    fail("bytes_sent " + std::to_string(report->bytes_sent) + ", expected " +
         std::to_string(expected.size()));
  }
  // The headers and the library it runs against are the same version.
  if (ringlinger::version() != RINGLINGER_VERSION ||
      ringlinger::version_major() != RINGLINGER_VERSION_MAJOR ||
      ringlinger::version_minor() != RINGLINGER_VERSION_MINOR ||
      ringlinger::version_patch() != RINGLINGER_VERSION_PATCH) {
    fail("library version " + std::string(ringlinger::version()) + ", headers " +
         RINGLINGER_VERSION);
  }
  if (!ok) return 1;
  std::printf("consumer ok: %zu bytes, outcome %s, backend %s, version %s\n",
              client.received.size(), std::string(ringlinger::to_string(report->outcome)).c_str(),
              m.describe_backend().c_str(), std::string(ringlinger::version()).c_str());
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "consumer: %s\n", error.what());
    return 1;
  }
}
