// The tools' building blocks: the fast payload check agrees with the byte-by-byte definition at
// any offset and finds the first corrupt byte; the request head reader handles heads split
// anywhere, refuses heads over 64 KiB and malformed request lines; unit parsing refuses
// ambiguous values; and the `ringlinger` program exits with 2 and names the flag on bad input.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "child_process.hpp"
#include "cli_units.hpp"
#include "commands.hpp"
#include "deadline_fifo.hpp"
#include "http.hpp"
#include "ringlinger/probe.hpp"
#include "ringlinger/version.h"
#include "tcp_support.hpp"

#include <nlohmann/json.hpp>

namespace ringlinger::tools {
namespace {

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

TEST(Payload, FastCheckAgreesWithTheDefinitionAtEveryKindOfOffset) {
  std::mt19937_64 random(42);
  for (int trial = 0; trial < 200; ++trial) {
    const std::uint64_t offset = random() % 1'000'000;
    const std::size_t length = random() % 20'000;
    std::string expected(length, '\0');
    for (std::size_t i = 0; i < length; ++i) expected[i] = payload_byte(offset + i);
    EXPECT_EQ(first_payload_mismatch(expected, offset), length);
    if (length == 0) continue;
    std::string corrupt = expected;
    const std::size_t at = random() % length;
    corrupt[at] = static_cast<char>(corrupt[at] ^ 0x20);
    EXPECT_EQ(first_payload_mismatch(corrupt, offset), at) << "offset " << offset;
    // Shifted by one: not the payload at this offset.
    EXPECT_LT(first_payload_mismatch(expected, offset + 1), length);
  }
}

TEST(Payload, ResponseCarriesTheHeadAndThePayload) {
  const std::string response = make_response(100'000);
  const auto head_end = response.find("\r\n\r\n") + 4;
  EXPECT_NE(response.find("Content-Length: 100000\r\n"), std::string::npos);
  EXPECT_EQ(response.size() - head_end, 100'000u);
  EXPECT_EQ(first_payload_mismatch(std::string_view(response).substr(head_end), 0), 100'000u);
}

TEST(HeadReader, CompletesWhereverTheHeadIsSplit) {
  const std::string request = make_request(1000);
  const std::size_t head_size = request.find("\r\n\r\n") + 4;
  for (std::size_t split = 1; split < head_size + 10; ++split) {
    HeadReader reader;
    EXPECT_EQ(reader.feed(bytes_of(std::string_view(request).substr(0, split))),
              split >= head_size ? HeadReader::Status::complete : HeadReader::Status::incomplete)
        << "split at " << split;
    EXPECT_EQ(reader.feed(bytes_of(std::string_view(request).substr(split))),
              HeadReader::Status::complete);
  }
}

// The head's end is found wherever it falls in the 16-byte rounds of the search (taken two at a
// time, and a last one alone) and its scalar tail, with the body behind it or not, and whether the request line's '\n' (where the rounds
// stop looking for the first '\n') is in the same round as the end or an earlier one; one byte
// short of it, it is not; and the request line is read whatever the head's length (HEAD is told
// from GET).
TEST(HeadReader, FindsTheEndAtEveryOffsetOfTheSearch) {
  for (std::size_t padding = 0; padding < 100; ++padding) {
    for (const char* method : {"GET", "HEAD"}) {
      for (const char* fields : {"Host: x\r\n", ""}) {
        const std::string head = std::string(method) + " /" + std::string(padding, 'p') +
                                 " HTTP/1.1\r\n" + fields + "\r\n";
        for (const std::size_t body : {0, 1, 40}) {
          HeadReader whole;
          EXPECT_EQ(whole.feed(bytes_of(head + std::string(body, '\n'))),
                    HeadReader::Status::complete)
              << "padding " << padding << " body " << body;
          EXPECT_EQ(whole.head_method(), std::string_view(method) == "HEAD");
        }
        HeadReader short_of_it;
        EXPECT_EQ(short_of_it.feed(bytes_of(std::string_view(head).substr(0, head.size() - 1))),
                  HeadReader::Status::incomplete)
            << "padding " << padding;
      }
    }
  }
}

TEST(HeadReader, ByteByByteHeadCompletes) {
  const std::string request = make_request(0);
  HeadReader reader;
  for (char c : request) reader.feed(bytes_of(std::string_view(&c, 1)));
  EXPECT_EQ(reader.status(), HeadReader::Status::complete);
}

TEST(HeadReader, RefusesHeadsOverTheLimitAndMalformedRequestLines) {
  HeadReader big;
  const std::string huge_header = "GET / HTTP/1.1\r\nX: " + std::string(kMaxHeadBytes, 'a');
  EXPECT_EQ(big.feed(bytes_of(huge_header)), HeadReader::Status::too_large);
  HeadReader in_pieces;
  for (int i = 0; i < 100 && in_pieces.status() == HeadReader::Status::incomplete; ++i) {
    in_pieces.feed(bytes_of(std::string(1000, 'h')));
  }
  EXPECT_EQ(in_pieces.status(), HeadReader::Status::too_large);
  for (const char* bad : {"\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/2.0\r\n\r\n", "G(T / HTTP/1.1\r\n\r\n",
                          " / HTTP/1.1\r\n\r\n"}) {
    HeadReader reader;
    EXPECT_EQ(reader.feed(bytes_of(bad)), HeadReader::Status::malformed) << bad;
  }
  HeadReader ok;
  EXPECT_EQ(ok.feed(bytes_of("POST /a?b=c HTTP/1.0\r\nHost: x\r\n\r\n")), HeadReader::Status::complete);
}

// The common methods are matched four bytes at a time and any other by the token loop: both
// read a method the same way, however close a line comes to a common one.
TEST(HeadReader, ReadsCommonAndOtherMethodsAlike) {
  const std::vector<std::pair<std::string, HeadReader::Status>> lines = {
      {"GET / HTTP/1.1", HeadReader::Status::complete},
      {"PUT / HTTP/1.1", HeadReader::Status::complete},
      {"POST / HTTP/1.1", HeadReader::Status::complete},
      {"HEAD / HTTP/1.1", HeadReader::Status::complete},
      {"HEADS / HTTP/1.1", HeadReader::Status::complete},
      {"GETS / HTTP/1.1", HeadReader::Status::complete},
      {"POSTAL / HTTP/1.0", HeadReader::Status::complete},
      {"get / HTTP/1.1", HeadReader::Status::complete},
      {"DELETE / HTTP/1.1", HeadReader::Status::complete},
      {"HEAD/ HTTP/1.1", HeadReader::Status::malformed},
      {"POST\t/ HTTP/1.1", HeadReader::Status::malformed},
      {"GET  HTTP/1.1", HeadReader::Status::malformed},
      {"PUT\x7f/ HTTP/1.1", HeadReader::Status::malformed},
  };
  for (const auto& [line, status] : lines) {
    HeadReader reader;
    EXPECT_EQ(reader.feed(bytes_of(line + "\r\nHost: x\r\n\r\n")), status) << line;
    EXPECT_EQ(reader.head_method(), line.starts_with("HEAD ")) << line;
  }
}

TEST(Units, DurationsNeedAUnitAndSizesTakeBinarySuffixes) {
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("250ms")), 250u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("1.5s")), 1500u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("2m")), 120'000u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("2h")), 7'200'000u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("1.5h")), 5'400'000u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_ms("0")), 0u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_duration_us("200us")), 200u);
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_duration_ms("30")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_duration_ms("5 s")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_duration_ms("abc")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_duration_ms("100us")));
  EXPECT_EQ(std::get<std::uint64_t>(parse_bytes("16384")), 16384u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_bytes("16KiB")), 16384u);
  EXPECT_EQ(std::get<std::uint64_t>(parse_bytes("1M")), 1u << 20);
  EXPECT_EQ(std::get<std::uint64_t>(parse_bytes("1.5k")), 1536u);
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_bytes("1.3B")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_bytes("12 parsecs")));
}

