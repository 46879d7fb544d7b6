// The little HTTP/1.x the tools speak: reading a request head, the deterministic response
// payload, and building requests and responses. Not part of the library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ringlinger::tools {

// Largest request head `serve` accepts; a longer one gets 431.
inline constexpr std::size_t kMaxHeadBytes = 64 * 1024;

// The payload byte at offset `index` of every response body: deterministic, so a client can
// check each byte, and not periodic in any power of two, so shifted data does not match.
constexpr char payload_byte(std::uint64_t index) noexcept {
  constexpr std::string_view kAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW";
  static_assert(kAlphabet.size() == 59);  // prime
  return kAlphabet[(index + index / 4093) % kAlphabet.size()];
}

// Offset of the first byte of `bytes` that differs from the payload starting at `offset`, or
// bytes.size() when all match.
std::size_t first_payload_mismatch(std::span<const char> bytes, std::uint64_t offset) noexcept;

// "HTTP/1.1 <status> <reason>\r\nContent-Length: N\r\nConnection: close\r\n..." up to the blank line.
std::string response_head(int status, std::string_view reason, std::uint64_t content_length);
// A 200 response with `body_bytes` bytes of payload.
std::string make_response(std::uint64_t body_bytes);
// A short error response (400, 431) with a text body.
std::string make_error_response(int status, std::string_view reason);
// A request: GET without a body, or POST with `body_bytes` bytes of body.
std::string make_request(std::uint64_t body_bytes);

// Accumulates a request head across reads, up to kMaxHeadBytes.
class HeadReader {
 public:
  enum class Status { incomplete, complete, too_large, malformed };

  // Feeds the next bytes of the connection. Once the status is not `incomplete`, further input is
  // ignored (it is the body, or garbage).
  Status feed(std::span<const std::byte> bytes);
  Status status() const noexcept { return status_; }
  void reset() noexcept;

 private:
  Status finish(std::string_view head);

  std::string pending_;  // head bytes seen so far, when the head spans reads
  Status status_ = Status::incomplete;
};

}  // namespace ringlinger::tools
