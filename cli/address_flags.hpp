// Addresses as operators write them: "127.0.0.1:8080", "[::1]:8080", "localhost:8080" (resolved
// once, at start), ":8080" and "*:8080" (every IPv4 address, as nginx's `listen 8080` and
// HAProxy's `bind :8080`; "[::]:8080" is every IPv6 address, and IPv4 too unless
// net.ipv6.bindv6only is set). Errors throw UsageError naming the flag.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ringlinger/address.hpp"

namespace ringlinger::tools {

// What a listening flag (--listen, --metrics) names: a hostname gives every address it resolves
// to (localhost: 127.0.0.1 and ::1), each listened on.
std::vector<SocketAddress> listen_addresses(std::string_view flag, const std::string& text);

// What a connecting flag (--upstream) names: a hostname gives the first address the resolver
// prefers (RFC 6724 order), resolved once.
SocketAddress connect_address(std::string_view flag, const std::string& text);

// Every value of a repeatable listening flag, in order, duplicates refused.
std::vector<SocketAddress> listen_addresses(std::string_view flag, const std::vector<std::string>& texts);

// "a", "a and b", "a, b and c".
std::string addresses_text(const std::vector<SocketAddress>& addresses);

}  // namespace ringlinger::tools
