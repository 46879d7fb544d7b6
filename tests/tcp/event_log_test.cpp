// The operator's log (--log, --log-format): lines read back by a parser of each format, every
// field of a connection line, the rate limit under a clock the test moves, reopening after
// logrotate renamed the file, standard error, and the peer addresses remembered over real TCP.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "event_log.hpp"
#include "tcp_support.hpp"

namespace ringlinger::tools {
namespace {

using namespace std::chrono_literals;
using testing_support::connect_client;
using testing_support::read_to_end;
using testing_support::Responder;
using testing_support::send_all;

// 2026-12-03T07:05:01.123Z
const std::chrono::system_clock::time_point kTime =
    std::chrono::sys_days(std::chrono::year(2026) / 12 / 3) + 7h + 5min + 1s + 123ms;

// A clock the test moves by hand.
struct FakeClock {
  std::chrono::system_clock::time_point now = kTime;
  LogClock clock() {
    return [this] { return now; };
  }
};

// A directory of its own for each test, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "event-log-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream file(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(file, line);) lines.push_back(line);
  return lines;
}

// A text line taken apart the way an operator's script would: time, level, the message (the
// words before the first key=value), then the pairs, quoted values unescaped.
struct TextLine {
  std::string time;
  std::string level;
  std::string message;
  std::map<std::string, std::string> fields;
};

std::string unquote(const std::string& line, std::size_t& at) {
  std::string value;
  ++at;  // the opening quote
  while (at < line.size() && line[at] != '"') {
    if (line[at] == '\\' && at + 1 < line.size()) {
      ++at;
      value += line[at] == 'n' ? '\n' : line[at];
    } else {
      value += line[at];
    }
    ++at;
  }
  if (at >= line.size()) throw std::runtime_error("unterminated quote in: " + line);
  ++at;  // the closing quote
  return value;
}

TextLine parse_text(const std::string& line) {
  TextLine parsed;
  std::size_t at = 0;
  auto word = [&] {
    const std::size_t end = std::min(line.find(' ', at), line.size());
    std::string text = line.substr(at, end - at);
    at = end < line.size() ? end + 1 : end;
    return text;
  };
  parsed.time = word();
  parsed.level = word();
  while (at < line.size()) {
    const std::size_t space = std::min(line.find(' ', at), line.size());
    const std::size_t equals = line.find('=', at);
    if (equals == std::string::npos || equals > space) {  // a word of the message
      if (!parsed.message.empty()) parsed.message += ' ';
      parsed.message += word();
      continue;
    }
    const std::string key = line.substr(at, equals - at);
    at = equals + 1;
    std::string value = at < line.size() && line[at] == '"' ? unquote(line, at) : word();
    if (at < line.size() && line[at] == ' ') ++at;
    if (!parsed.fields.emplace(key, value).second) {
      throw std::runtime_error("key twice in: " + line);
    }
  }
  return parsed;
}

CloseReport sample_report() {
  CloseReport report;
  report.outcome = Outcome::peer_reset;
  report.first_error = ECONNRESET;
  report.bytes_sent = 1234;
  report.bytes_unsent = 789;
  report.bytes_discarded = 56;
  report.open_time = 1'500'000ns;
  report.flush_time = 2'345'678ns;
  report.drain_time = 0ns;
  report.teardown_time = 999ns;
  return report;
}

ConnectionEvent sample_event() {
  return {"client", SocketAddress::parse("192.0.2.7:40312"), sample_report()};
}

TEST(EventLog, LogFormatFlag) {
  EXPECT_EQ(log_format_flag("text"), LogFormat::text);
  EXPECT_EQ(log_format_flag("json"), LogFormat::json);
  try {
    log_format_flag("xml");
    FAIL() << "no UsageError for xml";
  } catch (const UsageError& error) {
    EXPECT_NE(std::string(error.what()).find("--log-format"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("xml"), std::string::npos) << error.what();
  }
}

TEST(EventLog, ErrnoNames) {
  EXPECT_EQ(errno_name(ECONNRESET), "ECONNRESET");
  EXPECT_EQ(errno_name(ECONNREFUSED), "ECONNREFUSED");
  EXPECT_EQ(errno_name(ETIMEDOUT), "ETIMEDOUT");
  EXPECT_EQ(errno_name(EPIPE), "EPIPE");
  EXPECT_EQ(errno_name(EHOSTUNREACH), "EHOSTUNREACH");
  EXPECT_EQ(errno_name(ENETUNREACH), "ENETUNREACH");
  EXPECT_EQ(errno_name(ECONNABORTED), "ECONNABORTED");
  EXPECT_EQ(errno_name(EADDRINUSE), "EADDRINUSE");
  EXPECT_EQ(errno_name(EMFILE), "EMFILE");
  EXPECT_EQ(errno_name(9999), "E9999");
}

TEST(EventLog, TextInfoLineParsesBack) {
  TempDir dir;
  FakeClock clock;
  {
    EventLog log(dir / "log", LogFormat::text, 100, clock.clock());
    EXPECT_TRUE(log.enabled());
    log.info("listening", {{"address", "127.0.0.1:8080"},
                           {"backend", "io_uring SUBMIT_ALL|CQSIZE"},
                           {"empty", ""},
                           {"tricky", "a \"quoted\" \\ path=x\nnext"}});
    log.error("cannot start", {{"reason", "Address already in use"}});
  }
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 2u);
  const TextLine info = parse_text(lines[0]);
  EXPECT_EQ(info.time, "2026-12-03T07:05:01.123Z");
  EXPECT_EQ(info.level, "info");
  EXPECT_EQ(info.message, "listening");
  const std::map<std::string, std::string> expected = {
      {"address", "127.0.0.1:8080"},
      {"backend", "io_uring SUBMIT_ALL|CQSIZE"},
      {"empty", ""},
      {"tricky", "a \"quoted\" \\ path=x\nnext"}};
  EXPECT_EQ(info.fields, expected);
  const TextLine error = parse_text(lines[1]);
  EXPECT_EQ(error.level, "error");
  EXPECT_EQ(error.message, "cannot start");
  EXPECT_EQ(error.fields.at("reason"), "Address already in use");
}

TEST(EventLog, TextConnectionLineHasEveryField) {
  TempDir dir;
  FakeClock clock;
  const ConnectionEvent event = sample_event();
  ConnectionEvent unknown{"connection", std::nullopt, CloseReport{}};
  unknown.report.outcome = Outcome::drain_timeout;
  {
    EventLog log(dir / "log", LogFormat::text, 100, clock.clock());
    log.connection(event);
    log.connection(unknown);
  }
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 2u);
  const TextLine line = parse_text(lines[0]);
  EXPECT_EQ(line.time, "2026-12-03T07:05:01.123Z");
  EXPECT_EQ(line.level, "warn");
  EXPECT_EQ(line.message, "connection ended");
  const std::map<std::string, std::string> expected = {
      {"role", "client"},
      {"peer", "192.0.2.7:40312"},
      {"outcome", "peer_reset"},
      {"error", "ECONNRESET"},
      {"bytes_sent", "1234"},
      {"bytes_unsent", "789"},
      {"bytes_discarded", "56"},
      {"open_ms", "1.500"},
      {"flush_ms", "2.346"},
      {"drain_ms", "0.000"},
      {"teardown_ms", "0.001"}};
  EXPECT_EQ(line.fields, expected);

