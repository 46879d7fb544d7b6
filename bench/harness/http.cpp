#include "http.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <cstdio>
#include <cstring>

namespace ringlinger::tools {
namespace {

// RFC 9110 tchar, as a table: one load per byte of the method.
constexpr std::array<bool, 256> kTokenChar = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[static_cast<unsigned char>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[static_cast<unsigned char>(c)] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[static_cast<unsigned char>(c)] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

bool is_token_char(char c) { return kTokenChar[static_cast<unsigned char>(c)]; }

// Where a request head ends, as found by find_head_end().
struct HeadEnd {
  std::size_t end = std::string_view::npos;            // just past its "\r\n\r\n"
  std::size_t first_newline = std::string_view::npos;  // of the bytes searched
};

// The first "\r\n\r\n" of `text` whose "\n\r\n" starts at or after `from` (a caller that has
// searched the text up to some length searches again from 3 bytes before it). Where SSE2 is there
// (every x86-64), 16 bytes at a time (two at once past the first '\n'): one compare finds their
// '\n's as a bit mask, and only a '\n' two bytes after another (as at the end of an empty line)
// has the CRs around it checked: a head costs fewer instructions than a memchr call per line
// would (and than a substring search, which stops at every '\r'). Inlined in both callers: the
// fast path of feed() is then one function, with no call, argument moves or returned pair in
// between.
[[gnu::always_inline]] inline HeadEnd find_head_end(std::string_view text, std::size_t from) {
  const char* const begin = text.data();
  const char* const end = begin + text.size();
  HeadEnd found;
  // Whether the '\n' at `newline`, with a '\n' two bytes before it, ends the head.
  auto ends_head = [&](const char* newline) {
    const auto at = static_cast<std::size_t>(newline - begin);
    if (at < 3 || newline[-1] != '\r' || newline[-3] != '\r') return false;
    found.end = at + 1;
    return true;
  };
  const char* p = begin + from;
#ifdef __SSE2__
  const __m128i newlines = _mm_set1_epi8('\n');
  auto newlines_at = [&](const char* at) {  // the '\n's of the 16 bytes at `at`, as a bit mask
    const __m128i chunk = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    return static_cast<std::uint32_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(chunk, newlines)));
  };
  // The rounds counted once: a round ends with one compare, not the bytes left computed again.
  std::size_t rounds = (text.size() - from) / 16;
  // Up to the first '\n' (the request line's end), a round only looks for it: with no '\n'
  // before it, none can end the head. Its round is searched again below, as every later one,
  // which then no longer tests whether the first '\n' was seen.
  for (; rounds != 0; --rounds, p += 16) {
    if (const std::uint32_t mask = newlines_at(p); mask != 0) {
      found.first_newline = static_cast<std::size_t>(p - begin) + std::countr_zero(mask);
      break;
    }
  }
  // Then two rounds a pass while there are two, the last one alone: a head of 60-100 bytes takes
  // two passes of the loop, where it took four (bench/callgrind.sh: HeadReader::feed 116 -> 103
  // instructions per close).
  // A '\n' with one two bytes before it (in the mask, or in `carried`: the '\n's of the two bytes
  // before p, as bits 0 and 1) may end the head.
  std::uint64_t carried = 0;
  for (; rounds >= 2; rounds -= 2, p += 32) {
    const std::uint64_t mask = newlines_at(p) | (std::uint64_t{newlines_at(p + 16)} << 16);
    for (std::uint64_t pairs = mask & ((mask << 2) | carried); pairs != 0; pairs &= pairs - 1) {
      if (ends_head(p + std::countr_zero(pairs))) return found;
    }
    carried = mask >> 30;
  }
  if (rounds != 0) {
    const std::uint64_t mask = newlines_at(p);
    for (std::uint64_t pairs = mask & ((mask << 2) | carried); pairs != 0; pairs &= pairs - 1) {
      if (ends_head(p + std::countr_zero(pairs))) return found;
    }
    p += 16;
  }
#endif
  for (; p < end; ++p) {
    if (*p != '\n') continue;
    if (found.first_newline == std::string_view::npos) {
      found.first_newline = static_cast<std::size_t>(p - begin);
    }
    if (p - begin >= 2 && p[-2] == '\n' && ends_head(p)) return found;
  }
  return found;
}

// The length of the method when `line` (at least 5 bytes) starts with GET, HEAD, POST or PUT
// and a space, else 0. Four bytes compared at once: cheaper than a table load per byte, and
// these are what clients send. Another method is read by the token loop, to the same end.
std::size_t common_method_length(const char* line) {
  auto word = [](const char* bytes) {
    std::uint32_t value;
    std::memcpy(&value, bytes, sizeof(value));
    return value;
  };
  const std::uint32_t first = word(line);
  if (first == word("GET ") || first == word("PUT ")) return 3;
  if ((first == word("POST") || first == word("HEAD")) && line[4] == ' ') return 4;
  return 0;
}

// Length of the method when `line` (the head's first line, without its CRLF) is
// "METHOD SP target SP HTTP/1.x" with x 0 or 1, else 0. The version is read first, so its space
// stops the scan of the method. Inlined in feed(), as the search is (bench/callgrind.sh: 127 ->
// 124 instructions per close for the two).
[[gnu::always_inline]] inline std::size_t request_method_length(std::string_view line) {
  constexpr std::size_t kVersionBytes = 8;  // "HTTP/1.x"
  if (line.size() < kVersionBytes + 1) return 0;
  const char* const version = line.data() + line.size() - kVersionBytes;
  if (version[-1] != ' ' || (std::memcmp(version, "HTTP/1.1", kVersionBytes) != 0 &&
                             std::memcmp(version, "HTTP/1.0", kVersionBytes) != 0)) {
    return 0;
  }
  std::size_t method = common_method_length(line.data());
  if (method == 0) {
    while (is_token_char(line[method])) ++method;
  }
  // The method ends at the first space, and a target of at least one byte follows it.
  const bool valid = method > 0 && line[method] == ' ' && method + 2 + kVersionBytes < line.size();
  return valid ? method : 0;
}

}  // namespace