// The flags' defaults are Config{}'s, spelled as flags: they parse back to the same values.
TEST(Units, DrainFlagDefaultsAreTheLibrarysDefaults) {
  const Config flags = to_config(DrainFlags{});
  const Config library;
  EXPECT_EQ(flags.drain_idle_timeout_ms, library.drain_idle_timeout_ms);
  EXPECT_EQ(flags.drain_timeout_ms, library.drain_timeout_ms);
  EXPECT_EQ(flags.drain_max_bytes, library.drain_max_bytes);
  EXPECT_EQ(flags.send_timeout_ms, library.send_timeout_ms);
  EXPECT_EQ(flags.orphan_timeout_ms, library.orphan_timeout_ms);
  EXPECT_EQ(flags.on_timeout, library.on_timeout);
  EXPECT_EQ(flags.shutdown_mode, library.shutdown_mode);
  EXPECT_EQ(flags.max_connections, library.max_connections);
  EXPECT_EQ(flags.batch_wait_us, library.batch_wait_us);
  EXPECT_EQ(DrainFlags{}.drain_max_bytes, "16MiB");
  EXPECT_EQ(DrainFlags{}.batch_wait, "2ms");
  EXPECT_EQ(bytes_flag_text(1536), "1536");
  EXPECT_EQ(duration_flag_text_us(250), "250us");
  EXPECT_EQ(duration_flag_text_ms(0), "0ms");
}

// Runs the program with `arguments`, capturing stderr into stdout; returns {exit code, output}.
std::pair<int, std::string> run_program(std::vector<std::string> arguments) {
  std::vector<std::string> shell = {"-c", "exec \"$0\" \"$@\" 2>&1", testing_support::ringlinger_exe()};
  shell.insert(shell.end(), arguments.begin(), arguments.end());
  ChildProcess child({"/bin/sh", shell, -1, true});
  std::string output;
  while (auto line = child.read_line(std::chrono::seconds(10))) output += *line + "\n";
  return {child.wait(std::chrono::seconds(10)), output};
}

// Deadlines fire in the order they were added, each once, at its time; a removed one never
// fires, and a slot's later generation is not removed by its earlier one's handle.
TEST(DeadlineFifo, FiresInOrderAndForgetsRemovedOnes) {
  using namespace std::chrono_literals;
  DeadlineFifo fifo(100ms, 8);
  const auto t0 = DeadlineFifo::Clock::now();
  fifo.add({3, 1}, t0);
  fifo.add({5, 1}, t0 + 10ms);
  fifo.add({1, 1}, t0 + 20ms);
  fifo.add({6, 1}, t0 + 25ms);
  fifo.remove({5, 1});       // answered
  fifo.remove({1, 2});       // another generation of slot 1: not its deadline
  fifo.add({3, 2}, t0 + 30ms);  // slot 3 reused: its new deadline replaces the old one
  EXPECT_EQ(fifo.size(), 3u);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> fired;
  const std::function<void(ConnectionId)> note = [&](ConnectionId id) {
    fired.emplace_back(id.slot, id.generation);
  };
  fifo.expire(t0 + 119ms, note);
  EXPECT_TRUE(fired.empty());
  fifo.expire(t0 + 120ms, note);
  EXPECT_EQ(fired, (decltype(fired){{1, 1}}));
  fifo.remove({6, 1});
  fifo.expire(t0 + 1s, note);
  EXPECT_EQ(fired, (decltype(fired){{1, 1}, {3, 2}}));
  EXPECT_EQ(fifo.size(), 0u);
  EXPECT_EQ(fifo.wait(250ms), 250ms);
  // Emptied and refilled: the list links again from nothing.
  fifo.add({7, 4}, t0 + 2s);
  fifo.expire(t0 + 3s, note);
  EXPECT_EQ(fired.back(), (std::pair<std::uint32_t, std::uint32_t>{7, 4}));
}

// A deadline added without a time starts at the next expire(): it never fires before a whole
// timeout from then, and those added with a time after it keep the order.
TEST(DeadlineFifo, StampsDeadlinesAddedWithoutATimeAtTheNextExpire) {
  using namespace std::chrono_literals;
  DeadlineFifo fifo(100ms, 8);
  const auto t0 = DeadlineFifo::Clock::now();
  fifo.add({1, 1});
  fifo.add({2, 1});
  EXPECT_EQ(fifo.wait(250ms), 100ms);  // not stamped yet: a whole timeout away at least
  fifo.remove({1, 1});
  std::vector<std::uint32_t> fired;
  const std::function<void(ConnectionId)> note = [&](ConnectionId id) { fired.push_back(id.slot); };
  fifo.expire(t0 + 50ms, note);  // stamps slot 2 with t0 + 50ms: due at t0 + 150ms
  EXPECT_EQ(fifo.wait(250ms), 100ms);  // counted from the expire's time, not the clock's
  fifo.add({3, 1});
  fifo.add({4, 1}, t0 + 60ms);  // stamps slot 3 with t0 + 60ms first
  EXPECT_EQ(fifo.wait(250ms), 90ms);
  fifo.expire(t0 + 30ms, note);  // an earlier time than one seen: the wait does not grow
  EXPECT_EQ(fifo.wait(250ms), 90ms);
  fifo.expire(t0 + 149ms, note);
  EXPECT_TRUE(fired.empty());
  fifo.expire(t0 + 150ms, note);
  EXPECT_EQ(fired, (std::vector<std::uint32_t>{2}));
  fifo.expire(t0 + 160ms, note);
  EXPECT_EQ(fired, (std::vector<std::uint32_t>{2, 3, 4}));
  EXPECT_EQ(fifo.size(), 0u);
}

// The stamp walks the unstamped entries from the back: it stops at the first one stamped, and
// an unstamped entry removed from between them, or moved to the back by its slot's next add,
// leaves the others stamped all the same.
TEST(DeadlineFifo, StampsEveryUnstampedEntryBehindTheStampedOnes) {
  using namespace std::chrono_literals;
  DeadlineFifo fifo(100ms, 8);
  const auto t0 = DeadlineFifo::Clock::now();
  fifo.add({0, 1}, t0);  // stamped: due at t0 + 100ms
  fifo.add({1, 1});
  fifo.add({2, 1});
  fifo.add({3, 1});
  fifo.remove({2, 1});
  fifo.add({1, 2});  // slot 1 again: to the back, still unstamped
  EXPECT_EQ(fifo.size(), 3u);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> fired;
  const std::function<void(ConnectionId)> note = [&](ConnectionId id) {
    fired.emplace_back(id.slot, id.generation);
  };
  fifo.expire(t0 + 10ms, note);  // stamps slots 3 and 1: due at t0 + 110ms
  EXPECT_TRUE(fired.empty());
  fifo.expire(t0 + 100ms, note);
  EXPECT_EQ(fired, (decltype(fired){{0, 1}}));
  fifo.expire(t0 + 109ms, note);
  EXPECT_EQ(fired.size(), 1u);
  fifo.expire(t0 + 110ms, note);
  EXPECT_EQ(fired, (decltype(fired){{0, 1}, {3, 1}, {1, 2}}));
  EXPECT_EQ(fifo.size(), 0u);
}