  const TextLine second = parse_text(lines[1]);
  EXPECT_EQ(second.fields.at("role"), "connection");
  EXPECT_EQ(second.fields.at("peer"), "");
  EXPECT_EQ(second.fields.at("outcome"), "drain_timeout");
  EXPECT_EQ(second.fields.at("error"), "");
  EXPECT_EQ(second.fields.size(), expected.size());
}

TEST(EventLog, JsonLinesParseBack) {
  TempDir dir;
  FakeClock clock;
  const ConnectionEvent event = sample_event();
  {
    EventLog log(dir / "log", LogFormat::json, 100, clock.clock());
    log.info("listening", {{"address", "[::1]:8080"}, {"tricky", "a \"b\"\n"}});
    log.connection(event);
    log.upstream_error(SocketAddress::parse("127.0.0.1:5555"),
                       *SocketAddress::parse("127.0.0.1:9"), ECONNREFUSED);
    log.upstream_error(std::nullopt, *SocketAddress::parse("127.0.0.1:9"), 0);
  }
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 4u);
  for (const std::string& line : lines) {
    // The first three keys in this order, so that a person reading the file sees them first.
    EXPECT_EQ(line.rfind("{\"time\":\"2026-12-03T07:05:01.123Z\",\"level\":", 0), 0u) << line;
  }
  const auto info = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(info["level"], "info");
  EXPECT_EQ(info["msg"], "listening");
  EXPECT_EQ(info["address"], "[::1]:8080");
  EXPECT_EQ(info["tricky"], "a \"b\"\n");

  const auto connection = nlohmann::json::parse(lines[1]);
  EXPECT_EQ(connection.size(), 14u);  // time, level, msg and 11 fields
  EXPECT_EQ(connection["level"], "warn");
  EXPECT_EQ(connection["msg"], "connection ended");
  EXPECT_EQ(connection["role"], "client");
  EXPECT_EQ(connection["peer"], "192.0.2.7:40312");
  EXPECT_EQ(connection["outcome"], "peer_reset");
  EXPECT_EQ(connection["error"], "ECONNRESET");
  EXPECT_TRUE(connection["bytes_sent"].is_number_unsigned());
  EXPECT_EQ(connection["bytes_sent"], 1234u);
  EXPECT_EQ(connection["bytes_unsent"], 789u);
  EXPECT_EQ(connection["bytes_discarded"], 56u);
  EXPECT_DOUBLE_EQ(connection["open_ms"].get<double>(), 1.5);
  EXPECT_DOUBLE_EQ(connection["flush_ms"].get<double>(), 2.346);
  EXPECT_DOUBLE_EQ(connection["drain_ms"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(connection["teardown_ms"].get<double>(), 0.001);

  const auto refused = nlohmann::json::parse(lines[2]);
  EXPECT_EQ(refused["level"], "error");
  EXPECT_EQ(refused["msg"], "upstream connect failed");
  EXPECT_EQ(refused["client"], "127.0.0.1:5555");
  EXPECT_EQ(refused["upstream"], "127.0.0.1:9");
  EXPECT_EQ(refused["error"], "ECONNREFUSED");
  const auto timeout = nlohmann::json::parse(lines[3]);
  EXPECT_EQ(timeout["client"], "");
  EXPECT_EQ(timeout["error"], "timeout");
}

TEST(EventLog, RealClockTimeIsRfc3339WithMilliseconds) {
  TempDir dir;
  {
    EventLog log(dir / "log", LogFormat::text);
    log.info("started");
  }
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 1u);
  // 'd' stands for a digit; every other character must be itself.
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  const std::string time = parse_text(lines[0]).time;
  bool matches = time.size() == kShape.size();
  for (std::size_t i = 0; matches && i < kShape.size(); ++i) {
    matches = kShape[i] == 'd' ? time[i] >= '0' && time[i] <= '9' : time[i] == kShape[i];
  }
  EXPECT_TRUE(matches) << lines[0];
}