std::size_t first_payload_mismatch(std::span<const char> bytes, std::uint64_t offset) noexcept {
  // payload_byte(i) = alphabet[(i + q) % 59] with q = i / 4093 constant over each block of 4093
  // bytes: within a block the payload is the alphabet repeated, so each block is one memcmp
  // against a table of the repeated alphabet (instead of two divisions per byte).
  constexpr std::uint64_t kBlock = 4093;
  constexpr std::size_t kPeriod = 59;
  static const std::string kRepeated = [] {
    std::string table(kPeriod + kBlock, '\0');
    for (std::size_t k = 0; k < table.size(); ++k) table[k] = payload_byte(k % kPeriod);
    return table;
  }();
  std::size_t checked = 0;
  while (checked < bytes.size()) {
    const std::uint64_t index = offset + checked;
    const std::uint64_t left_in_block = kBlock - index % kBlock;
    const std::size_t length = static_cast<std::size_t>(
        std::min<std::uint64_t>(left_in_block, bytes.size() - checked));
    const std::size_t start = static_cast<std::size_t>((index + index / kBlock) % kPeriod);
    if (std::memcmp(bytes.data() + checked, kRepeated.data() + start, length) != 0) {
      for (std::size_t i = checked; i < checked + length; ++i) {
        if (bytes[i] != payload_byte(offset + i)) return i;
      }
    }
    checked += length;
  }
  return bytes.size();
}

std::string http_date(std::time_t time) {
  static constexpr std::string_view kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm utc{};
  gmtime_r(&time, &utc);
  char text[64];  // kHttpDateSize + 1 for years 0 to 9999; room for what snprintf fears
  std::snprintf(text, sizeof(text), "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT",
                kDays[static_cast<std::size_t>(utc.tm_wday) % 7].data(), utc.tm_mday,
                kMonths[static_cast<std::size_t>(utc.tm_mon) % 12].data(), utc.tm_year + 1900,
                utc.tm_hour, utc.tm_min, utc.tm_sec);
  return text;
}

namespace {

constexpr std::string_view kDateField = "\r\nDate: ";

std::string head_of(int status, std::string_view reason, std::string_view content_type,
                    std::uint64_t content_length, std::string_view date) {
  std::string head = "HTTP/1.1 " + std::to_string(status) + " ";
  head += reason;
  head += "\r\nServer: ringlinger";
  if (!date.empty()) {
    head += kDateField;
    head += date;
  }
  head += "\r\nContent-Type: ";
  head += content_type;
  head += "\r\nContent-Length: ";
  head += std::to_string(content_length);
  head += "\r\nConnection: close\r\n\r\n";
  return head;
}

}  // namespace

std::string response_head(int status, std::string_view reason, std::uint64_t content_length,
                          std::string_view date) {
  return head_of(status, reason, "application/octet-stream", content_length, date);
}

std::string make_payload(std::uint64_t body_bytes) {
  std::string payload(body_bytes, '\0');
  for (std::uint64_t i = 0; i < body_bytes; ++i) payload[i] = payload_byte(i);
  return payload;
}