// Its memory is one entry per slot whatever the rate: 19000 slots' worth of adds, each removed or
// expired, leave it empty; a timeout of 0 sets no deadline at all.
TEST(DeadlineFifo, HoldsAtMostOneDeadlinePerSlot) {
  using namespace std::chrono_literals;
  DeadlineFifo fifo(10s, 4);
  const auto t0 = DeadlineFifo::Clock::now();
  for (std::uint32_t i = 0; i < 19000; ++i) fifo.add({i % 4, i}, t0 + std::chrono::microseconds(i));
  EXPECT_EQ(fifo.size(), 4u);
  std::vector<std::uint32_t> generations;
  fifo.expire(t0 + 11s, [&](ConnectionId id) { generations.push_back(id.generation); });
  EXPECT_EQ(generations, (std::vector<std::uint32_t>{18996, 18997, 18998, 18999}));
  DeadlineFifo none(0ms, 4);
  none.add({0, 0}, t0);
  EXPECT_EQ(none.size(), 0u);
  EXPECT_EQ(none.wait(250ms), 250ms);
}

TEST(CommandLine, BadFlagsExitWithTwoAndNameTheFlag) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"serve", "--drain-timeout", "30"}, "--drain-timeout"},
      {{"serve", "--drain-idle-timeout", "0"}, "--drain-idle-timeout"},
      {{"serve", "--response-bytes", "lots"}, "--response-bytes"},
      {{"serve", "--on-timeout", "maybe"}, "--on-timeout"},
      {{"serve", "--shutdown", "later"}, "--shutdown"},
      {{"serve", "--defer-accept", "yes"}, "--defer-accept"},
      {{"proxy", "--upstream", "127.0.0.1:80", "--defer-accept", "1s"}, "--defer-accept"},
      {{"bench", "--defer-accept", "maybe"}, "--defer-accept"},
      {{"serve", "--max-connections", "0"}, "--max-connections"},
      {{"serve", "--listen", "localhost"}, "--listen"},
      {{"serve", "--batch-wait", "1s"}, "--batch-wait"},
      {{"serve", "--head-timeout", "soon"}, "--head-timeout"},
      {{"serve", "--orphan-timeout", "2d"}, "--orphan-timeout"},
      {{"serve", "--orphan-timeout", "10"}, "--orphan-timeout"},
      {{"serve", "--no-such-flag"}, "--no-such-flag"},
      {{"serve", "--threads", "0"}, "--threads"},
      {{"serve", "--threads", "65"}, "--threads"},
      {{"serve", "--threads", "2", "--backend", "naive"}, "--threads"},
      {{"serve", "--threads", "4", "--max-connections", "3"}, "--max-connections"},
      // The same flags mean the same in proxy: --max-connections is the total of every thread.
      {{"proxy", "--upstream", "127.0.0.1:80", "--threads", "4", "--max-connections", "3"}, "--max-connections"},
      {{"proxy", "--upstream", "127.0.0.1:80", "--stop-grace", "soon"}, "--stop-grace"},
      {{"client", "--connect", "nowhere"}, "--connect"},
      {{"client", "--source-addrs", "127.0.0.9-127.0.0.2"}, "--source-addrs"},
      {{"client", "--concurrency", "0"}, "--concurrency"},
      {{"serve", "--drain-timeout", "25h"}, "--drain-timeout: must be between 1ms and 24h (got 25h)"},
      // CLI11 alone took -1 for an unsigned flag as its largest value, or said "Could not convert".
      {{"serve", "--max-connections", "-1"}, "ringlinger serve: --max-connections: '-1' is not a whole number"},
      {{"serve", "--threads", "-1"}, "ringlinger serve: --threads: '-1'"},
      {{"client", "--connections", "-1"}, "ringlinger client: --connections: '-1' is not a whole number"},
      {{"bench", "--runs", "x"}, "ringlinger bench: --runs: 'x' is not a whole number"},
      // Nor "010" as octal 8, on every whole-number flag.
      {{"client", "--connections", "010"}, "--connections: '010' is not a whole number from 1 to 1000000000000 (no leading zeros)"},
      {{"serve", "--threads", "02"}, "--threads: '02' is not a whole number"},
      {{"serve", "--max-connections", "0x10"}, "--max-connections: '0x10' is not a whole number"},
      {{"proxy", "--upstream", "127.0.0.1:80", "--receive-buffers", "010"}, "--receive-buffers: '010'"},
      // The range in the message is the flag's own, not the type's.
      {{"serve", "--threads", "65"}, "--threads: '65' is not a whole number from 1 to "},
      {{"serve", "--threads", "65"}, " (4 per CPU, at most 64)"},
      {{"serve", "--threads", "0x2"}, "--threads: '0x2' is not a whole number from 1 to "},
      {{"serve", "--threads", "02"}, "(4 per CPU, at most 64; no leading zeros)"},
      {{"proxy", "--upstream", "127.0.0.1:80", "--receive-buffers", "0"}, "--receive-buffers: '0' is not a whole number from 1 to 32768"},
      {{"wrap", "--max-lingering", "010", "--", "true"}, "--max-lingering: '010'"},
      {{"serve", "--response-bytes", "100GiB"}, "--response-bytes: at most 256MiB in memory"},
      {{"serve", "--response-bytes", "100GiB", "--sendfile"}, "--response-bytes: at most 16GiB with --sendfile"},
      {{"client", "--body-bytes", "1GiB"}, "--body-bytes: at most 256MiB"},
      {{"bench", "--response-bytes", "300MiB"}, "--response-bytes: at most 256MiB"},
      {{"help", "nosuch"}, "no subcommand 'nosuch'; the subcommands are serve, client, demo, bench, probe, proxy, wrap, help"},
      {{}, "subcommand"},
  };
  for (const auto& [arguments, flag] : cases) {
    const auto [code, output] = run_program(arguments);
    EXPECT_EQ(code, 2) << output;
    EXPECT_NE(output.find(flag), std::string::npos) << "message does not name " << flag << ": " << output;
    if (!arguments.empty()) {
      // Where to look: the subcommand's own help, not the program's.
      const std::string pointer = "Run 'ringlinger " + arguments.front() + " --help' for usage.";
      EXPECT_NE(output.find(pointer), std::string::npos) << output;
    }
  }
}

TEST(CommandLine, HoursAreADurationUnit) {
  const auto [code, output] = run_program({"serve", "--listen", "127.0.0.1:0", "--drain-timeout", "2h",
                                           "--send-timeout", "24h", "--check"});
  EXPECT_EQ(code, 0) << output;
}

