// RINGLINGER_WRAP_* -> Settings.
#include "settings.hpp"

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "environment.hpp"

namespace ringlinger::preload {
namespace {

template <typename Number>
void read_number(const char* name, Number& value) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return;
  Number parsed{};
  const char* end = text + std::strlen(text);
  const auto [stop, error] = std::from_chars(text, end, parsed);
  if (error != std::errc{} || stop != end) {
    std::fprintf(stderr, "libringlinger-preload: %s=%s is not a whole number; using %llu\n", name,
                 text, static_cast<unsigned long long>(value));
    return;
  }
  value = parsed;
}

}  // namespace

Settings read_settings() {
  Settings settings;
  Config& config = settings.config;
  read_number(wrap_env::kDrainIdleTimeoutMs, config.drain_idle_timeout_ms);
  read_number(wrap_env::kDrainTimeoutMs, config.drain_timeout_ms);
  read_number(wrap_env::kDrainMaxBytes, config.drain_max_bytes);
  read_number(wrap_env::kSendTimeoutMs, config.send_timeout_ms);
  settings.max_lingering = wrap_env::kDefaultMaxLingering;
  read_number(wrap_env::kMaxLingering, settings.max_lingering);
  if (settings.max_lingering == 0) settings.max_lingering = 1;
  settings.exit_grace_ms = wrap_env::kDefaultExitGraceMs;
  read_number(wrap_env::kExitGraceMs, settings.exit_grace_ms);
  read_number(wrap_env::kMainPid, settings.main_pid);
  if (const char* path = std::getenv(wrap_env::kJsonPath)) settings.json_path = path;
  if (const char* quiet = std::getenv(wrap_env::kQuiet)) settings.quiet = std::strcmp(quiet, "1") == 0;
  // A small manager: a lingering socket needs only its slot and, while draining, a receive
  // buffer now and then; the ring's default (4096 entries, 512 KiB of buffers) is for servers.
  config.max_connections = settings.max_lingering;
  config.ring_entries = 256;
  config.receive_buffer_count = 64;
  if (const std::string problem = config.validate(); !problem.empty()) {
    std::fprintf(stderr, "libringlinger-preload: %s; using the defaults\n", problem.c_str());
    const std::uint32_t max_lingering = settings.max_lingering;
    settings.config = Config{};
    settings.config.max_connections = max_lingering;
  }
  return settings;
}

}  // namespace ringlinger::preload