TEST(EventLog, RateLimitCountsWhatItDrops) {
  TempDir dir;
  FakeClock clock;
  constexpr std::uint32_t kLimit = 10;
  EventLog log(dir / "log", LogFormat::text, kLimit, clock.clock());
  for (std::uint32_t i = 0; i < kLimit + 5; ++i) log.connection(sample_event());
  EXPECT_EQ(read_lines(dir / "log").size(), kLimit);
  // Start-up and error lines are never dropped, and do not count against connection lines;
  // the first one written says what was dropped before it.
  for (int i = 0; i < 3; ++i) log.error("upstream unreachable");
  std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), kLimit + 4);
  const TextLine suppressed = parse_text(lines[kLimit]);
  EXPECT_EQ(suppressed.level, "warn");
  EXPECT_EQ(suppressed.message, "suppressed 5 connection lines");
  EXPECT_EQ(suppressed.fields.at("count"), "5");
  for (std::size_t i = kLimit + 1; i < lines.size(); ++i) {
    EXPECT_EQ(parse_text(lines[i]).message, "upstream unreachable");
  }

  // Still the same second: dropped again, the proxy's upstream errors too (one per refused
  // client while an upstream is down). The next second: the count, then the line.
  log.connection(sample_event());
  log.upstream_error(std::nullopt, *SocketAddress::parse("127.0.0.1:9"), ECONNREFUSED);
  EXPECT_EQ(read_lines(dir / "log").size(), kLimit + 4);
  clock.now += 1s;
  log.connection(sample_event());
  lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), kLimit + 6);
  EXPECT_EQ(parse_text(lines[kLimit + 4]).message, "suppressed 2 connection lines");
  EXPECT_EQ(parse_text(lines[kLimit + 4]).time, "2026-12-03T07:05:02.123Z");
  EXPECT_EQ(parse_text(lines[kLimit + 5]).message, "connection ended");
}