TEST(CommandLine, HelpPrintsTheProgramsOrASubcommandsHelp) {
  const auto [code, output] = run_program({"help"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("Usage: ringlinger [OPTIONS] SUBCOMMAND"), std::string::npos) << output;
  for (const char* command : {"serve", "client", "demo", "bench", "probe", "proxy"}) {
    EXPECT_NE(output.find(std::string("\n  ") + command + " "), std::string::npos) << command;
  }
  const auto [serve_code, serve_help] = run_program({"help", "serve"});
  EXPECT_EQ(serve_code, 0) << serve_help;
  EXPECT_EQ(serve_help, run_program({"serve", "--help"}).second);
  EXPECT_NE(serve_help.find("Usage: ringlinger serve [OPTIONS]"), std::string::npos) << serve_help;
  EXPECT_NE(serve_help.find("--response-bytes"), std::string::npos) << serve_help;
}

// What the io_uring backend needs is said once, by the library (io_uring_requires()): probe
// marks those rows "(required)" and no other, and this kernel, which runs the io_uring backend,
// has every one of them.
TEST(CommandLine, ProbeMarksWhatTheLibrarySaysIsRequired) {
  for (const char* name : {"NODROP", "EXT_ARG", "ACCEPT", "RECV", "SEND", "CLOSE", "ASYNC_CANCEL",
                           "POLL_ADD"}) {
    EXPECT_TRUE(io_uring_requires(name)) << name;
  }
  for (const char* name : {"FAST_POLL", "SHUTDOWN", "NOP", "SEND_ZC", "SUBMIT_ALL", "nosuch", ""}) {
    EXPECT_FALSE(io_uring_requires(name)) << name;
  }
  const IoUringSupport support = probe_io_uring();
  ASSERT_TRUE(support.sufficient) << support.reason;
  const auto [code, output] = run_program({"probe"});
  ASSERT_EQ(code, 0) << output;
  std::size_t required_rows = 0;
  for (const auto* table : {&support.features, &support.opcodes}) {
    for (const auto& [name, supported] : *table) {
      if (io_uring_requires(name)) {
        ++required_rows;
        EXPECT_TRUE(supported) << name;
      }
      // The row: two spaces, the name, padding, the answer, then its notes up to the line's end.
      const std::size_t row = output.find("\n  " + name + " ");
      ASSERT_NE(row, std::string::npos) << name << "\n" << output;
      const std::string line = output.substr(row + 1, output.find('\n', row + 1) - row - 1);
      EXPECT_EQ(line.find("(required)") != std::string::npos, io_uring_requires(name)) << line;
    }
  }
  EXPECT_EQ(required_rows, 8u);
}

TEST(CommandLine, HelpExitsWithZero) {
  for (const char* command : {"serve", "client", "demo", "proxy"}) {
    const auto [code, output] = run_program({command, "--help"});
    EXPECT_EQ(code, 0) << output;
    EXPECT_NE(output.find("Usage"), std::string::npos) << output;
  }
}

TEST(CommandLine, VersionIsTheLibrarysVersion) {
  const auto [code, output] = run_program({"--version"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_EQ(output, "ringlinger " RINGLINGER_VERSION "\n");
}

TEST(CommandLine, ServeStopsOnSigtermAndPrintsItsCounters) {
  ChildProcess serve({testing_support::ringlinger_exe(), {"serve", "--listen", "127.0.0.1:0"}, -1, true});
  const auto address = serve.read_listening_address(std::chrono::seconds(10));
  ASSERT_TRUE(address.has_value());
  const int fd = testing_support::connect_client(*address);
  ASSERT_GE(fd, 0);
  testing_support::set_receive_timeout(fd, std::chrono::seconds(10));
  testing_support::send_all(fd, make_request(0));
  const auto read = testing_support::read_to_end(fd);
  ::close(fd);
  EXPECT_EQ(without_date(read.bytes), make_response(16384));
  EXPECT_TRUE(read.clean_eof);
  EXPECT_EQ(serve.terminate(std::chrono::seconds(10)), 0);
  std::string output;
  while (auto line = serve.read_line(std::chrono::seconds(2))) output += *line + "\n";
  EXPECT_NE(output.find("1 clean"), std::string::npos) << output;
}

}  // namespace
}  // namespace ringlinger::tools

namespace ringlinger::tools {
namespace {

std::string without_io_uring() {
  const char* path = std::getenv("WITHOUT_IO_URING_EXE");
  return path != nullptr ? path : "tests/without_io_uring";
}

TEST(Fallback, WithoutIoUringServeFallsBackToEpollAndServes) {
  ChildProcess serve({without_io_uring(),
                      {testing_support::ringlinger_exe(), "serve", "--listen", "127.0.0.1:0"},
                      -1,
                      true});
  std::string first_line;
  std::optional<SocketAddress> address;
  while (auto line = serve.read_line(std::chrono::seconds(10))) {
    if (line->find("listening on") == std::string::npos) continue;
    first_line = *line;
    const auto start = line->find("listening on ") + 13;
    address = SocketAddress::parse(line->substr(start, line->find(' ', start) - start));
    break;
  }
  ASSERT_TRUE(address.has_value()) << "serve did not start";
  EXPECT_NE(first_line.find("epoll"), std::string::npos) << first_line;
  EXPECT_NE(first_line.find("io_uring unavailable"), std::string::npos) << first_line;
  const int fd = testing_support::connect_client(*address);
  testing_support::set_receive_timeout(fd, std::chrono::seconds(10));
  testing_support::send_all(fd, make_request(100'000));  // a body it will not read
  const auto read = testing_support::read_to_end(fd);
  ::close(fd);
  EXPECT_EQ(without_date(read.bytes), make_response(16384));
  EXPECT_TRUE(read.clean_eof);
  EXPECT_EQ(serve.terminate(std::chrono::seconds(10)), 0);
}

TEST(Fallback, WithoutIoUringAnExplicitUringBackendFailsWithAClearMessage) {
  std::vector<std::string> shell = {"-c", "exec \"$0\" \"$@\" 2>&1", without_io_uring(),
                                    testing_support::ringlinger_exe(), "serve", "--listen",
                                    "127.0.0.1:0", "--backend", "uring"};
  ChildProcess serve({"/bin/sh", shell, -1, true});
  std::string output;
  while (auto line = serve.read_line(std::chrono::seconds(10))) output += *line + "\n";
  EXPECT_EQ(serve.wait(std::chrono::seconds(10)), 1) << output;
  EXPECT_NE(output.find("io_uring is not permitted"), std::string::npos) << output;
}

}  // namespace
}  // namespace ringlinger::tools

namespace ringlinger::tools {
namespace {

// Runs `ringlinger bench` with `arguments` plus --json; returns the report.
nlohmann::json run_bench(std::vector<std::string> arguments) {
  char path[] = "/tmp/ringlinger-bench-test-XXXXXX";
  const int fd = mkstemp(path);
  ::close(fd);
  arguments.insert(arguments.begin(), "bench");
  arguments.insert(arguments.end(), {"--no-perf", "--json", path});
  ChildProcess bench({testing_support::ringlinger_exe(), arguments, -1, true});
  std::string output;
  while (auto line = bench.read_line(std::chrono::seconds(120))) output += *line + "\n";
  const int code = bench.wait(std::chrono::seconds(120));
  if (code != 0) ADD_FAILURE() << "ringlinger bench exited with " << code << ":\n" << output;
  std::ifstream file(path);
  nlohmann::json report = nlohmann::json::parse(file, nullptr, false);
  std::remove(path);
  return report;
}

const nlohmann::json& medians_of(const nlohmann::json& report, const std::string& backend) {
  for (const auto& entry : report["summary"]) {
    if (entry["backend"] == backend) return entry["medians"];
  }
  static const nlohmann::json kNone;
  return kNone;
}

TEST(Bench, EveryBackendButNaiveLosesNothingAndNaiveLoses) {
  const auto report = run_bench({"--backend", "uring,epoll,blocking,naive", "--connections", "400",
                                 "--concurrency", "100", "--runs", "1"});
  ASSERT_TRUE(report.is_object() && report.contains("summary")) << report.dump();
  for (const char* backend : {"uring", "epoll", "blocking"}) {
    const auto& medians = medians_of(report, backend);
    EXPECT_EQ(medians["complete"], 400) << backend;
    EXPECT_EQ(medians["failed"], 0) << backend;
    EXPECT_GT(medians["cpu_us_per_close"].get<double>(), 0.0) << backend;
  }
  EXPECT_EQ(medians_of(report, "naive")["failed"], 400) << "a plain close() with an unread body resets";
  EXPECT_LT(medians_of(report, "uring")["syscalls_per_close"].get<double>(),
            medians_of(report, "epoll")["syscalls_per_close"].get<double>());
}

// nginx as a comparison server: the client verifies its responses exactly like serve's, so a
// wrong configuration (a 405 for the POST, another body) fails here, not silently in a benchmark.
TEST(Bench, NginxServesTheSameResponseAndLingers) {
  const auto report = run_bench({"--backend", "nginx,uring", "--connections", "400",
                                 "--concurrency", "100", "--runs", "1"});
  ASSERT_TRUE(report.is_object() && report.contains("summary")) << report.dump();
  for (const char* backend : {"nginx", "uring"}) {
    const auto& medians = medians_of(report, backend);
    EXPECT_EQ(medians["complete"], 400) << backend;
    EXPECT_EQ(medians["failed"], 0) << backend;
    EXPECT_EQ(medians["payload_bytes_lost"], 0) << backend;
  }
}

// The client's checks: every peer of each type in `types` (and no other type) was started and got
// what its type should get; nothing was lost.
void expect_every_peer_complete(const nlohmann::json& run,
                                std::initializer_list<const char*> types) {
  EXPECT_EQ(run["client"]["failed"], 0) << run["client"].dump(2);
  EXPECT_EQ(run["client"]["payload_bytes_lost"], 0);
  const auto& peers = run["client"]["peers"];
  int started = 0;
  for (const char* type : types) {
    EXPECT_GT(peers[type]["started"].get<int>(), 0) << type;
    EXPECT_EQ(peers[type]["complete"], peers[type]["started"]) << type;
    started += peers[type]["started"].get<int>();
  }
  EXPECT_EQ(run["client"]["started"].get<int>(), started);
}

int started_of(const nlohmann::json& run, const char* type) {
  return run["client"]["peers"][type]["started"].get<int>();
}

// The server's outcome counts are exactly `expected`; every outcome not named there is 0.
void expect_outcomes(const nlohmann::json& run, const std::map<std::string, int>& expected) {
  const auto& outcomes = run["server"]["stats"]["outcomes"];
  for (const auto& [name, count] : outcomes.items()) {
    const auto named = expected.find(name);
    EXPECT_EQ(count.get<int>(), named == expected.end() ? 0 : named->second) << name;
  }
  for (const auto& [name, count] : expected) EXPECT_TRUE(outcomes.contains(name)) << name;
}

// Hostile peers, judged twice: by the client (each type got what it should: nothing lost) and by
// the server's outcome counts. The server's outcome for a connection is the first of two events:
// the peer's next act (its FIN, its RST, its bytes) or one of the server's drain timers. With a
// short drain idle timeout that is a race against the scheduler, not a property of the server:
// once a peer's kernel has acknowledged everything the server sent, a cooperative, reset or flood
// peer makes no progress until its process runs again, so a client process that does not run for
// the timeout (a loaded machine, or SIGSTOP for 0.5 s) ends as drain_idle_timeout although it did
// everything right. So each outcome is checked where it cannot depend on speed: the peers that
// end by their own act meet drain timers too long to fire while this test lives (the client gives
// up after 30 s, the flood after 35 s, run_bench after 120 s), so their outcome is decided by
// what they do; never-fin peers, which only act by a timed RST, get their own run below.
//
// Here: cooperative, slow-reader and half-close peers end clean (their FIN), reset peers as
// peer_reset (their RST), floods at the byte cap (their bytes), exactly, and nothing ends
// otherwise. A server that missed a FIN or an RST would hold the connection until its stop
// deadline (stop_deadline); one that missed the cap would let the flood go on until the flood's
// own RST (peer_reset).
TEST(Bench, HostilePeersEachEndAsTheirTypeShould) {
  const auto report = run_bench(
      {"--backend", "uring,epoll", "--connections", "120", "--concurrency", "60", "--runs", "1",
       "--peers", "cooperative=60,flood=15,reset=15,slow-reader=15,half-close=15",
       "--drain-idle-timeout", "1h", "--drain-max-bytes", "1MiB", "--drain-timeout", "1h"});
  ASSERT_TRUE(report.is_object() && report.contains("runs")) << report.dump();
  for (const auto& run : report["runs"]) {
    SCOPED_TRACE(run["backend"].get<std::string>());
    expect_every_peer_complete(run, {"cooperative", "flood", "reset", "slow-reader", "half-close"});
    expect_outcomes(run, {{"clean", started_of(run, "cooperative") + started_of(run, "slow-reader") +
                                        started_of(run, "half-close")},
                          {"peer_reset", started_of(run, "reset")},
                          {"drain_byte_cap", started_of(run, "flood")}});
  }
}

// Never-fin peers end at the drain idle timeout, and the half-close peers beside them clean. Both
// outcomes are orders with a margin of a whole second, not a race at the timeout's scale: a
// never-fin peer resets its socket the drain idle timeout + 1 s after reading EOF, so the server
// misses its timer only if it does not run for that second (it has little else to do here: no
// floods); a half-close peer sends its FIN in the system call right after its request, so its
// FIN is late for the drain only if the client stalls between those two calls for the whole idle
// timeout (1 s). No cooperative, reset or flood peer here: with a short timeout their outcome is
// the race described above.
TEST(Bench, HostilePeersThatNeverFinEndAtTheDrainIdleTimeout) {
  const auto report = run_bench(
      {"--backend", "uring,epoll", "--connections", "40", "--concurrency", "40", "--runs", "1",
       "--peers", "never-fin=1,half-close=1", "--drain-idle-timeout", "1s",
       "--drain-timeout", "5s"});
  ASSERT_TRUE(report.is_object() && report.contains("runs")) << report.dump();
  for (const auto& run : report["runs"]) {
    SCOPED_TRACE(run["backend"].get<std::string>());
    expect_every_peer_complete(run, {"never-fin", "half-close"});
    expect_outcomes(run, {{"drain_idle_timeout", started_of(run, "never-fin")},
                          {"clean", started_of(run, "half-close")}});
  }
}

}  // namespace
}  // namespace ringlinger::tools

// serve --threads 2: two managers on two threads behind one SO_REUSEPORT address. 2000
// connections (each with a 4 KiB body serve does not read), verified by `ringlinger client`:
// every one must get the whole response AND a clean EOF; both threads must have served some; and
// the merged counters must be the sums of the per-thread ones.
namespace ringlinger::tools {
namespace {

std::string temporary_file(const char* what) {
  std::string path = std::string("/tmp/ringlinger-tools-test-") + what + "-XXXXXX";
  const int fd = mkstemp(path.data());
  if (fd >= 0) ::close(fd);
  return path;
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream file(path);
  nlohmann::json value = nlohmann::json::parse(file, nullptr, false);
  std::remove(path.c_str());
  return value;
}

TEST(ServeThreads, TwoThreadsServeEveryConnectionAndTheirCountsAddUp) {
  constexpr int kConnections = 2000;
  const std::string serve_json = temporary_file("serve");
  const std::string client_json = temporary_file("client");
  ChildProcess serve({testing_support::ringlinger_exe(),
                      {"serve", "--listen", "127.0.0.1:0", "--threads", "2", "--quiet", "--json",
                       serve_json},
                      -1,
                      true});
  const auto address = serve.read_listening_address(std::chrono::seconds(10));
  ASSERT_TRUE(address.has_value()) << "serve did not start";
  ChildProcess client({testing_support::ringlinger_exe(),
                       {"client", "--connect", address->to_string(), "--connections",
                        std::to_string(kConnections), "--concurrency", "200", "--body-bytes", "4KiB",
                        "--json", client_json},
                       -1,
                       true});
  std::string client_output;
  while (auto line = client.read_line(std::chrono::seconds(120))) client_output += *line + "\n";
  EXPECT_EQ(client.wait(std::chrono::seconds(10)), 0) << client_output;
  EXPECT_EQ(serve.terminate(std::chrono::seconds(30)), 0);
  std::string serve_output;
  while (auto line = serve.read_line(std::chrono::seconds(2))) serve_output += *line + "\n";
  EXPECT_EQ(serve_output.find("listening on"), std::string::npos) << "one ready line only: " << serve_output;

  const nlohmann::json loads = read_json_file(client_json);
  ASSERT_TRUE(loads.is_object() && loads.contains("complete")) << client_output;
  EXPECT_EQ(loads["started"], kConnections);
  EXPECT_EQ(loads["complete"], kConnections);  // exact bytes AND a clean EOF, each
  EXPECT_EQ(loads["failed"], 0);
  EXPECT_EQ(loads["payload_bytes_received"], std::uint64_t{kConnections} * 16384);
  EXPECT_EQ(loads["payload_bytes_lost"], 0);

  const nlohmann::json server = read_json_file(serve_json);
  ASSERT_TRUE(server.is_object() && server.contains("per_thread")) << "serve wrote no JSON";
  EXPECT_EQ(server["threads"], 2);
  ASSERT_EQ(server["per_thread"].size(), 2u) << server.dump(2);
  std::uint64_t accepted = 0;
  std::uint64_t closed = 0;
  std::uint64_t slots = 0;
  for (const auto& thread : server["per_thread"]) {
    EXPECT_GT(thread["connections_closed"].get<std::uint64_t>(), 0u) << "a thread served nothing: " << server["per_thread"].dump();
    EXPECT_EQ(thread["connections_closed"], thread["connections_accepted"]);
    EXPECT_EQ(thread["max_connections"], 8192);  // the default 16384, halved
    accepted += thread["connections_accepted"].get<std::uint64_t>();
    closed += thread["connections_closed"].get<std::uint64_t>();
    slots += thread["max_connections"].get<std::uint64_t>();
  }
  const auto& stats = server["stats"];
  EXPECT_EQ(accepted, kConnections);
  EXPECT_EQ(closed, kConnections);
  EXPECT_EQ(stats["connections_accepted"], kConnections);
  EXPECT_EQ(stats["connections_closed"], kConnections);
  EXPECT_EQ(stats["outcomes"]["clean"], kConnections);
  // Every Date has the same length: any date's response has the size of each sent.
  EXPECT_EQ(stats["bytes_sent"], std::uint64_t{kConnections} * make_response(16384, http_date(0)).size());
  EXPECT_EQ(slots, server["config"]["max_connections"].get<std::uint64_t>());
  EXPECT_EQ(stats["connections_in_state"]["free"], slots);  // gauges add up too: every slot free
  EXPECT_EQ(server["close_latency_us"]["samples"], kConnections);
}

}  // namespace
}  // namespace ringlinger::tools

// serve answers HEAD with the head alone (the same Content-Length as GET) and dates every
// response, on the library's backends and on the plain servers built from the same http.hpp.
namespace ringlinger::tools {
namespace {

TEST(HttpDate, IsImfFixdate) {
  EXPECT_EQ(http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");  // RFC 9110's example
  EXPECT_EQ(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
  EXPECT_EQ(http_date(951782400), "Tue, 29 Feb 2000 00:00:00 GMT");
  EXPECT_EQ(http_date(4102444799), "Thu, 31 Dec 2099 23:59:59 GMT");
  const std::string dated = make_response(100, http_date(0));
  EXPECT_NE(dated.find("\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"), std::string::npos) << dated;
  EXPECT_EQ(without_date(dated), make_response(100));
  EXPECT_EQ(without_date(make_error_response(400, "Bad Request", http_date(0))),
            make_error_response(400, "Bad Request"));
}

// One header's value in `head`, or nullopt.
std::optional<std::string> header_value(const std::string& head, const std::string& name) {
  const std::size_t start = head.find("\r\n" + name + ": ");
  if (start == std::string::npos) return std::nullopt;
  const std::size_t value = start + name.size() + 4;
  return head.substr(value, head.find("\r\n", value) - value);
}

// Sends `request` to `address` and reads to EOF.
testing_support::ReadResult ask(const SocketAddress& address, const std::string& request) {
  const int fd = testing_support::connect_client(address);
  EXPECT_GE(fd, 0);
  testing_support::set_receive_timeout(fd, std::chrono::seconds(10));
  testing_support::send_all(fd, request);
  auto read = testing_support::read_to_end(fd);
  ::close(fd);
  return read;
}

class ServeHttp : public testing::TestWithParam<const char*> {};

TEST_P(ServeHttp, HeadGetsTheHeadersOnlyAndEveryResponseIsDated) {
  ChildProcess serve({testing_support::ringlinger_exe(),
                      {"serve", "--listen", "127.0.0.1:0", "--backend", GetParam(), "--quiet"}, -1, true});
  const auto address = serve.read_listening_address(std::chrono::seconds(10));
  ASSERT_TRUE(address.has_value()) << "serve did not start";

  const auto get_read = ask(*address, make_request(0));
  EXPECT_TRUE(get_read.clean_eof);
  EXPECT_EQ(without_date(get_read.bytes), make_response(16384));
  const auto head_read = ask(*address, "HEAD / HTTP/1.1\r\nHost: ringlinger\r\n\r\n");
  EXPECT_TRUE(head_read.clean_eof) << "headers, then a clean EOF";
  ASSERT_TRUE(head_read.bytes.ends_with("\r\n\r\n")) << head_read.bytes;
  EXPECT_EQ(head_read.bytes.find("\r\n\r\n"), head_read.bytes.size() - 4) << "no body after the head: " << head_read.bytes;
  EXPECT_EQ(without_date(head_read.bytes), response_head(200, "OK", 16384));
  EXPECT_EQ(header_value(head_read.bytes, "Content-Length"), header_value(get_read.bytes, "Content-Length"));

  for (const auto* response : {&get_read.bytes, &head_read.bytes}) {
    const auto date = header_value(*response, "Date");
    ASSERT_TRUE(date.has_value()) << *response;
    std::tm parsed{};
    const char* end = strptime(date->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &parsed);
    ASSERT_TRUE(end != nullptr && *end == '\0') << "not IMF-fixdate: " << *date;
    EXPECT_EQ(date->size(), kHttpDateSize);
    // The server's clock is this machine's: the date is today's, not a constant.
    EXPECT_LT(std::abs(static_cast<double>(timegm(&parsed) - std::time(nullptr))), 3600.0) << *date;
  }
  EXPECT_EQ(serve.terminate(std::chrono::seconds(10)), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, ServeHttp, testing::Values("auto", "naive", "blocking"),
                         [](const testing::TestParamInfo<const char*>& backend) { return std::string(backend.param); });

// Error responses are dated too (the library backend's 400).
TEST(ServeHttp, ErrorResponsesAreDated) {
  ChildProcess serve({testing_support::ringlinger_exe(), {"serve", "--listen", "127.0.0.1:0", "--quiet"}, -1, true});
  const auto address = serve.read_listening_address(std::chrono::seconds(10));
  ASSERT_TRUE(address.has_value()) << "serve did not start";
  const auto read = ask(*address, "NOT A REQUEST\r\n\r\n");
  EXPECT_TRUE(read.clean_eof);
  EXPECT_EQ(without_date(read.bytes), make_error_response(400, "Bad Request"));
  EXPECT_TRUE(header_value(read.bytes, "Date").has_value()) << read.bytes;
  EXPECT_EQ(serve.terminate(std::chrono::seconds(10)), 0);
}


// `ringlinger wrap`. These check the program's side: flags, environment, exec, exit codes and
// warnings; tests/wrap/ checks what the preload library does with real servers.

// A directory of its own for each test, removed with everything in it.
class WrapDir {
 public:
  WrapDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "cli-wrap-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~WrapDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Runs `ringlinger wrap ARGUMENTS` in `directory` with `environment` (NAME=VALUE) added, through
// /bin/sh after `shell_setup` (e.g. a ulimit); stderr goes into the output.
// In an ASan build the preload library needs ASan's runtime loaded first into the command it is
// preloaded into (sh, not built with it): the path of the one this test runs with, from its map.
std::vector<std::string> sanitizer_environment() {
#if defined(__SANITIZE_ADDRESS__)
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (const auto at = line.find('/'); at != std::string::npos && line.find("/libasan.so") != std::string::npos) {
      return {"LD_PRELOAD=" + line.substr(at), "ASAN_OPTIONS=detect_leaks=0:verify_asan_link_order=0"};
    }
  }
#endif
  return {};
}

std::pair<int, std::string> run_wrap(const std::vector<std::string>& arguments,
                                     const std::vector<std::string>& environment = {},
                                     const std::string& directory = "/", const std::string& shell_setup = ":") {
  std::vector<std::string> shell = {"-c", shell_setup + " && cd \"$0\" && exec env \"$@\" 2>&1", directory};
  const std::vector<std::string> sanitizer = sanitizer_environment();
  shell.insert(shell.end(), sanitizer.begin(), sanitizer.end());  // the caller's LD_PRELOAD wins
  shell.insert(shell.end(), environment.begin(), environment.end());
  shell.push_back(testing_support::ringlinger_exe());
  shell.push_back("wrap");
  shell.insert(shell.end(), arguments.begin(), arguments.end());
  ChildProcess child({"/bin/sh", shell, -1, true});
  std::string output;
  while (auto line = child.read_line(std::chrono::seconds(10))) output += *line + "\n";
  return {child.wait(std::chrono::seconds(10)), output};
}

TEST(Wrap, BadFlagsExitWithTwoNameTheFlagAndRunNothing) {
  const WrapDir dir;
  const std::vector<std::string> command = {"--", "/bin/sh", "-c", "echo COMMAND RAN"};
  struct Case {
    std::vector<std::string> flags;
    std::string message;
    std::vector<std::string> environment = {};
    std::string shell_setup = ":";
  };
  const std::vector<Case> cases = {
      {{"--drain-timeout", "30"}, "--drain-timeout: '30' needs a unit"},
      {{"--drain-idle-timeout", "0"}, "--drain-idle-timeout: must be between 1ms and 24h (got 0)"},
      {{"--send-timeout", "25h"}, "--send-timeout: must be between 1ms and 24h (got 25h)"},
      {{"--drain-max-bytes", "lots"}, "--drain-max-bytes: 'lots'"},
      {{"--max-lingering", "0"}, "--max-lingering: '0' is not a whole number from 1 to 1000000"},
      {{"--max-lingering", "1000001"}, "--max-lingering: '1000001' is not a whole number"},
      {{"--max-lingering", "-1"}, "--max-lingering: '-1' is not a whole number"},
      // Above RLIMIT_NOFILE's soft limit: both numbers named.
      {{"--max-lingering", "100"}, "--max-lingering: 100 is more than the descriptor limit, RLIMIT_NOFILE's soft limit 64",
       {}, "ulimit -S -n 64"},
      {{"--exit-grace", "5"}, "--exit-grace: '5' needs a unit"},
      {{"--exit-grace", "25h"}, "--exit-grace: must be at most 24h (got 25h)"},
      {{"--json", dir / "no-such-directory/counters.json"}, "--json: cannot write " + dir / "no-such-directory"},
      {{"--json", dir.path()}, "--json: '" + dir.path() + "' is not a file name"},
      {{"--json", "-"}, "--json: '-' (standard output) belongs to the command"},
      {{"--orphan-timeout", "1s"}, "--orphan-timeout: not a flag of wrap"},
      {{"--no-such-flag"}, "--no-such-flag: not a flag of wrap"},
      {{}, "wrap: a command to run is needed after --", {}, ":"},
      {{}, "RINGLINGER_PRELOAD_LIBRARY=" + dir / "missing.so" + ": no such file",
       {"RINGLINGER_PRELOAD_LIBRARY=" + dir / "missing.so"}},
  };
  for (const Case& test : cases) {
    std::vector<std::string> arguments = test.flags;
    if (test.message.find("a command to run is needed") == std::string::npos) {
      arguments.insert(arguments.end(), command.begin(), command.end());
    }
    const auto [code, output] = run_wrap(arguments, test.environment, "/", test.shell_setup);
    EXPECT_EQ(code, 2) << output;
    EXPECT_NE(output.find(test.message), std::string::npos) << "expected " << test.message << ": " << output;
    EXPECT_NE(output.find("Run 'ringlinger wrap --help' for usage."), std::string::npos) << output;
    EXPECT_EQ(output.find("COMMAND RAN"), std::string::npos) << output;
  }
  // Nothing after "--" at all, and a command's flags without "--".
  EXPECT_EQ(run_wrap({"--"}).first, 2);
  const auto [code, output] = run_wrap({"/bin/sh", "-c", "echo COMMAND RAN"});
  EXPECT_EQ(code, 2) << output;
  EXPECT_NE(output.find("-c: not a flag of wrap; a command's own flags go after --"), std::string::npos) << output;
  // --json refused: no file was left behind.
  EXPECT_FALSE(std::filesystem::exists(dir / "no-such-directory"));
}

// exec: the command's exit code and pid are wrap's.
TEST(Wrap, CommandKeepsWrapsPidAndGivesItsExitCode) {
  const auto [code, output] = run_wrap({"--", "/bin/sh", "-c", "exit 7"});
  EXPECT_EQ(code, 7) << output;
  // The shell that runs wrap execs it, so $PPID of the command's own shell is that shell's
  // parent: compare the command's $$ with what wrap set instead.
  const auto [pid_code, pid_output] =
      run_wrap({"--", "/bin/sh", "-c", "echo \"pid $$ wrap $RINGLINGER_WRAP_PID\""});
  EXPECT_EQ(pid_code, 0) << pid_output;
  const auto at = pid_output.find("pid ");
  ASSERT_NE(at, std::string::npos) << pid_output;
  std::istringstream line(pid_output.substr(at));
  std::string pid_word, wrap_word;
  long pid = 0, wrap_pid = -1;
  line >> pid_word >> pid >> wrap_word >> wrap_pid;
  EXPECT_GT(pid, 0) << pid_output;
  EXPECT_EQ(pid, wrap_pid) << pid_output;
}

TEST(Wrap, ACommandThatCannotRunExitsLikeAShell) {
  const auto [code, output] = run_wrap({"--", "/nonexistent/program"});
  EXPECT_EQ(code, 127) << output;
  EXPECT_NE(output.find("ringlinger wrap: cannot run /nonexistent/program: No such file or directory"),
            std::string::npos)
      << output;
  const auto [path_code, path_output] = run_wrap({"--", "no-such-program-on-path"});
  EXPECT_EQ(path_code, 127) << path_output;
  const WrapDir dir;
  std::ofstream(dir / "not-executable") << "#!/bin/sh\nexit 0\n";
  const auto [denied_code, denied_output] = run_wrap({"--", dir / "not-executable"});
  EXPECT_EQ(denied_code, 126) << denied_output;
  EXPECT_NE(denied_output.find("cannot run " + dir / "not-executable" + ": Permission denied"), std::string::npos)
      << denied_output;
}

// Every flag reaches the command as preload/environment.hpp's variable, in ms and bytes.
TEST(Wrap, FlagsReachTheCommandsEnvironment) {
  const WrapDir dir;
  const std::string print =
      "echo \"idle=$RINGLINGER_WRAP_DRAIN_IDLE_TIMEOUT_MS drain=$RINGLINGER_WRAP_DRAIN_TIMEOUT_MS "
      "bytes=$RINGLINGER_WRAP_DRAIN_MAX_BYTES send=$RINGLINGER_WRAP_SEND_TIMEOUT_MS "
      "lingering=$RINGLINGER_WRAP_MAX_LINGERING grace=$RINGLINGER_WRAP_EXIT_GRACE_MS "
      "json=$RINGLINGER_WRAP_JSON quiet=$RINGLINGER_WRAP_QUIET\"";
  const auto [code, output] =
      run_wrap({"--drain-idle-timeout", "250ms", "--drain-timeout", "2s", "--drain-max-bytes", "1MiB",
                "--send-timeout", "1.5s", "--max-lingering", "77", "--exit-grace", "0", "--json",
                "counters.json", "--quiet", "--", "/bin/sh", "-c", print},
               {}, dir.path());
  EXPECT_EQ(code, 0) << output;
  // A relative --json is made absolute: the command may change its directory.
  EXPECT_NE(output.find("idle=250 drain=2000 bytes=1048576 send=1500 lingering=77 grace=0 json=" +
                        dir / "counters.json" + " quiet=1"),
            std::string::npos)
      << output;
  EXPECT_TRUE(std::filesystem::exists(dir / "counters.json"));
  // The defaults are set too; --json and --quiet left out remove what a wrap around this one set.
  const auto [default_code, default_output] =
      run_wrap({"--", "/bin/sh", "-c", print}, {"RINGLINGER_WRAP_QUIET=1", "RINGLINGER_WRAP_JSON=/elsewhere"});
  EXPECT_EQ(default_code, 0) << default_output;
  EXPECT_NE(default_output.find("idle=5000 drain=30000 bytes=16777216 send=60000 lingering=1024 "
                                "grace=5000 json= quiet=\n"),
            std::string::npos)
      << default_output;
}

// The library found as the program finds it (the build tree's), as an absolute path last in
// LD_PRELOAD; RINGLINGER_PRELOAD_LIBRARY names another; a preload already there comes first (a
// sanitizer's runtime must).
TEST(Wrap, PreloadsTheLibraryAfterAnExistingPreload) {
  const auto [code, output] =
      run_wrap({"--", "sh", "-c", "echo \"max=$RINGLINGER_WRAP_MAX_LINGERING preload=$LD_PRELOAD.\""});
  EXPECT_EQ(code, 0) << output;
  const auto at = output.find("max=1024 preload=/");
  ASSERT_NE(at, std::string::npos) << output;
  EXPECT_NE(output.find("/libringlinger-preload.so.", at), std::string::npos) << output;

  const WrapDir dir;
  // Empty files: ld.so says it cannot load them and goes on, which is all this needs.
  std::ofstream(dir / "libringlinger-preload.so").flush();
  std::ofstream(dir / "other.so").flush();
  const auto [named_code, named_output] =
      run_wrap({"--", "sh", "-c", "echo \"preload=$LD_PRELOAD.\""},
               {"RINGLINGER_PRELOAD_LIBRARY=libringlinger-preload.so", "LD_PRELOAD=" + dir / "other.so"},
               dir.path());
  EXPECT_EQ(named_code, 0) << named_output;
  EXPECT_NE(named_output.find("preload=" + dir / "other.so" + " " + dir / "libringlinger-preload.so" + "."),
            std::string::npos)
      << named_output;
}

const char* const kNotCoveredWarning =
    "its close() does not go through the C library, so wrap cannot see its sockets (see docs/WRAP.md)";

// ldconfig is statically linked on Debian (libc-bin, essential); the shell is not.
TEST(Wrap, AStaticProgramGetsAWarningAndStillRuns) {
  if (!std::filesystem::exists("/sbin/ldconfig")) GTEST_SKIP() << "no /sbin/ldconfig (a static program)";
  const auto [code, output] = run_wrap({"--", "/sbin/ldconfig", "--version"});
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find(std::string("ringlinger wrap: /sbin/ldconfig is statically linked: ") + kNotCoveredWarning),
            std::string::npos)
      << output;
  EXPECT_NE(output.find("ldconfig ("), std::string::npos) << "it did not run: " << output;  // its version
  const auto [shell_code, shell_output] = run_wrap({"--", "sh", "-c", "exit 0"});
  EXPECT_EQ(shell_code, 0) << shell_output;
  EXPECT_EQ(shell_output.find(kNotCoveredWarning), std::string::npos) << shell_output;
  // A script: not an ELF file, no warning.
  const WrapDir dir;
  std::ofstream(dir / "script") << "#!/bin/sh\nexit 5\n";
  ::chmod((dir / "script").c_str(), 0755);
  const auto [script_code, script_output] = run_wrap({"--", dir / "script"});
  EXPECT_EQ(script_code, 5) << script_output;
  EXPECT_EQ(script_output.find(kNotCoveredWarning), std::string::npos) << script_output;
}

// No Go toolchain here: a Go program's two marks put on C programs, each alone. A section named
// .go.buildinfo (objcopy), and a note named "Go" in a PT_NOTE segment (as the Go linker writes
// its build id).
TEST(Wrap, AGoProgramGetsAWarningAndStillRuns) {
  const WrapDir dir;
  const std::string with_section = dir / "go-buildinfo";
  const std::string make_section = "objcopy --add-section .go.buildinfo=/dev/null /bin/true " + with_section;
  ASSERT_EQ(std::system(make_section.c_str()), 0) << make_section;
  std::ofstream(dir / "note.c")
      << "__asm__(\".section .note.go.buildid,\\\"a\\\",@note\\n.balign 4\\n.long 3, 4, 4\\n"
         ".asciz \\\"Go\\\"\\n.balign 4\\n.ascii \\\"abcd\\\"\\n.text\\n\");\n"
         "int main(void) { return 3; }\n";
  const std::string with_note = dir / "go-note";
  const std::string make_note = "cc -o " + with_note + " " + dir / "note.c";
  ASSERT_EQ(std::system(make_note.c_str()), 0) << make_note;
  for (const auto& [program, exit_code] : {std::pair{with_section, 0}, std::pair{with_note, 3}}) {
    const auto [code, output] = run_wrap({"--", program});
    EXPECT_EQ(code, exit_code) << output;
    EXPECT_NE(output.find("ringlinger wrap: " + program + " is a Go program: " + kNotCoveredWarning),
              std::string::npos)
        << output;
  }
}

}  // namespace
}  // namespace ringlinger::tools
