// An IPv4 or IPv6 socket address with text parsing ("127.0.0.1:8080", "[::1]:0") and formatting.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ringlinger {

// A socket address as the kernel wants it, plus conversions to and from text.
class SocketAddress {
 public:
  // An empty address (family AF_UNSPEC).
  SocketAddress() noexcept;
  // Copies a kernel address of length `length`.
  SocketAddress(const sockaddr* address, socklen_t length) noexcept;

  // Parses "IPv4:port" or "[IPv6]:port"; nullopt when the text is not such an address.
  static std::optional<SocketAddress> parse(std::string_view text);
  // The local address of a bound socket (getsockname), e.g. to read back port 0.
  static std::optional<SocketAddress> local_of(int fd);

  // "127.0.0.1:8080" or "[::1]:8080".
  std::string to_string() const;
  // The port in host byte order.
  std::uint16_t port() const noexcept;
  // AF_INET, AF_INET6 or AF_UNSPEC.
  int family() const noexcept;
  // For bind/connect.
  const sockaddr* data() const noexcept;
  socklen_t size() const noexcept { return length_; }

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

}  // namespace ringlinger