TEST(EventLog, FlushWritesThePendingCount) {
  TempDir dir;
  FakeClock clock;
  EventLog log(dir / "log", LogFormat::json, 3, clock.clock());
  for (int i = 0; i < 8; ++i) log.connection(sample_event());
  log.flush();
  log.flush();  // nothing pending any more: no second line
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 4u);
  const auto suppressed = nlohmann::json::parse(lines[3]);
  EXPECT_EQ(suppressed["msg"], "suppressed 5 connection lines");
  EXPECT_EQ(suppressed["count"], 5u);
}

TEST(EventLog, DestructorWritesThePendingCount) {
  TempDir dir;
  FakeClock clock;
  {
    EventLog log(dir / "log", LogFormat::text, 1, clock.clock());
    for (int i = 0; i < 3; ++i) log.connection(sample_event());
  }
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(parse_text(lines[1]).message, "suppressed 2 connection lines");
}

TEST(EventLog, ReopenAfterRenameWritesToTheNewFile) {
  TempDir dir;
  FakeClock clock;
  EventLog log(dir / "log", LogFormat::text, 100, clock.clock());
  log.info("before rotation");
  std::filesystem::rename(dir / "log", dir / "log.1");  // what logrotate does
  log.info("after rename, before reopen");
  log.reopen();
  log.info("after reopen");
  const std::vector<std::string> old_lines = read_lines(dir / "log.1");
  ASSERT_EQ(old_lines.size(), 2u);
  EXPECT_EQ(parse_text(old_lines[0]).message, "before rotation");
  EXPECT_EQ(parse_text(old_lines[1]).message, "after rename, before reopen");
  const std::vector<std::string> new_lines = read_lines(dir / "log");
  ASSERT_EQ(new_lines.size(), 1u);
  EXPECT_EQ(parse_text(new_lines[0]).message, "after reopen");
}

TEST(EventLog, FailedReopenKeepsTheOldFileAndSaysWhy) {
  TempDir dir;
  std::filesystem::create_directory(dir / "logs");
  FakeClock clock;
  EventLog log(dir / "logs/log", LogFormat::text, 100, clock.clock());
  log.info("first");
  // The directory is gone from under the path: the path cannot be opened again.
  std::filesystem::rename(dir / "logs", dir / "moved");
  log.reopen();
  log.info("second");
  const std::vector<std::string> lines = read_lines(dir / "moved/log");
  ASSERT_EQ(lines.size(), 3u);
  const TextLine failed = parse_text(lines[1]);
  EXPECT_EQ(failed.level, "error");
  EXPECT_EQ(failed.fields.at("path"), dir / "logs/log");
  EXPECT_EQ(failed.fields.at("error"), "ENOENT");
  EXPECT_EQ(parse_text(lines[2]).message, "second");
  EXPECT_FALSE(std::filesystem::exists(dir / "logs/log"));
}

