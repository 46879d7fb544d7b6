#include "settings_file.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "commands.hpp"

namespace ringlinger::tools {

namespace {

// Flags that make no sense in the file they would be read from.
const std::set<std::string> kNotInFile = {"config", "check", "help"};

std::string trim(std::string_view text) {
  const std::size_t first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  const std::size_t last = text.find_last_not_of(" \t\r");
  return std::string(text.substr(first, last - first + 1));
}

// The value after '=': quoted ("a b" or 'a b', a `#` inside kept) or bare (a `#` starts a comment).
std::string value_of(std::string_view text, const std::string& where) {
  std::string value = trim(text);
  if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
    const std::size_t end = value.find(value.front(), 1);
    if (end == std::string::npos) throw UsageError(where + ": the quote is not closed");
    if (!trim(std::string_view(value).substr(end + 1)).empty() &&
        trim(std::string_view(value).substr(end + 1)).front() != '#') {
      throw UsageError(where + ": text after the closing quote");
    }
    return value.substr(1, end - 1);
  }
  return trim(value.substr(0, value.find('#')));
}

// `name = value`, or nothing for a blank or comment line.
std::optional<Setting> parse_line(const std::string& line, const std::string& where) {
  const std::string text = trim(line);
  if (text.empty() || text.front() == '#') return std::nullopt;
  const std::size_t equals = text.find('=');
  if (equals == std::string::npos) {
    throw UsageError(fmt::format("{}: '{}' is not 'name = value'", where, text));
  }
  std::string name = trim(std::string_view(text).substr(0, equals));
  if (name.starts_with("--")) name.erase(0, 2);  // "--listen = ..." is forgiven
  if (name.empty() || name.find_first_of(" \t") != std::string::npos) {
    throw UsageError(fmt::format("{}: '{}' is not a flag name", where, name));
  }
  return Setting{std::move(name), value_of(std::string_view(text).substr(equals + 1), where), 0};
}

std::string where(const std::string& path, unsigned line) { return fmt::format("--config {}:{}", path, line); }

// Gives `values` to one option and converts them; CLI11's message names the flag.
void give(CLI::Option& option, const std::vector<std::string>& values, const std::string& context) {
  try {
    option.clear();
    for (const std::string& value : values) option.add_result(value);
    option.run_callback();
  } catch (const CLI::Error& error) {
    throw UsageError(context.empty() ? std::string(error.what()) : context + ": " + error.what());
  }
}

// The option a setting names, or nullptr.
const CLI::Option* option_named(const CLI::App& command, const std::string& name) {
  const CLI::Option* option = kNotInFile.contains(name) ? nullptr : command.get_option_no_throw("--" + name);
  if (option == nullptr || option->get_lnames().empty() || option->get_lnames().front() != name) return nullptr;
  return option;
}

std::string first_line_of(const SettingsFile& file, const std::string& name) {
  for (const Setting& setting : file.settings) {
    if (setting.name == name) return where(file.path, setting.line);
  }
  return where(file.path, 0);
}

}  // namespace

std::map<std::string, std::vector<std::string>> SettingsFile::by_name() const {
  std::map<std::string, std::vector<std::string>> names;
  for (const Setting& setting : settings) names[setting.name].push_back(setting.value);
  return names;
}

SettingsFile read_settings_file(const std::string& path) {
  if (std::filesystem::is_directory(path)) throw UsageError(fmt::format("--config {}: is a directory", path));
  std::ifstream file(path);
  if (!file) throw UsageError(fmt::format("--config {}: {}", path, std::strerror(errno)));
  SettingsFile result{path, {}};
  std::string line;
  for (unsigned number = 1; std::getline(file, line); ++number) {
    if (auto setting = parse_line(line, where(path, number))) {
      setting->line = number;
      result.settings.push_back(std::move(*setting));
    }
  }
  if (file.bad()) throw UsageError(fmt::format("--config {}: read error", path));
  return result;
}

std::map<std::string, std::vector<std::string>> given_options(const CLI::App& command) {
  std::map<std::string, std::vector<std::string>> given;
  for (const CLI::Option* option : command.get_options()) {
    if (option->count() == 0 || option->get_lnames().empty()) continue;
    given[option->get_lnames().front()] = option->results();
  }
  return given;
}

void check_setting_names(const CLI::App& command, const SettingsFile& file) {
  for (const Setting& setting : file.settings) {
    if (option_named(command, setting.name) != nullptr) continue;
    throw UsageError(fmt::format("{}: '{}' is not a setting of `ringlinger {}` (the names are its "
                                 "long flags without the dashes; see --help)",
                                 where(file.path, setting.line), setting.name, command.get_name()));
  }
}

void apply_settings(CLI::App& command, const SettingsFile& file,
                    const std::map<std::string, std::vector<std::string>>& skip, bool ignore_unknown) {
  if (!ignore_unknown) check_setting_names(command, file);
  for (const auto& [name, values] : file.by_name()) {
    if (option_named(command, name) == nullptr || skip.contains(name)) continue;  // the command line wins
    give(*command.get_option("--" + name), values, first_line_of(file, name));
  }
}

void apply_values(CLI::App& command, const std::map<std::string, std::vector<std::string>>& values,
                  bool ignore_unknown) {
  for (const auto& [name, typed] : values) {
    CLI::Option* option = command.get_option_no_throw("--" + name);
    if (option == nullptr) {
      if (ignore_unknown) continue;
      throw UsageError(fmt::format("--{}: not a flag of `ringlinger {}`", name, command.get_name()));
    }
    give(*option, typed, {});
  }
}

}  // namespace ringlinger::tools
