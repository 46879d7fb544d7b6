// What this proves: the default Config validates; for every field, the values just inside its
// documented range are accepted and the values just outside are rejected with a message that
// names that field and the rejected value; with several bad fields the first is named; and the
// to_string() functions of the public enums give every value its own lower-case name ("?" for a
// value outside the enum).
#include "ringlinger/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "ringlinger/outcome.hpp"
#include "ringlinger/state.hpp"

namespace ringlinger {
namespace {

using testing::HasSubstr;

constexpr std::uint64_t kOneDayMs = 86'400'000;

TEST(Config, DefaultsValidate) { EXPECT_EQ(Config{}.validate(), ""); }

TEST(Config, DefaultsAreTheDocumentedOnes) {
  const Config config;
  EXPECT_EQ(config.drain_idle_timeout_ms, 5'000u);
  EXPECT_EQ(config.drain_timeout_ms, 30'000u);
  EXPECT_EQ(config.drain_max_bytes, 16u << 20);
  EXPECT_EQ(config.send_timeout_ms, 60'000u);
  EXPECT_EQ(config.orphan_timeout_ms, 10'000u);
  EXPECT_EQ(config.on_timeout, OnTimeout::close);
  EXPECT_EQ(config.shutdown_mode, ShutdownMode::syscall);
  EXPECT_EQ(config.ring_entries, 4'096u);
  EXPECT_EQ(config.max_connections, 16'384u);
  EXPECT_EQ(config.receive_buffer_bytes, 2'048u);
  EXPECT_EQ(config.receive_buffer_count, 256u);
  EXPECT_EQ(config.batch_wait_us, 2000u);
  EXPECT_TRUE(config.defer_taskrun);
}

// One field, one value, and whether validate() must accept it.
struct Case {
  const char* field;
  std::function<void(Config&)> set;
  std::string value;  // as the message must print it
  bool valid;
};

std::string describe(const Case& c) { return std::string(c.field) + " = " + c.value; }

void check(const Case& c) {
  Config config;
  c.set(config);
  const std::string message = config.validate();
  if (c.valid) {
    EXPECT_EQ(message, "") << describe(c);
  } else {
    EXPECT_THAT(message, HasSubstr(c.field)) << describe(c);
    EXPECT_THAT(message, HasSubstr("(got " + c.value + ")")) << describe(c);
  }
}

// The three timeouts share the range 1 .. one day.
void check_timeout_field(const char* field, std::uint32_t Config::*member) {
  auto with = [member](std::uint64_t value) {
    return [member, value](Config& config) { config.*member = static_cast<std::uint32_t>(value); };
  };
  check({field, with(0), "0", false});
  check({field, with(1), "1", true});
  check({field, with(kOneDayMs), std::to_string(kOneDayMs), true});
  check({field, with(kOneDayMs + 1), std::to_string(kOneDayMs + 1), false});
  check({field, with(UINT32_MAX), std::to_string(UINT32_MAX), false});
}

TEST(Config, DrainIdleTimeoutRange) {
  check_timeout_field("drain_idle_timeout_ms", &Config::drain_idle_timeout_ms);
}

TEST(Config, DrainTimeoutRange) {
  check_timeout_field("drain_timeout_ms", &Config::drain_timeout_ms);
}

TEST(Config, SendTimeoutRange) { check_timeout_field("send_timeout_ms", &Config::send_timeout_ms); }

TEST(Config, OrphanTimeoutRangeAllowsZero) {  // 0 keeps the kernel's default
  auto with = [](std::uint64_t value) {
    return [value](Config& c) { c.orphan_timeout_ms = static_cast<std::uint32_t>(value); };
  };
  check({"orphan_timeout_ms", with(0), "0", true});
  check({"orphan_timeout_ms", with(kOneDayMs), std::to_string(kOneDayMs), true});
  check({"orphan_timeout_ms", with(kOneDayMs + 1), std::to_string(kOneDayMs + 1), false});
}

TEST(Config, RangeMessageSpellsOutTheBounds) {
  Config config;
  config.drain_idle_timeout_ms = 0;
  EXPECT_EQ(config.validate(), "drain_idle_timeout_ms must be between 1 and 86400000 (got 0)");
}

TEST(Config, DrainMaxBytesAcceptsEveryValueZeroMeaningUnlimited) {
  for (std::uint64_t value : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{UINT64_MAX}}) {
    Config config;
    config.drain_max_bytes = value;
    EXPECT_EQ(config.validate(), "") << value;
  }
}

TEST(Config, RingEntriesIsAPowerOfTwoFrom8To32768) {
  auto with = [](std::uint32_t value) { return [value](Config& c) { c.ring_entries = value; }; };
  check({"ring_entries", with(0), "0", false});
  check({"ring_entries", with(4), "4", false});
  check({"ring_entries", with(7), "7", false});
  check({"ring_entries", with(8), "8", true});
  check({"ring_entries", with(12), "12", false});
  check({"ring_entries", with(1024), "1024", true});
  check({"ring_entries", with(32768), "32768", true});
  check({"ring_entries", with(32767), "32767", false});
  check({"ring_entries", with(65536), "65536", false});
}

TEST(Config, MaxConnectionsFrom1To4Mi) {
  auto with = [](std::uint32_t value) { return [value](Config& c) { c.max_connections = value; }; };
  check({"max_connections", with(0), "0", false});
  check({"max_connections", with(1), "1", true});
  check({"max_connections", with(3), "3", true});  // no power-of-two rule here
  check({"max_connections", with(1u << 22), std::to_string(1u << 22), true});
  check({"max_connections", with((1u << 22) + 1), std::to_string((1u << 22) + 1), false});
}

TEST(Config, ReceiveBufferBytesFrom64To16Mi) {
  auto with = [](std::uint32_t value) {
    return [value](Config& c) { c.receive_buffer_bytes = value; };
  };
  check({"receive_buffer_bytes", with(0), "0", false});
  check({"receive_buffer_bytes", with(63), "63", false});
  check({"receive_buffer_bytes", with(64), "64", true});
  check({"receive_buffer_bytes", with(1000), "1000", true});  // no power-of-two rule here
  check({"receive_buffer_bytes", with(16u << 20), std::to_string(16u << 20), true});
  check({"receive_buffer_bytes", with((16u << 20) + 1), std::to_string((16u << 20) + 1), false});
}

TEST(Config, ReceiveBufferCountIsAPowerOfTwoFrom1To32768) {
  auto with = [](std::uint32_t value) {
    return [value](Config& c) { c.receive_buffer_count = value; };
  };
  check({"receive_buffer_count", with(0), "0", false});
  check({"receive_buffer_count", with(1), "1", true});
  check({"receive_buffer_count", with(2), "2", true});
  check({"receive_buffer_count", with(3), "3", false});
  check({"receive_buffer_count", with(32768), "32768", true});
  check({"receive_buffer_count", with(32769), "32769", false});
  check({"receive_buffer_count", with(65536), "65536", false});
}

TEST(Config, BatchWaitFrom0To100Ms) {
  auto with = [](std::uint32_t value) { return [value](Config& c) { c.batch_wait_us = value; }; };
  check({"batch_wait_us", with(0), "0", true});  // 0 = wake on every completion
  check({"batch_wait_us", with(100'000), "100000", true});
  check({"batch_wait_us", with(100'001), "100001", false});
  check({"batch_wait_us", with(UINT32_MAX), std::to_string(UINT32_MAX), false});
}

TEST(Config, EnumFieldsOutsideTheirValuesAreNamed) {
  check({"on_timeout", [](Config& c) { c.on_timeout = static_cast<OnTimeout>(7); }, "7", false});
  check({"on_timeout", [](Config& c) { c.on_timeout = OnTimeout::reset; }, "1", true});
  check({"shutdown_mode", [](Config& c) { c.shutdown_mode = static_cast<ShutdownMode>(9); }, "9",
         false});
  check({"shutdown_mode", [](Config& c) { c.shutdown_mode = ShutdownMode::ring; }, "1", true});
}

TEST(Config, DeferTaskrunEitherWayIsValid) {
  Config config;
  config.defer_taskrun = false;
  EXPECT_EQ(config.validate(), "");
}

TEST(Config, TheFirstBadFieldInDeclarationOrderIsNamed) {
  Config config;
  config.max_connections = 0;
  config.receive_buffer_count = 3;
  EXPECT_THAT(config.validate(), HasSubstr("max_connections"));
  EXPECT_THAT(config.validate(), testing::Not(HasSubstr("receive_buffer_count")));
  config.send_timeout_ms = 0;
  EXPECT_THAT(config.validate(), HasSubstr("send_timeout_ms"));
  config.drain_idle_timeout_ms = 0;
  EXPECT_THAT(config.validate(), HasSubstr("drain_idle_timeout_ms"));
}

TEST(EnumNames, OnTimeoutAndShutdownMode) {
  EXPECT_EQ(to_string(OnTimeout::close), "close");
  EXPECT_EQ(to_string(OnTimeout::reset), "reset");
  EXPECT_EQ(to_string(static_cast<OnTimeout>(200)), "?");
  EXPECT_EQ(to_string(ShutdownMode::syscall), "syscall");
  EXPECT_EQ(to_string(ShutdownMode::ring), "ring");
  EXPECT_EQ(to_string(static_cast<ShutdownMode>(200)), "?");
}

TEST(EnumNames, EveryStateHasItsOwnName) {
  const std::string_view expected[kStateCount] = {
      "free", "open", "flushing", "shutting_down", "draining", "cancelling", "closing"};
  for (std::size_t i = 0; i < kStateCount; ++i) {
    EXPECT_EQ(to_string(static_cast<State>(i)), expected[i]) << i;
  }
  EXPECT_EQ(to_string(static_cast<State>(kStateCount)), "?");
}

TEST(EnumNames, EveryOutcomeHasItsOwnName) {
  const std::string_view expected[kOutcomeCount] = {
      "clean",        "peer_reset", "drain_idle_timeout", "drain_timeout", "drain_byte_cap",
      "send_timeout", "send_error", "receive_error",      "aborted",       "stop_deadline"};
  std::set<std::string_view> seen;
  for (std::size_t i = 0; i < kOutcomeCount; ++i) {
    EXPECT_EQ(to_string(static_cast<Outcome>(i)), expected[i]) << i;
    seen.insert(to_string(static_cast<Outcome>(i)));
  }
  EXPECT_EQ(seen.size(), kOutcomeCount);
  EXPECT_EQ(to_string(static_cast<Outcome>(kOutcomeCount)), "?");
}

// The errors a server that calls the socket itself counts as the peer's reset, as the manager does.
TEST(Outcomes, PeerResetErrorsAreTheFourResetErrnos) {
  for (int error : {ECONNRESET, EPIPE, ECONNABORTED, ENOTCONN}) {
    EXPECT_TRUE(is_peer_reset_error(error)) << error;
  }
  for (int error : {0, ETIMEDOUT, EHOSTUNREACH, EAGAIN, EBADF, -ECONNRESET}) {
    EXPECT_FALSE(is_peer_reset_error(error)) << error;
  }
}

}  // namespace
}  // namespace ringlinger