TEST(EventLog, AppendsToAnExistingFileAndCreatesWithMode0644) {
  TempDir dir;
  {
    std::ofstream(dir / "old") << "a line from before\n";
    EventLog log(dir / "old", LogFormat::text);
    log.info("appended");
  }
  const std::vector<std::string> lines = read_lines(dir / "old");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "a line from before");

  const mode_t mask = umask(022);
  { EventLog log(dir / "new", LogFormat::text); }
  umask(mask);
  struct stat status {};
  ASSERT_EQ(stat((dir / "new").c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0644u);
}

TEST(EventLog, DashWritesToStandardError) {
  TempDir dir;
  fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  ASSERT_GE(saved, 0);
  const int capture = open((dir / "stderr").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(capture, 0);
  dup2(capture, STDERR_FILENO);
  close(capture);
  {
    EventLog log("-", LogFormat::json);
    log.info("to stderr");
    log.reopen();  // nothing to reopen; standard error stays open
    log.info("still stderr");
  }
  dup2(saved, STDERR_FILENO);
  close(saved);
  const std::vector<std::string> lines = read_lines(dir / "stderr");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["msg"], "to stderr");
  EXPECT_EQ(nlohmann::json::parse(lines[1])["msg"], "still stderr");
  EXPECT_NE(fcntl(STDERR_FILENO, F_GETFD), -1);  // not closed by the log
}

TEST(EventLog, UnopenablePathIsAUsageErrorNamingTheFlag) {
  TempDir dir;
  const std::string path = dir / "no-such-directory/log";
  try {
    EventLog log(path, LogFormat::text);
    FAIL() << "opened " << path;
  } catch (const UsageError& error) {
    EXPECT_EQ(std::string(error.what()),
              "--log: cannot open " + path + ": No such file or directory");
  }
}

TEST(EventLog, DisabledAndMovedFromLogsWriteNothing) {
  EventLog disabled;
  EXPECT_FALSE(disabled.enabled());
  disabled.info("nothing");
  disabled.connection(sample_event());
  disabled.upstream_error(std::nullopt, *SocketAddress::parse("127.0.0.1:9"), 0);
  disabled.reopen();
  disabled.flush();

  TempDir dir;
  EventLog log(dir / "log", LogFormat::text);
  EventLog moved = std::move(log);
  EXPECT_FALSE(log.enabled());  // NOLINT(bugprone-use-after-move): a moved-from log is disabled
  log.info("lost");
  EXPECT_TRUE(moved.enabled());
  moved.info("kept");
  disabled = std::move(moved);
  disabled.info("kept too");
  const std::vector<std::string> lines = read_lines(dir / "log");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(parse_text(lines[0]).message, "kept");
  EXPECT_EQ(parse_text(lines[1]).message, "kept too");
}

