#include "event_log.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <iterator>
#include <mutex>
#include <span>
#include <system_error>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"

namespace ringlinger::tools {

namespace {

// A field's value: text, a count, or milliseconds (written with 3 decimals).
using Value = std::variant<std::string, std::uint64_t, double>;
struct Field {
  std::string_view key;
  Value value;
};

std::string rfc3339(std::chrono::system_clock::time_point time) {
  const auto since_epoch = std::chrono::floor<std::chrono::milliseconds>(time.time_since_epoch());
  const auto seconds = std::chrono::floor<std::chrono::seconds>(since_epoch);
  const std::time_t whole = static_cast<std::time_t>(seconds.count());
  std::tm utc{};
  gmtime_r(&whole, &utc);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                     (since_epoch - seconds).count());
}

bool is_control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

// A value a reader can split on spaces and '=' stays as it is; anything else is quoted, so that
// an address, an error text or an empty value cannot break the line into wrong pairs.
void append_text_value(std::string& out, std::string_view value) {
  const bool plain = !value.empty() && value.find_first_of(" \"=\\") == std::string_view::npos &&
                     std::none_of(value.begin(), value.end(), is_control);
  if (plain) {
    out += value;
    return;
  }
  out += '"';
  for (const char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (is_control(c)) {
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  out += '"';
}

std::string text_line(std::string_view time, std::string_view level, std::string_view message,
                      std::span<const Field> fields) {
  std::string line = fmt::format("{} {} ", time, level);
  // A message never spans lines (it is the program's own text, but a line is a line).
  for (const char c : message) line += is_control(c) ? ' ' : c;
  for (const Field& field : fields) {
    fmt::format_to(std::back_inserter(line), " {}=", field.key);
    if (const auto* text = std::get_if<std::string>(&field.value)) {
      append_text_value(line, *text);
    } else if (const auto* count = std::get_if<std::uint64_t>(&field.value)) {
      fmt::format_to(std::back_inserter(line), "{}", *count);
    } else {
      fmt::format_to(std::back_inserter(line), "{:.3f}", std::get<double>(field.value));
    }
  }
  line += '\n';
  return line;
}

std::string json_line(std::string_view time, std::string_view level, std::string_view message,
                      std::span<const Field> fields) {
  // ordered_json: time, level and msg come first, as in the text format.
  nlohmann::ordered_json object = {{"time", time}, {"level", level}, {"msg", message}};
  for (const Field& field : fields) {
    std::visit([&](const auto& value) { object[std::string(field.key)] = value; }, field.value);
  }
  // Bytes that are not UTF-8 (none are expected) become U+FFFD instead of throwing.
  return object.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + '\n';
}

// One write(2) per line: with O_APPEND the kernel appends the whole line at once, also against
// other processes writing the same file. errno is kept for the caller, who may be reporting it.
void write_line(int fd, std::string_view line) {
  const int saved_errno = errno;
  while (!line.empty()) {
    const ssize_t written = ::write(fd, line.data(), line.size());
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) break;  // disk full, stderr closed: nothing better to do than lose the line
    line.remove_prefix(static_cast<std::size_t>(written));
  }
  errno = saved_errno;
}

int open_log(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

double milliseconds(std::chrono::nanoseconds duration) {
  return std::round(static_cast<double>(duration.count()) / 1e3) / 1e3;
}

}  // namespace

LogFormat log_format_flag(const std::string& text) {
  if (text == "text") return LogFormat::text;
  if (text == "json") return LogFormat::json;
  throw UsageError("--log-format: '" + text + "' is not one of text, json");
}

std::string errno_name(int error_number) {
  const char* name = strerrorname_np(error_number);  // glibc >= 2.32
  return name != nullptr ? name : "E" + std::to_string(error_number);
}

struct EventLog::State {
  std::string path;
  LogFormat format = LogFormat::text;
  std::uint32_t lines_per_second = 0;
  LogClock clock;

  std::mutex mutex;  // guards everything below
  int fd = -1;
  bool owns_fd = false;  // false for standard error
  // The rate limit's current second (of the clock) and the connection lines written in it.
  std::int64_t second = 0;
  std::uint32_t lines_this_second = 0;
  std::uint64_t suppressed = 0;

  ~State() {
    std::lock_guard lock(mutex);
    write_suppressed(clock());
    if (owns_fd) ::close(fd);
  }

  void write(std::chrono::system_clock::time_point time, std::string_view level,
             std::string_view message, std::span<const Field> fields) {
    write_suppressed(time);
    const std::string stamp = rfc3339(time);
    write_line(fd, format == LogFormat::json ? json_line(stamp, level, message, fields)
                                             : text_line(stamp, level, message, fields));
  }

  // A line with the caller's fields, now.
  void write_now(std::string_view level, std::string_view message, Fields fields) {
    std::vector<Field> converted;
    for (const auto& [key, value] : fields) converted.push_back({key, value});
    std::lock_guard lock(mutex);
    write(clock(), level, message, converted);
  }

  void write_suppressed(std::chrono::system_clock::time_point time) {
    if (suppressed == 0) return;
    const std::uint64_t count = suppressed;
    suppressed = 0;  // before write(), which would otherwise come back here
    const Field field{"count", Value(count)};
    write(time, "warn", fmt::format("suppressed {} connection lines", count), {&field, 1});
  }

  // Whether a connection line at `time` is within the rate; counts it as suppressed if not.
  bool admit(std::chrono::system_clock::time_point time) {
    if (lines_per_second == 0) return true;
    const std::int64_t now =
        std::chrono::floor<std::chrono::seconds>(time.time_since_epoch()).count();
    if (now != second) {  // != rather than >: a clock stepped back starts a new second too
      second = now;
      lines_this_second = 0;
    }
    if (lines_this_second >= lines_per_second) {
      ++suppressed;
      return false;
    }
    ++lines_this_second;
    return true;
  }
};

EventLog::EventLog() = default;
EventLog::~EventLog() = default;
EventLog::EventLog(EventLog&&) noexcept = default;
EventLog& EventLog::operator=(EventLog&&) noexcept = default;

EventLog::EventLog(std::string path, LogFormat format, std::uint32_t lines_per_second,
                   LogClock clock)
    : state_(std::make_unique<State>()) {
  State& state = *state_;
  state.format = format;
  state.lines_per_second = lines_per_second;
  state.clock = clock ? std::move(clock) : LogClock(&std::chrono::system_clock::now);
  if (path == "-") {
    state.fd = STDERR_FILENO;
  } else {
    state.fd = open_log(path);
    if (state.fd < 0) {
      const int error = errno;
      throw UsageError(fmt::format("--log: cannot open {}: {}", path,
                                   std::generic_category().message(error)));
    }
    state.owns_fd = true;
  }
  state.path = std::move(path);
}

void EventLog::reopen() {
  if (!state_ || state_->path == "-") return;
  State& state = *state_;
  const int fd = open_log(state.path);
  const int error = errno;
  std::lock_guard lock(state.mutex);
  if (fd < 0) {
    const Field fields[] = {{"path", state.path},
                            {"error", errno_name(error)},
                            {"reason", std::generic_category().message(error)}};
    state.write(state.clock(), "error", "cannot reopen the log, still writing here", fields);
    return;
  }
  ::close(state.fd);
  state.fd = fd;
}

void EventLog::info(std::string_view message, Fields fields) {
  if (state_) state_->write_now("info", message, fields);
}

void EventLog::error(std::string_view message, Fields fields) {
  if (state_) state_->write_now("error", message, fields);
}

void EventLog::connection(const ConnectionEvent& event) {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  const auto time = state_->clock();
  if (!state_->admit(time)) return;
  const CloseReport& report = event.report;
  const Field fields[] = {
      {"role", std::string(event.role)},
      {"peer", event.peer ? event.peer->to_string() : std::string()},
      {"outcome", std::string(to_string(report.outcome))},
      {"error", report.first_error != 0 ? errno_name(report.first_error) : std::string()},
      {"bytes_sent", report.bytes_sent},
      {"bytes_unsent", report.bytes_unsent},
      {"bytes_discarded", report.bytes_discarded},
      {"open_ms", milliseconds(report.open_time)},
      {"flush_ms", milliseconds(report.flush_time)},
      {"drain_ms", milliseconds(report.drain_time)},
      {"teardown_ms", milliseconds(report.teardown_time)},
  };
  state_->write(time, "warn", "connection ended", fields);
}

void EventLog::upstream_error(const std::optional<SocketAddress>& client,
                              const SocketAddress& upstream, int error_number) {
  if (!state_) return;
  const Field fields[] = {
      {"client", client ? client->to_string() : std::string()},
      {"upstream", upstream.to_string()},
      {"error", error_number != 0 ? errno_name(error_number) : std::string("timeout")},
  };
  // One per refused client while an upstream is down: limited like the connection lines.
  std::lock_guard lock(state_->mutex);
  const auto time = state_->clock();
  if (!state_->admit(time)) return;
  state_->write(time, "error", "upstream connect failed", fields);
}

void EventLog::flush() {
  if (!state_) return;
  std::lock_guard lock(state_->mutex);
  state_->write_suppressed(state_->clock());
}

PeerBook::PeerBook(std::uint32_t max_connections) : entries_(max_connections) {}

void PeerBook::remember(ConnectionId id, int fd) {
  if (id.slot >= entries_.size()) return;
  Entry& entry = entries_[id.slot];
  socklen_t length = sizeof(entry.address);
  const bool known = ::getpeername(fd, reinterpret_cast<sockaddr*>(&entry.address), &length) == 0 &&
                     length <= sizeof(entry.address);
  entry.length = known ? length : 0;
  entry.generation = id.generation;
}

std::optional<SocketAddress> PeerBook::take(ConnectionId id) {
  if (id.slot >= entries_.size()) return std::nullopt;
  Entry& entry = entries_[id.slot];
  if (entry.length == 0 || entry.generation != id.generation) return std::nullopt;
  const SocketAddress address(reinterpret_cast<const sockaddr*>(&entry.address), entry.length);
  entry.length = 0;
  return address;
}

}  // namespace ringlinger::tools
