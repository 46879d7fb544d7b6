// SIGHUP: the --config file read again. The drain and send timeouts and caps (and --stop-grace)
// change while the program runs: they apply to connections accepted from then on and to every
// timer armed from then on (Manager::reconfigure); timers already armed keep their deadlines.
// What only a restart can change (addresses, threads, backend, --max-connections, a command's
// own flags) is logged as such and left as it is. Flags typed on the command line still win over
// the file. A file that does not parse, or a bad value, changes nothing: the error is logged.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runner.hpp"

namespace ringlinger::tools {

class Reloader {
 public:
  // `apply` gives the threads the new configuration (the totals; each keeps its share of
  // --max-connections).
  using Apply = std::function<void(const Config& config)>;
  Reloader(const RunnerSettings& settings, Apply apply);

  // Reads the file again and applies what may change; logs what happened.
  void reload();
  // --stop-grace as last read.
  std::chrono::milliseconds stop_grace() const noexcept { return stop_grace_; }

 private:
  const RunnerSettings& settings_;
  const Apply apply_;
  std::map<std::string, std::vector<std::string>> file_;  // the file as last applied
  Config config_;                                         // the configuration in force
  std::chrono::milliseconds stop_grace_;
};

}  // namespace ringlinger::tools
