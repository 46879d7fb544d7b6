// --config FILE: the flags of a command written in a file, one `name = value` per line, the names
// being the long flags without their dashes ("drain-idle-timeout = 2s"). `#` starts a comment;
// a value may be quoted ("..." or '...'); a flag that takes several values (listen, metrics) is
// given on several lines; a switch takes true or false. Flags on the command line win over the
// file. SIGHUP reads it again (runner.cpp).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "flags.hpp"  // CLI::App

namespace ringlinger::tools {

struct Setting {
  std::string name;   // "drain-idle-timeout"
  std::string value;  // "2s"
  unsigned line = 0;
};

struct SettingsFile {
  std::string path;
  std::vector<Setting> settings;  // in the file's order

  // name -> its values in order (to compare two readings of the file).
  std::map<std::string, std::vector<std::string>> by_name() const;
};

// Reads and parses `path`; throws UsageError "--config PATH:LINE: ..." for a line that is not
// `name = value`, "--config PATH: <strerror>" when it cannot be read.
SettingsFile read_settings_file(const std::string& path);

// The long names (without dashes) of the options of `command` given on its command line, with
// the values typed.
std::map<std::string, std::vector<std::string>> given_options(const CLI::App& command);

// Gives every setting of `file` whose flag is not in `skip` to `command`'s option, as if typed on
// its command line. Throws UsageError "--config PATH:LINE: ..." for a name that is no flag of
// `command` (unless `ignore_unknown`) or a bad value. `config`, `check`, `help` cannot be set
// in a file.
void apply_settings(CLI::App& command, const SettingsFile& file,
                    const std::map<std::string, std::vector<std::string>>& skip,
                    bool ignore_unknown = false);

// Throws like apply_settings() for a name that is no flag of `command`, giving nothing.
void check_setting_names(const CLI::App& command, const SettingsFile& file);

// Gives `values` to `command`'s options, as if typed (the command line's values, kept for a
// reload). Throws UsageError naming the flag for a bad value.
void apply_values(CLI::App& command, const std::map<std::string, std::vector<std::string>>& values,
                  bool ignore_unknown = false);

}  // namespace ringlinger::tools
