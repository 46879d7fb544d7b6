// The operator's log of `serve` and `proxy` (--log FILE|-, --log-format text|json): start-up and
// configuration lines, errors, and one line per connection that did not end clean, rate-limited
// so that a storm of resets cannot fill the disk.
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ringlinger/address.hpp"
#include "ringlinger/connection_id.hpp"
#include "ringlinger/outcome.hpp"

namespace ringlinger::tools {

enum class LogFormat { text, json };

// "text"/"json" -> LogFormat; throws UsageError("--log-format: ...") naming the value otherwise.
LogFormat log_format_flag(const std::string& text);

// errno number -> its name ("ECONNRESET"), "E<number>" for one the C library does not name.
std::string errno_name(int error_number);

// What the log says about one connection that did not end clean.
struct ConnectionEvent {
  // "connection" for serve; "client" or "upstream" for the proxy.
  std::string_view role;
  // The remote address, when known.
  std::optional<SocketAddress> peer;
  // Outcome, first_error, bytes sent/unsent/discarded, phase times.
  CloseReport report;
};

// Where a line's time comes from: the system clock, or a test's.
using LogClock = std::function<std::chrono::system_clock::time_point()>;

// One log for the whole process, written from any thread. Every line starts with the time
// (RFC 3339 UTC with milliseconds, "2026-12-03T07:05:01.123Z") and the level (info, warn,
// error). Text lines go on with the message and "key=value" pairs (a value with a space, a quote,
// an '=' or nothing in it is quoted, with \" and \\ escapes):
//   2026-12-03T07:05:01.123Z warn connection ended role=connection peer=127.0.0.1:40312 ...
// JSON lines are one object per line: {"time": ..., "level": ..., "msg": ..., fields...}, with
// byte counts and milliseconds as numbers.
// Each line is one write(2) (the file is opened O_APPEND), under a mutex: lines from several
// threads never interleave, and nothing sits in a buffer when the process dies.
// Movable (a moved-from log is disabled), so a command can hold one by value.
class EventLog {
 public:
  // `path` "-": standard error (the journal under systemd). Otherwise the file is opened for
  // appending now (created 0644 if missing); throws UsageError "--log: cannot open PATH: <why>".
  // `lines_per_second` (0: no limit): connection lines (connection(), upstream_error()) beyond
  // this within one second of the clock are not written but counted; the next line written, or
  // flush(), is preceded by one "suppressed N connection lines" line. Start-up, configuration and
  // error() lines are never suppressed. `clock` (empty: the system clock) gives the lines' times and the rate's seconds.
  EventLog(std::string path, LogFormat format, std::uint32_t lines_per_second = 100,
           LogClock clock = {});
  // A disabled log (no --log): every call returns at once.
  EventLog();
  ~EventLog();
  EventLog(EventLog&&) noexcept;
  EventLog& operator=(EventLog&&) noexcept;

  bool enabled() const noexcept { return state_ != nullptr; }

  // After SIGUSR1 (logrotate renamed the file): opens the same path again and writes there from
  // now on. On failure the old file stays in use and gets an error line saying why. Takes the
  // mutex: call it from a thread, not from the signal handler. Nothing to do for "-".
  void reopen();

  // Start-up and configuration lines: info("listening", {{"address", "127.0.0.1:8080"}}).
  using Fields = std::initializer_list<std::pair<std::string_view, std::string>>;
  void info(std::string_view message, Fields fields = {});
  void error(std::string_view message, Fields fields = {});

  // A connection that did not end clean (the caller skips Outcome::clean): a warn line
  // "connection ended" with role, peer ("" when unknown), outcome, error (errno name, "" when
  // 0), bytes_sent, bytes_unsent, bytes_discarded, open_ms, flush_ms, drain_ms, teardown_ms
  // (milliseconds with 3 decimals). Rate-limited.
  void connection(const ConnectionEvent& event);

  // The proxy's upstream failures: an error line "upstream connect failed" with client (the
  // client's address, "" when unknown), upstream and error (errno name, or "timeout" for 0).
  void upstream_error(const std::optional<SocketAddress>& client, const SocketAddress& upstream,
                      int error_number);

  // Writes the pending "suppressed" count, if any (call at exit and from time to time).
  void flush();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// The peer address of each connection, remembered at accept (getpeername), because it cannot
// be asked once the fd is closed, when the close report arrives. Indexed by ConnectionId::slot;
// owned and used by one manager's thread only. remember() costs one getpeername(2), so use it
// only when the log is on.
class PeerBook {
 public:
  explicit PeerBook(std::uint32_t max_connections);
  // Nothing is remembered when getpeername fails (e.g. a socket still connecting).
  void remember(ConnectionId id, int fd);
  // The address remembered for this very connection (not an earlier one in the same slot), and
  // forgets it.
  std::optional<SocketAddress> take(ConnectionId id);

 private:
  // sockaddr_in6 holds IPv4 and IPv6 addresses: a quarter of a sockaddr_storage, per slot.
  struct Entry {
    sockaddr_in6 address{};
    socklen_t length = 0;  // 0: nothing remembered
    std::uint32_t generation = 0;
  };
  std::vector<Entry> entries_;
};

}  // namespace ringlinger::tools
