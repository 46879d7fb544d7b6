// `--metrics`: the Prometheus text (names checked, label values escaped, integers exact, every
// outcome and state present, the close-latency histogram cumulative up to +Inf), judged also by
// the Prometheus project's own parser (tests/tcp/parse_metrics.py); and the HTTP server over real
// TCP: GET and HEAD /metrics, 404, 405, 500 when render() throws, a stalled scraper that does not
// hold up the next one, a graceful close, and a stop while a scraper is connected.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "metrics_server.hpp"
#include "prometheus.hpp"
#include "tcp_support.hpp"

namespace ringlinger::tools {
namespace {

using namespace std::chrono_literals;
using testing_support::connect_client;
using testing_support::loopback_any_port;

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(PrometheusText, WritesHelpTypeAndSamplesWithEscapedLabelValues) {
  PrometheusText out;
  out.family("demo_total", "counter", "Back\\slash and\nnew line.");
  out.sample(3, {{"path", "C:\\dir"}, {"quote", "say \"hi\"\nbye"}});
  out.sample(4);
  EXPECT_EQ(out.text(),
            "# HELP demo_total Back\\\\slash and\\nnew line.\n"
            "# TYPE demo_total counter\n"
            "demo_total{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\\nbye\"} 3\n"
            "demo_total 4\n");
}

TEST(PrometheusText, PrintsIntegersExactlyAndOtherValuesAsPrometheusSpellsThem) {
  EXPECT_EQ(prometheus_number(0), "0");
  EXPECT_EQ(prometheus_number(12), "12");
  EXPECT_EQ(prometheus_number(-7), "-7");
  EXPECT_EQ(prometheus_number(1e15), "1000000000000000");
  EXPECT_EQ(prometheus_number(9007199254740992.0), "9007199254740992");  // 2^53
  EXPECT_EQ(prometheus_number(9007199254740991.0), "9007199254740991");
  EXPECT_EQ(prometheus_number(0.0025), "0.0025");
  EXPECT_EQ(prometheus_number(1.5), "1.5");
  EXPECT_EQ(prometheus_number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(prometheus_number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(prometheus_number(std::nan("")), "NaN");
  // Beyond 2^53 and below 1: whatever the form, it reads back as the same double.
  for (const double value : {1e20, 1.8446744073709552e19, 1e-9, 0.1, 123.456}) {
    EXPECT_EQ(std::stod(prometheus_number(value)), value) << prometheus_number(value);
  }
}

TEST(PrometheusText, RefusesBadNamesAndTypes) {
  PrometheusText out;
  EXPECT_THROW(out.sample(1), std::logic_error);  // no family yet
  EXPECT_THROW(out.family("1st", "gauge", "x"), std::logic_error);
  EXPECT_THROW(out.family("a-b", "gauge", "x"), std::logic_error);
  EXPECT_THROW(out.family("", "gauge", "x"), std::logic_error);
  EXPECT_THROW(out.family("ok", "summary", "x"), std::logic_error);
  out.family("ns:name_1", "gauge", "colons are allowed in metric names");
  EXPECT_THROW(out.sample(1, {{"a:b", "v"}}), std::logic_error);  // but not in label names
  EXPECT_THROW(out.sample(1, {{"9a", "v"}}), std::logic_error);
  EXPECT_THROW(out.sample(1, {}, "_bad-suffix"), std::logic_error);
  out.sample(1, {{"_ok9", "v"}}, "_2");
  // A refused call writes nothing, not half a line.
  EXPECT_EQ(out.text(),
            "# HELP ns:name_1 colons are allowed in metric names\n"
            "# TYPE ns:name_1 gauge\n"
            "ns:name_1_2{_ok9=\"v\"} 1\n");
}

// Every field a different value, so that a field printed under another's name shows.
Stats known_stats() {
  Stats stats;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) stats.outcomes[i] = 100 + i;
  stats.outcomes[static_cast<std::size_t>(Outcome::send_error)] = 0;  // a zero is printed too
  for (std::size_t i = 0; i < kStateCount; ++i) stats.connections_in_state[i] = 10 * i + 1;
  stats.peak_live_connections = 777;
  stats.connections_accepted = 5001;
  stats.accept_errors = 3;
  stats.bytes_sent = 9007199254740992;  // 2^53: still exact
  stats.bytes_received = 123456789;
  stats.bytes_discarded = 4242;
  stats.drain_idle_extensions = 17;
  stats.send_timeout_extensions = 19;
  stats.syscalls = 60001;
  stats.enter_calls = 50001;
  stats.cq_overflows = 2;
  stats.stale_completions = 1;
  for (std::size_t i = 0; i < kCloseLatencyBuckets; ++i) stats.close_latency_counts[i] = i + 1;
  stats.close_latency_sum_ns = 1'500'000'000;  // 1.5 s
  return stats;
}

TEST(LibraryMetrics, EveryOutcomeAndStateAndACumulativeHistogram) {
  PrometheusText out;
  add_library_metrics(out, known_stats());
  const std::string& text = out.text();
  EXPECT_TRUE(has_line(text, "# TYPE ringlinger_closes_total counter"));
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    const auto outcome = static_cast<Outcome>(i);
    const std::uint64_t expected = outcome == Outcome::send_error ? 0 : 100 + i;
    EXPECT_TRUE(has_line(text, "ringlinger_closes_total{outcome=\"" + std::string(to_string(outcome)) +
                                   "\"} " + std::to_string(expected)))
        << to_string(outcome);
  }
  for (std::size_t i = 1; i < kStateCount; ++i) {
    const std::string state(to_string(static_cast<State>(i)));
    EXPECT_TRUE(has_line(text, "ringlinger_connections{state=\"" + state + "\"} " +
                                   std::to_string(10 * i + 1)))
        << state;
  }
  EXPECT_EQ(text.find("state=\"free\""), std::string::npos);
  EXPECT_TRUE(has_line(text, "ringlinger_connection_slots_free 1"));
  EXPECT_TRUE(has_line(text, "ringlinger_connections_peak 777"));
  EXPECT_TRUE(has_line(text, "# TYPE ringlinger_close_duration_seconds histogram"));
  // Buckets i = 0..14 hold i + 1 each: the cumulative count up to bucket i is (i+1)(i+2)/2.
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_bucket{le=\"0.001\"} 1"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_bucket{le=\"0.0025\"} 3"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_bucket{le=\"1\"} 55"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_bucket{le=\"30\"} 105"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_bucket{le=\"+Inf\"} 120"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_sum 1.5"));
  EXPECT_TRUE(has_line(text, "ringlinger_close_duration_seconds_count 120"));
  EXPECT_TRUE(has_line(text, "ringlinger_bytes_sent_total 9007199254740992"));
  EXPECT_TRUE(has_line(text, "ringlinger_timeout_extensions_total{timer=\"drain_idle\"} 17"));
  EXPECT_TRUE(has_line(text, "ringlinger_timeout_extensions_total{timer=\"send\"} 19"));
}

// tests/tcp/parse_metrics.py, next to this file (PARSE_METRICS_PY overrides). __FILE__ is
// relative to the build directory, the parent of this program's directory (build/tests/).
std::string parse_metrics_script() {
  if (const char* path = std::getenv("PARSE_METRICS_PY")) return path;
  std::filesystem::path source = __FILE__;
  if (source.is_relative()) {
    source = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / source;
  }
  return (source.parent_path() / "parse_metrics.py").string();
}

// Runs parse_metrics.py with `argument` (a URL, or "-" for `input` on stdin); its JSON.
nlohmann::json parse_with_prometheus_client(const std::string& argument,
                                            const std::string& input = {}) {
  const std::filesystem::path input_file =
      std::filesystem::temp_directory_path() / ("metrics_test_" + std::to_string(::getpid()));
  std::ofstream(input_file) << input;
  const std::string command =
      "python3 '" + parse_metrics_script() + "' '" + argument + "' < '" + input_file.string() + "'";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  if (pipe == nullptr) return nullptr;
  char buffer[4096];
  while (const std::size_t count = std::fread(buffer, 1, sizeof(buffer), pipe)) {
    output.append(buffer, count);
  }
  const int status = ::pclose(pipe);
  std::filesystem::remove(input_file);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  EXPECT_NE(code, 127) << "python3 is missing: install python3 and python3-prometheus-client";
  EXPECT_NE(code, 3) << "install python3-prometheus-client (apt-get install -y "
                        "python3-prometheus-client)";
  EXPECT_EQ(code, 0) << command << "\n" << output;
  return code == 0 ? nlohmann::json::parse(output) : nlohmann::json();
}

// The parsed value of the sample `name` with `labels`; NaN when there is none, or more than one.
double parsed_value(const nlohmann::json& parsed, const std::string& name,
                    const nlohmann::json& labels = nlohmann::json::object()) {
  double value = std::nan("");
  int found = 0;
  for (const auto& sample : parsed["samples"]) {
    if (sample["name"] == name && sample["labels"] == labels) {
      value = sample["value"].get<double>();
      ++found;
    }
  }
  return found == 1 ? value : std::nan("");
}

std::string parsed_type(const nlohmann::json& parsed, const std::string& family) {
  for (const auto& sample : parsed["samples"]) {
    if (sample["family"] == family) return sample["type"];
  }
  return "(no family " + family + ")";
}

void expect_known_stats(const nlohmann::json& parsed) {
  ASSERT_TRUE(parsed.contains("samples"));
  EXPECT_EQ(parsed_type(parsed, "ringlinger_closes"), "counter");
  EXPECT_EQ(parsed_type(parsed, "ringlinger_connections"), "gauge");
  EXPECT_EQ(parsed_type(parsed, "ringlinger_close_duration_seconds"), "histogram");
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    const auto outcome = static_cast<Outcome>(i);
    EXPECT_EQ(parsed_value(parsed, "ringlinger_closes_total", {{"outcome", to_string(outcome)}}),
              outcome == Outcome::send_error ? 0.0 : static_cast<double>(100 + i))
        << to_string(outcome);
  }
  for (std::size_t i = 1; i < kStateCount; ++i) {
    const auto state = static_cast<State>(i);
    EXPECT_EQ(parsed_value(parsed, "ringlinger_connections", {{"state", to_string(state)}}),
              static_cast<double>(10 * i + 1))
        << to_string(state);
  }
  double cumulative = 0;
  for (std::size_t i = 0; i < kCloseLatencyBuckets; ++i) {
    cumulative += static_cast<double>(i + 1);
    const std::string le = i < kCloseLatencyBounds.size()
                               ? prometheus_number(kCloseLatencyBounds[i].count() / 1e9)
                               : "+Inf";
    EXPECT_EQ(parsed_value(parsed, "ringlinger_close_duration_seconds_bucket", {{"le", le}}),
              cumulative)
        << le;
  }
  EXPECT_EQ(parsed_value(parsed, "ringlinger_close_duration_seconds_count"), 120.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_close_duration_seconds_sum"), 1.5);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_bytes_sent_total"), 9007199254740992.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_bytes_received_total"), 123456789.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_bytes_discarded_total"), 4242.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_connections_accepted_total"), 5001.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_accept_errors_total"), 3.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_syscalls_total"), 60001.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_io_uring_enter_calls_total"), 50001.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_cq_overflows_total"), 2.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_stale_completions_total"), 1.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_connection_slots_free"), 1.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_connections_peak"), 777.0);
  EXPECT_EQ(parsed_value(parsed, "ringlinger_timeout_extensions_total", {{"timer", "send"}}), 19.0);
}

