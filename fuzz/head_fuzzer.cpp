// libFuzzer target: tools::HeadReader, the request-head parser of `ringlinger serve`.
//
// Properties, for any bytes and any way of splitting them into reads:
//   - it never crashes (ASan, UBSan);
//   - the status is the same however the bytes are split into feed() calls, and the same again
//     after reset() and one more feed of the whole; once decided, further feeds do not change it;
//   - complete or malformed only when a "\r\n\r\n" ends within the first kMaxHeadBytes; then
//     complete exactly when the first line is "METHOD SP target SP HTTP/1.x" CRLF (checked here
//     independently of http.cpp);
//   - too_large only when the bytes pass kMaxHeadBytes with no such terminator; incomplete only
//     when they do not pass it and hold no terminator.
//
// The input, so that inputs far larger than libFuzzer's default -max_len can reach the limit:
//   byte 0        low 4 bits: how many split points (0-15); bit 4: padding follows
//   3 bytes each  the split points, offsets into the text modulo its length + 1
//   padding       1 byte: the padding byte; 3 bytes: its length modulo kMaxHeadBytes + 64;
//                 2 bytes: where it goes into the text, modulo the text's length + 1
//   the rest      the text
// Missing header bytes read as 0.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "http.hpp"

namespace {

using ringlinger::tools::HeadReader;
using ringlinger::tools::kMaxHeadBytes;
using Status = HeadReader::Status;

const char* name(Status status) {
  switch (status) {
    case Status::incomplete:
      return "incomplete";
    case Status::complete:
      return "complete";
    case Status::too_large:
      return "too_large";
    case Status::malformed:
      return "malformed";
  }
  return "?";
}

[[noreturn]] void fail(const std::string& what, std::string_view text) {
  std::fprintf(stderr, "head_fuzzer: %s (text of %zu bytes, first line: \"%.*s\")\n",
               what.c_str(), text.size(),
               static_cast<int>(std::min<std::size_t>(text.find('\n'), 200)), text.data());
  std::abort();
}

// Reads the input's header fields front to back; missing bytes read as 0.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}

  std::uint64_t take(int bytes) {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) {
      value = (value << 8) | (position_ < size_ ? data_[position_] : 0);
      if (position_ < size_) ++position_;
    }
    return value;
  }

  std::string_view rest() const {
    return {reinterpret_cast<const char*>(data_) + position_, size_ - position_};
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t position_ = 0;
};

// The RFC 9110 tchar set, written out rather than taken from http.cpp.
bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// What the status must be for `text` fed whole, from the properties above alone.
Status expected_status(std::string_view text) {
  const std::size_t terminator = text.find("\r\n\r\n");
  if (terminator != std::string_view::npos && terminator + 4 <= kMaxHeadBytes) {
    const std::string_view line = text.substr(0, text.find('\n'));  // the head ends in '\n'
    if (line.empty() || line.back() != '\r') return Status::malformed;
    const std::string_view request_line = line.substr(0, line.size() - 1);
    const std::size_t method_end = request_line.find(' ');
    const std::size_t version_start = request_line.rfind(' ');
    if (method_end == 0 || method_end == std::string_view::npos) return Status::malformed;
    for (std::size_t i = 0; i < method_end; ++i) {
      if (!is_tchar(request_line[i])) return Status::malformed;
    }
    if (version_start <= method_end + 1) return Status::malformed;  // no target
    const std::string_view version = request_line.substr(version_start + 1);
    return version == "HTTP/1.1" || version == "HTTP/1.0" ? Status::complete : Status::malformed;
  }
  return text.size() > kMaxHeadBytes ? Status::too_large : Status::incomplete;
}

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader reader(data, size);
  const auto header = reader.take(1);
  std::vector<std::uint64_t> raw_splits;
  for (std::uint64_t i = 0; i < (header & 0x0f); ++i) raw_splits.push_back(reader.take(3));
  std::string text;
  if ((header & 0x10) != 0) {
    const char pad = static_cast<char>(reader.take(1));
    const std::uint64_t pad_length = reader.take(3) % (kMaxHeadBytes + 64);
    const std::uint64_t at = reader.take(2);
    text = reader.rest();
    text.insert(at % (text.size() + 1), pad_length, pad);
  } else {
    text = reader.rest();
  }

  // Whole, in one feed.
  HeadReader whole;
  const Status status = whole.feed(bytes_of(text));
  if (status != whole.status()) fail("feed() and status() disagree", text);
  const Status expected = expected_status(text);
  if (status != expected) {
    fail(std::string("status ") + name(status) + ", expected " + name(expected), text);
  }

  // Split at the input's points (sorted; repeats make empty feeds).
  std::vector<std::size_t> splits;
  for (std::uint64_t raw : raw_splits) splits.push_back(raw % (text.size() + 1));
  std::sort(splits.begin(), splits.end());
  splits.push_back(text.size());
  HeadReader split;
  std::size_t from = 0;
  Status decided = Status::incomplete;
  for (std::size_t to : splits) {
    const Status now = split.feed(bytes_of(std::string_view(text).substr(from, to - from)));
    if (now != split.status()) fail("feed() and status() disagree (split)", text);
    if (decided != Status::incomplete && now != decided) {
      fail(std::string("status changed after it was decided: ") + name(decided) + " -> " +
               name(now),
           text);
    }
    decided = now;
    from = to;
  }
  if (split.status() != status) {
    fail(std::string("split into ") + std::to_string(splits.size()) + " feeds: " +
             name(split.status()) + ", whole: " + name(status),
         text);
  }

  // reset() forgets everything: the same bytes again give the same status.
  split.reset();
  if (split.status() != Status::incomplete) fail("reset() left a status", text);
  if (split.feed(bytes_of(text)) != status) fail("a different status after reset()", text);
  return 0;
}