// Several threads at once, in both formats, with lines long enough that a torn write would show:
// every line is whole, and each thread's lines are all there, in its order.
TEST(EventLog, ThreadsNeverInterleave) {
  constexpr int kThreads = 4;
  constexpr int kLines = 300;
  const std::string padding(3000, 'x');
  for (const LogFormat format : {LogFormat::text, LogFormat::json}) {
    TempDir dir;
    {
      EventLog log(dir / "log", format, 0);  // 0: no rate limit
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          for (int i = 0; i < kLines; ++i) {
            if (i % 2 == 0) {
              log.info("tick", {{"thread", std::to_string(t)},
                                {"sequence", std::to_string(i)},
                                {"padding", padding}});
            } else {
              ConnectionEvent event = sample_event();
              event.report.bytes_sent = static_cast<std::uint64_t>(t) * 1'000'000 + i;
              log.connection(event);
            }
          }
        });
      }
      for (std::thread& thread : threads) thread.join();
    }
    const std::vector<std::string> lines = read_lines(dir / "log");
    ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kLines));
    std::vector<int> next(kThreads, 0);
    for (const std::string& line : lines) {
      int thread = 0;
      int sequence = 0;
      if (format == LogFormat::json) {
        const auto object = nlohmann::json::parse(line);  // throws on a torn line
        if (object["msg"] == "tick") {
          EXPECT_EQ(object["padding"], padding);
          thread = std::stoi(object["thread"].get<std::string>());
          sequence = std::stoi(object["sequence"].get<std::string>());
        } else {
          const auto sent = object["bytes_sent"].get<std::uint64_t>();
          thread = static_cast<int>(sent / 1'000'000);
          sequence = static_cast<int>(sent % 1'000'000);
        }
      } else {
        const TextLine parsed = parse_text(line);
        if (parsed.message == "tick") {
          EXPECT_EQ(parsed.fields.at("padding"), padding);
          thread = std::stoi(parsed.fields.at("thread"));
          sequence = std::stoi(parsed.fields.at("sequence"));
        } else {
          ASSERT_EQ(parsed.message, "connection ended") << line;
          const std::uint64_t sent = std::stoull(parsed.fields.at("bytes_sent"));
          thread = static_cast<int>(sent / 1'000'000);
          sequence = static_cast<int>(sent % 1'000'000);
        }
      }
      ASSERT_GE(thread, 0);
      ASSERT_LT(thread, kThreads);
      EXPECT_EQ(sequence, next[thread]) << "thread " << thread;
      next[thread] = sequence + 1;
    }
    EXPECT_EQ(next, std::vector<int>(kThreads, kLines));
  }
}

// The address remembered at accept, on the manager's thread as serve does it, is the client's
// own address; it is given once, and only for that very connection.
TEST(PeerBook, RemembersTheAcceptedPeerOverTcp) {
  Config config;
  config.max_connections = 64;
  Responder responder(config);
  PeerBook book(config.max_connections);
  std::vector<ConnectionId> accepted;
  responder.on_accept_hook = [&](ConnectionId id) {
    book.remember(id, responder.manager().fd(id));
    accepted.push_back(id);
  };
  const int client = connect_client(responder.address);
  ASSERT_GE(client, 0);
  const std::optional<SocketAddress> client_address = SocketAddress::local_of(client);
  ASSERT_TRUE(client_address);
  ASSERT_TRUE(send_all(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::thread reader([client] {
    (void)read_to_end(client);
    ::shutdown(client, SHUT_WR);  // our EOF ends the server's drain
  });
  const bool closed = responder.run_until_closed(1);
  reader.join();
  ::close(client);
  ASSERT_TRUE(closed);
  ASSERT_EQ(accepted.size(), 1u);
  const ConnectionId id = responder.reports[0].first;
  ASSERT_EQ(id, accepted[0]);

  const ConnectionId other_generation{id.slot, id.generation + 1};
  EXPECT_FALSE(book.take(other_generation));  // not this connection's: kept for the right one
  const std::optional<SocketAddress> peer = book.take(id);
  ASSERT_TRUE(peer);
  EXPECT_EQ(peer->to_string(), client_address->to_string());
  EXPECT_EQ(peer->to_string().rfind("127.0.0.1:", 0), 0u);
  EXPECT_FALSE(book.take(id));  // forgotten once taken
}

TEST(PeerBook, NothingForAnUnconnectedSocketOrASlotOutOfRange) {
  PeerBook book(4);
  const int unconnected = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(unconnected, 0);
  book.remember({1, 1}, unconnected);  // getpeername fails: ENOTCONN
  EXPECT_FALSE(book.take({1, 1}));
  book.remember({4, 1}, unconnected);  // beyond max_connections: ignored, not a crash
  EXPECT_FALSE(book.take({4, 1}));
  ::close(unconnected);
}

}  // namespace
}  // namespace ringlinger::tools