TEST(LibraryMetrics, ThePrometheusParserReadsTheValuesBack) {
  PrometheusText out;
  add_library_metrics(out, known_stats());
  expect_known_stats(parse_with_prometheus_client("-", out.text()));
}

// What a scraper got: the status line, the head, the body, and how the connection ended.
struct Reply {
  std::string status;
  std::string head;
  std::string body;
  bool clean_eof = false;
  int error = 0;
  std::string header(const std::string& name) const {
    const auto at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos) return "(no " + name + ")";
    const auto start = at + name.size() + 4;
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

Reply split_reply(const testing_support::ReadResult& read) {
  Reply reply;
  reply.clean_eof = read.clean_eof;
  reply.error = read.error;
  const auto head_end = read.bytes.find("\r\n\r\n");
  reply.head = read.bytes.substr(0, head_end == std::string::npos ? read.bytes.size() : head_end + 2);
  reply.status = reply.head.substr(0, reply.head.find("\r\n"));
  if (head_end != std::string::npos) reply.body = read.bytes.substr(head_end + 4);
  return reply;
}

// Sends `request` and reads until the server closes (a generous bound, never reached).
Reply scrape(const SocketAddress& address, std::string_view request, int receive_buffer = 0) {
  const int fd = connect_client(address, receive_buffer);
  EXPECT_GE(fd, 0);
  testing_support::set_receive_timeout(fd, 30s);
  EXPECT_TRUE(testing_support::send_all(fd, request));
  const Reply reply = split_reply(testing_support::read_to_end(fd));
  ::close(fd);
  return reply;
}

std::string sample_text() {
  PrometheusText out;
  out.family("demo_requests_total", "counter", "Requests.");
  out.sample(42, {{"code", "200"}});
  return out.text();
}

TEST(MetricsServer, AnswersGetAndHeadOnMetrics) {
  MetricsServer server({loopback_any_port()}, sample_text);
  ASSERT_EQ(server.bound().size(), 1u);
  ASSERT_NE(server.bound()[0].port(), 0);
  const Reply get = scrape(server.bound()[0], "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(get.status, "HTTP/1.1 200 OK");
  EXPECT_EQ(get.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(get.header("Content-Length"), std::to_string(sample_text().size()));
  EXPECT_EQ(get.header("Connection"), "close");
  EXPECT_EQ(get.body, sample_text());
  EXPECT_TRUE(get.clean_eof);
  EXPECT_EQ(get.error, 0);

  const Reply head = scrape(server.bound()[0], "HEAD /metrics HTTP/1.0\r\n\r\n");
  EXPECT_EQ(head.status, "HTTP/1.1 200 OK");
  EXPECT_EQ(head.header("Content-Length"), std::to_string(sample_text().size()));
  EXPECT_EQ(head.body, "");
  EXPECT_TRUE(head.clean_eof);

  // A query string is still /metrics; a bare LF line end is still a head.
  EXPECT_EQ(scrape(server.bound()[0], "GET /metrics?x=1 HTTP/1.1\n\n").body, sample_text());
}

TEST(MetricsServer, AnswersOtherPathsWith404AndOtherMethodsWith405) {
  MetricsServer server({loopback_any_port()}, sample_text);
  const SocketAddress& address = server.bound()[0];
  EXPECT_EQ(scrape(address, "GET / HTTP/1.1\r\n\r\n").status, "HTTP/1.1 404 Not Found");
  EXPECT_EQ(scrape(address, "GET /metricsx HTTP/1.1\r\n\r\n").status, "HTTP/1.1 404 Not Found");
  const Reply post = scrape(address, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status, "HTTP/1.1 405 Method Not Allowed");
  EXPECT_EQ(post.header("Allow"), "GET, HEAD");
  EXPECT_TRUE(post.clean_eof);
  EXPECT_EQ(scrape(address, "garbage\r\n\r\n").status, "HTTP/1.1 400 Bad Request");
  EXPECT_EQ(scrape(address, "GET /metrics HTTP/1.1\r\n" + std::string(9000, 'x')).status,
            "HTTP/1.1 431 Request Header Fields Too Large");
}

TEST(MetricsServer, AnswersA500WhenRenderThrowsAndKeepsServing) {
  std::atomic<bool> fail{true};
  MetricsServer server({loopback_any_port()}, [&]() -> std::string {
    if (fail) throw std::runtime_error("the counters are not ready");
    return sample_text();
  });
  const Reply failed = scrape(server.bound()[0], "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(failed.status, "HTTP/1.1 500 Internal Server Error");
  EXPECT_EQ(failed.body, "the counters are not ready\n");
  EXPECT_TRUE(failed.clean_eof);
  fail = false;
  EXPECT_EQ(scrape(server.bound()[0], "GET /metrics HTTP/1.1\r\n\r\n").body, sample_text());
}

TEST(MetricsServer, ServesEveryAddressAndNamesTheOneItCannotBind) {
  MetricsServer server({loopback_any_port(), loopback_any_port()}, sample_text);
  ASSERT_EQ(server.bound().size(), 2u);
  EXPECT_NE(server.bound()[0].port(), server.bound()[1].port());
  for (const SocketAddress& address : server.bound()) {
    EXPECT_EQ(scrape(address, "GET /metrics HTTP/1.1\r\n\r\n").body, sample_text());
  }
  const std::string taken = server.bound()[0].to_string();
  try {
    MetricsServer second({*SocketAddress::parse(taken)}, sample_text);
    ADD_FAILURE() << "bound " << taken << " twice";
  } catch (const std::system_error& error) {
    EXPECT_EQ(error.code(), std::errc::address_in_use);
    EXPECT_EQ(std::string(error.what()).rfind("--metrics " + taken + ": ", 0), 0u) << error.what();
  }
}

// A scraper that sends half a head and stalls holds only its own connection: the next scraper is
// answered while the first still waits, and the first gets a 408 at its bound, closed gracefully.
TEST(MetricsServer, AStalledScraperDoesNotHoldUpTheNext) {
  MetricsServer server({loopback_any_port()}, sample_text);
  const int stalled = connect_client(server.bound()[0]);
  ASSERT_GE(stalled, 0);
  ASSERT_TRUE(testing_support::send_all(stalled, "GET /metrics HTTP/1.1\r\nHost: x\r\n"));
  EXPECT_EQ(scrape(server.bound()[0], "GET /metrics HTTP/1.1\r\n\r\n").body, sample_text());
  char byte;
  EXPECT_EQ(::recv(stalled, &byte, 1, MSG_DONTWAIT), -1) << "the stalled scraper was answered";
  EXPECT_EQ(errno, EAGAIN);
  testing_support::set_receive_timeout(stalled, 60s);
  const Reply timed_out = split_reply(testing_support::read_to_end(stalled));
  ::close(stalled);
  EXPECT_EQ(timed_out.status, "HTTP/1.1 408 Request Timeout");
  EXPECT_TRUE(timed_out.clean_eof);
  EXPECT_EQ(timed_out.error, 0);
}

// Bytes the scraper sends beyond its head are read and discarded before the close: a close with
// them unread would reset the connection, and the reset throws away the part of the response
// still in our send buffer (a big response to a scraper with a small receive buffer).
TEST(MetricsServer, ClosesGracefullyWhenTheScraperSentMoreThanItsHead) {
  std::string big;
  while (big.size() < 4 * 1024 * 1024) big += sample_text();
  MetricsServer server({loopback_any_port()}, [&] { return big; });
  const Reply reply = scrape(server.bound()[0],
                             "GET /metrics HTTP/1.1\r\n\r\n" + std::string(32 * 1024, 'x'), 16384);
  EXPECT_EQ(reply.body.size(), big.size());
  EXPECT_TRUE(reply.body == big);
  EXPECT_TRUE(reply.clean_eof);
  EXPECT_EQ(reply.error, 0);
}

TEST(MetricsServer, StopsWhileAScraperIsConnected) {
  std::optional<MetricsServer> server;
  server.emplace(std::vector{loopback_any_port()}, sample_text);
  const int stalled = connect_client(server->bound()[0]);
  ASSERT_GE(stalled, 0);
  ASSERT_TRUE(testing_support::send_all(stalled, "GET /met"));
  // Connected and half-way through a head: the destructor wakes the thread, which closes it.
  EXPECT_EQ(scrape(server->bound()[0], "GET /metrics HTTP/1.1\r\n\r\n").body, sample_text());
  server.reset();
  testing_support::set_receive_timeout(stalled, 60s);
  const auto read = testing_support::read_to_end(stalled);
  ::close(stalled);
  EXPECT_EQ(read.bytes, "");
  EXPECT_TRUE(read.clean_eof);
}

// The whole path a Prometheus server takes: HTTP from a MetricsServer, parsed by the Prometheus
// project's parser (parse_metrics.py fetching the URL).
TEST(MetricsServer, ThePrometheusParserReadsAScrape) {
  MetricsServer server({loopback_any_port()}, [] {
    PrometheusText out;
    add_library_metrics(out, known_stats());
    return out.text();
  });
  expect_known_stats(
      parse_with_prometheus_client("http://" + server.bound()[0].to_string() + "/metrics"));
}

}  // namespace
}  // namespace ringlinger::tools
