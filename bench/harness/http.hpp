// The little HTTP/1.x the tools speak: reading a request head, the deterministic response
// payload, and building requests and responses. Not part of the library.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
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

// The value of a Date header for `time`: IMF-fixdate (RFC 9110, section 5.6.7), as in
// "Sun, 06 Nov 1994 08:49:37 GMT"; always kHttpDateSize characters, whatever the locale.
inline constexpr std::size_t kHttpDateSize = 29;
std::string http_date(std::time_t time);

// "HTTP/1.1 <status> <reason>\r\nServer: ringlinger\r\n[Date: <date>\r\n]Content-Type: ...
// Content-Length: N\r\nConnection: close\r\n" and the blank line. No Date line when `date` is empty.
std::string response_head(int status, std::string_view reason, std::uint64_t content_length,
                          std::string_view date = {});
// `body_bytes` bytes of payload: the body of every 200.
std::string make_payload(std::uint64_t body_bytes);
// A 200 response with `body_bytes` bytes of payload.
std::string make_response(std::uint64_t body_bytes, std::string_view date = {});
// A short error response (400, 431) with a text body.
std::string make_error_response(int status, std::string_view reason, std::string_view date = {});
// `response` without its Date line: what make_response() without a date makes of the same
// response, for a test that compares what a server sent byte for byte.
std::string without_date(std::string_view response);
// A request: GET without a body, or POST with `body_bytes` bytes of body.
std::string make_request(std::uint64_t body_bytes);

// What a server answers, all with the same Date. Never changed once made: a connection keeps the
// set its response came from (a shared_ptr) until the kernel has every byte of it.
struct DatedResponses {
  std::string ok;                  // the 200's head, then its body if the body is inline
  std::size_t ok_head_bytes = 0;   // the head alone: the answer to HEAD (same Content-Length)
  std::string bad_request;         // 400, whole
  std::string head_too_large;      // 431, whole
};

// The responses of the current second, for one thread: each server thread keeps one and asks it
// for every response, so the date is formatted (and the responses rebuilt) at most once a second
// per thread, and a response costs one time() (vDSO) and a reference count.
class ResponseCache {
 public:
  // Every 200 says Content-Length `content_length`; `inline_body` is empty (the caller sends the
  // body itself: from memory, or a file) or the whole body, then kept in `ok` after the head.
  ResponseCache(std::uint64_t content_length, std::string_view inline_body = {});
  // Inline, and the rest out of line: a call in the same second pays no stack frame for the
  // responses made once a second (bench/callgrind.sh: 27 instructions a response before).
  const std::shared_ptr<const DatedResponses>& current() {
    const std::time_t now = std::time(nullptr);
    return now == second_ ? current_ : renew(now);
  }

 private:
  [[gnu::noinline, gnu::cold]] const std::shared_ptr<const DatedResponses>& renew(std::time_t now);

  const std::uint64_t content_length_;
  const std::string inline_body_;
  std::time_t second_ = -1;
  std::shared_ptr<const DatedResponses> current_;
};

// One sendmsg of what is left of `head` then `body`, from `offset` of the two together (the
// plain servers' responses: head and body stay separate buffers, and each send is still one
// system call). MSG_NOSIGNAL: a peer gone is EPIPE, never SIGPIPE. Returns what sendmsg returns.
ssize_t send_from(int fd, std::string_view head, std::string_view body, std::uint64_t offset);

// Accumulates a request head across reads, up to kMaxHeadBytes.
class HeadReader {
 public:
  enum class Status { incomplete, complete, too_large, malformed };

  // Feeds the next bytes of the connection. Once the status is not `incomplete`, further input is
  // ignored (it is the body, or garbage).
  Status feed(std::span<const std::byte> bytes);
  Status status() const noexcept { return status_; }
  // Whether the complete head asks for HEAD: answer with the response's head only.
  bool head_method() const noexcept { return head_method_; }
  void reset() noexcept;

 private:
  // A head that spans reads: `text` goes after the bytes kept so far. Out of line, so a head
  // read whole (the usual case) pays no stack frame for the string it needs.
  [[gnu::noinline]] Status feed_pending(std::string_view text);
  // `first_newline`: the offset of the head's first '\n'. Inlined (always_inline) in feed():
  // no call between the search and the request line.
  [[gnu::always_inline]] Status finish(std::string_view head, std::size_t first_newline);

  std::string pending_;  // head bytes seen so far, when the head spans reads
  Status status_ = Status::incomplete;
  bool head_method_ = false;
};

}  // namespace ringlinger::tools