std::string make_response(std::uint64_t body_bytes, std::string_view date) {
  return response_head(200, "OK", body_bytes, date) + make_payload(body_bytes);
}

std::string make_error_response(int status, std::string_view reason, std::string_view date) {
  const std::string body = std::to_string(status) + " " + std::string(reason) + "\n";
  return head_of(status, reason, "text/plain", body.size(), date) + body;
}

std::string without_date(std::string_view response) {
  const std::size_t head_end = response.find("\r\n\r\n");
  const std::size_t field = response.substr(0, head_end).find(kDateField);
  if (field == std::string_view::npos) return std::string(response);
  const std::size_t line_end = response.find("\r\n", field + kDateField.size());
  return std::string(response.substr(0, field)) + std::string(response.substr(line_end));
}

ResponseCache::ResponseCache(std::uint64_t content_length, std::string_view inline_body)
    : content_length_(content_length), inline_body_(inline_body) {}

const std::shared_ptr<const DatedResponses>& ResponseCache::renew(std::time_t now) {
  second_ = now;
  const std::string date = http_date(now);
  auto responses = std::make_shared<DatedResponses>();
  responses->ok = response_head(200, "OK", content_length_, date);
  responses->ok_head_bytes = responses->ok.size();
  responses->ok += inline_body_;
  responses->bad_request = make_error_response(400, "Bad Request", date);
  responses->head_too_large = make_error_response(431, "Request Header Fields Too Large", date);
  current_ = std::move(responses);
  return current_;
}

ssize_t send_from(int fd, std::string_view head, std::string_view body, std::uint64_t offset) {
  iovec pieces[2];
  int count = 0;
  auto add = [&](std::string_view piece) {
    if (offset >= piece.size()) {
      offset -= piece.size();
      return;
    }
    pieces[count++] = {const_cast<char*>(piece.data()) + offset, piece.size() - offset};
    offset = 0;
  };
  add(head);
  add(body);
  msghdr message{};
  message.msg_iov = pieces;
  message.msg_iovlen = static_cast<std::size_t>(count);
  return ::sendmsg(fd, &message, MSG_NOSIGNAL);
}

std::string make_request(std::uint64_t body_bytes) {
  if (body_bytes == 0) return "GET / HTTP/1.1\r\nHost: ringlinger\r\n\r\n";
  std::string request = "POST /upload HTTP/1.1\r\nHost: ringlinger\r\nContent-Length: " +
                        std::to_string(body_bytes) + "\r\n\r\n";
  request.append(body_bytes, 'b');
  return request;
}

HeadReader::Status HeadReader::feed(std::span<const std::byte> bytes) {
  if (status_ != Status::incomplete) return status_;
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  if (!pending_.empty()) return feed_pending(text);
  // Fast path: the whole head in one read, no copy, and its first line's end found on the way.
  const HeadEnd found = find_head_end(text, 0);
  if (found.end == std::string_view::npos) return feed_pending(text);
  if (found.end > kMaxHeadBytes) return status_ = Status::too_large;
  return finish(std::string_view(text.data(), found.end), found.first_newline);
}

HeadReader::Status HeadReader::feed_pending(std::string_view text) {
  // The terminator may straddle the previous read: search from a few bytes back.
  const std::size_t search_from = pending_.size() >= 3 ? pending_.size() - 3 : 0;
  const std::size_t room = kMaxHeadBytes + 1 - std::min(pending_.size(), kMaxHeadBytes + 1);
  pending_.append(text.substr(0, std::min(text.size(), room)));
  const std::size_t end = find_head_end(pending_, search_from).end;
  if (end != std::string::npos && end <= kMaxHeadBytes) {
    const std::string_view head(pending_.data(), end);
    finish(head, head.find('\n'));
    std::string().swap(pending_);  // its memory too: a connection lingers long after its head
    return status_;
  }
  if (pending_.size() > kMaxHeadBytes) return status_ = Status::too_large;
  return status_;
}

inline HeadReader::Status HeadReader::finish(std::string_view head, std::size_t first_newline) {
  // The request line without its CRLF (head ends in "\n": there is a first one).
  const bool crlf = first_newline > 0 && head[first_newline - 1] == '\r';
  const std::string_view line(head.data(), crlf ? first_newline - 1 : 0);
  const std::size_t method = crlf ? request_method_length(line) : 0;
  status_ = method > 0 ? Status::complete : Status::malformed;
  head_method_ = method == 4 && std::memcmp(head.data(), "HEAD", 4) == 0;
  return status_;
}

void HeadReader::reset() noexcept {
  pending_.clear();
  status_ = Status::incomplete;
  head_method_ = false;
}

}  // namespace ringlinger::tools
