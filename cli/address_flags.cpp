#include "address_flags.hpp"

#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "commands.hpp"

namespace ringlinger::tools {

namespace {

constexpr std::string_view kForms =
    "an address like 127.0.0.1:8080, [::1]:8080, localhost:8080, :8080 or *:8080";

struct HostPort {
  std::string host;  // "" for ":8080" and "*:8080"
  std::string port;
};

// Splits "host:port" at the last colon; "[v6]:port" is left to SocketAddress::parse.
HostPort split(std::string_view flag, const std::string& text) {
  const std::size_t colon = text.rfind(':');
  unsigned port = 0;
  const char* end = text.data() + text.size();
  const bool numeric = colon != std::string::npos && colon + 1 < text.size() &&
                       std::from_chars(text.data() + colon + 1, end, port).ptr == end &&
                       port <= 65535;
  if (!numeric || text.find(':') != colon || text.front() == '[') {
    throw UsageError(fmt::format("{}: '{}' is not {}", flag, text, kForms));
  }
  std::string host = text.substr(0, colon);
  if (host == "*") host.clear();
  return {std::move(host), text.substr(colon + 1)};
}

struct AddrinfoFree {
  void operator()(addrinfo* list) const noexcept { freeaddrinfo(list); }
};

// getaddrinfo for a TCP address, numeric port; the resolver's order kept, duplicates dropped.
std::vector<SocketAddress> resolve(std::string_view flag, const std::string& text, const HostPort& parts) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  const int error = getaddrinfo(parts.host.c_str(), parts.port.c_str(), &hints, &list);
  std::unique_ptr<addrinfo, AddrinfoFree> owned(list);
  if (error != 0) {
    throw UsageError(fmt::format("{}: cannot resolve '{}': {}", flag, parts.host,
                                 error == EAI_SYSTEM ? std::strerror(errno) : gai_strerror(error)));
  }
  std::vector<SocketAddress> addresses;
  for (const addrinfo* entry = list; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_family != AF_INET && entry->ai_family != AF_INET6) continue;
    SocketAddress address(entry->ai_addr, entry->ai_addrlen);
    const auto same = [&](const SocketAddress& seen) { return seen.to_string() == address.to_string(); };
    if (std::none_of(addresses.begin(), addresses.end(), same)) addresses.push_back(address);
  }
  if (addresses.empty()) throw UsageError(fmt::format("{}: '{}' has no IPv4 or IPv6 address", flag, text));
  return addresses;
}

}  // namespace

std::vector<SocketAddress> listen_addresses(std::string_view flag, const std::string& text) {
  if (auto literal = SocketAddress::parse(text)) return {*literal};
  const HostPort parts = split(flag, text);
  if (parts.host.empty()) return {*SocketAddress::parse("0.0.0.0:" + parts.port)};
  return resolve(flag, text, parts);
}

SocketAddress connect_address(std::string_view flag, const std::string& text) {
  if (auto literal = SocketAddress::parse(text)) return *literal;
  const HostPort parts = split(flag, text);
  if (parts.host.empty()) {
    throw UsageError(fmt::format("{}: '{}' names no host to connect to", flag, text));
  }
  return resolve(flag, text, parts).front();
}

std::vector<SocketAddress> listen_addresses(std::string_view flag, const std::vector<std::string>& texts) {
  std::vector<SocketAddress> all;
  for (const std::string& text : texts) {
    for (const SocketAddress& address : listen_addresses(flag, text)) {
      const bool seen = std::any_of(all.begin(), all.end(), [&](const SocketAddress& other) {
        return other.to_string() == address.to_string() && address.port() != 0;
      });
      if (seen) throw UsageError(fmt::format("{}: {} is given twice", flag, address.to_string()));
      all.push_back(address);
    }
  }
  if (all.empty()) throw UsageError(fmt::format("{}: no address given", flag));
  return all;
}

std::string addresses_text(const std::vector<SocketAddress>& addresses) {
  std::string text;
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    if (i > 0) text += i + 1 == addresses.size() ? " and " : ", ";
    text += addresses[i].to_string();
  }
  return text;
}

}  // namespace ringlinger::tools
