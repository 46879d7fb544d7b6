// The preload library's settings, read once from the environment `ringlinger wrap` sets
// (environment.hpp). A value that does not parse is reported on stderr and the default used.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "ringlinger/config.hpp"

namespace ringlinger::preload {

struct Settings {
  Config config;                  // the graceful close; max_connections = max_lingering
  std::uint32_t max_lingering = 0;
  std::uint32_t exit_grace_ms = 0;
  std::string json_path;          // empty: none
  bool quiet = false;
  pid_t main_pid = 0;             // 0: not started by wrap
};

Settings read_settings();

}  // namespace ringlinger::preload
