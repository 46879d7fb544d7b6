#include "reload.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "settings_file.hpp"

namespace ringlinger::tools {

namespace {

// The settings a reload changes, by flag name, and how each is copied and shown.
struct Reloadable {
  std::string_view name;
  void (*copy)(Config& to, const Config& from);
  std::string (*text)(const Config& config);
};

constexpr Reloadable kReloadable[] = {
    {"drain-idle-timeout", [](Config& to, const Config& from) { to.drain_idle_timeout_ms = from.drain_idle_timeout_ms; },
     [](const Config& c) { return duration_flag_text_ms(c.drain_idle_timeout_ms); }},
    {"drain-timeout", [](Config& to, const Config& from) { to.drain_timeout_ms = from.drain_timeout_ms; },
     [](const Config& c) { return duration_flag_text_ms(c.drain_timeout_ms); }},
    {"drain-max-bytes", [](Config& to, const Config& from) { to.drain_max_bytes = from.drain_max_bytes; },
     [](const Config& c) { return bytes_flag_text(c.drain_max_bytes); }},
    {"send-timeout", [](Config& to, const Config& from) { to.send_timeout_ms = from.send_timeout_ms; },
     [](const Config& c) { return duration_flag_text_ms(c.send_timeout_ms); }},
    {"orphan-timeout", [](Config& to, const Config& from) { to.orphan_timeout_ms = from.orphan_timeout_ms; },
     [](const Config& c) { return duration_flag_text_ms(c.orphan_timeout_ms); }},
    {"on-timeout", [](Config& to, const Config& from) { to.on_timeout = from.on_timeout; },
     [](const Config& c) { return std::string(to_string(c.on_timeout)); }},
    {"shutdown", [](Config& to, const Config& from) { to.shutdown_mode = from.shutdown_mode; },
     [](const Config& c) { return std::string(to_string(c.shutdown_mode)); }},
};

bool reloadable(const std::string& name) {
  if (name == "stop-grace") return true;
  for (const Reloadable& entry : kReloadable) {
    if (entry.name == name) return true;
  }
  return false;
}

// The flags the new file changes that only a restart applies (the command line's win anyway).
std::vector<std::string> needing_restart(const std::map<std::string, std::vector<std::string>>& before,
                                         const std::map<std::string, std::vector<std::string>>& after,
                                         const std::map<std::string, std::vector<std::string>>& typed) {
  std::map<std::string, bool> names;
  for (const auto& [name, values] : before) names[name] = true;
  for (const auto& [name, values] : after) names[name] = true;
  std::vector<std::string> restart;
  for (const auto& [name, unused] : names) {
    if (reloadable(name) || typed.contains(name)) continue;
    const auto old_value = before.find(name);
    const auto new_value = after.find(name);
    const bool same = old_value != before.end() && new_value != after.end() && old_value->second == new_value->second;
    if (!same) restart.push_back(name);
  }
  return restart;
}

// The file and the command line over the defaults, as a fresh command would see them: the
// runner's flags only (a command's own flags need a restart).
RunnerFlags flags_from(const RunnerFlags& running, const SettingsFile& file) {
  check_setting_names(*running.command, file);
  CLI::App fresh;
  RunnerFlags next;
  add_runner_flags(CommandFlags(fresh), next);
  apply_values(fresh, running.typed, true);
  apply_settings(fresh, file, running.typed, true);
  return next;
}

}  // namespace

Reloader::Reloader(const RunnerSettings& settings, Apply apply)
    : settings_(settings),
      apply_(std::move(apply)),
      file_(settings.flags != nullptr ? settings.flags->from_file : decltype(file_){}),
      config_(settings.config),
      stop_grace_(settings.stop_grace) {}

void Reloader::reload() {
  const RunnerFlags* running = settings_.flags;
  if (running == nullptr || running->config_path.empty()) {
    notice(settings_, "SIGHUP: there is no --config file to read again; nothing changed");
    return;
  }
  try {
    const SettingsFile file = read_settings_file(running->config_path);
    const RunnerFlags next = flags_from(*running, file);
    const Config read = to_config(next.drain);
    const std::chrono::milliseconds grace(duration_flag_ms("--stop-grace", next.stop_grace));
    Config merged = config_;
    std::string changes;
    for (const Reloadable& entry : kReloadable) {
      entry.copy(merged, read);
      if (entry.text(merged) == entry.text(config_)) continue;
      changes += fmt::format("{}{} {} -> {}", changes.empty() ? "" : ", ", entry.name, entry.text(config_), entry.text(merged));
    }
    if (grace != stop_grace_) {
      changes += fmt::format("{}stop-grace {} -> {}", changes.empty() ? "" : ", ",
                             duration_flag_text_ms(static_cast<std::uint64_t>(stop_grace_.count())),
                             duration_flag_text_ms(static_cast<std::uint64_t>(grace.count())));
    }
    const std::vector<std::string> restart = needing_restart(file_, file.by_name(), running->typed);
    apply_(merged);
    config_ = merged;
    stop_grace_ = grace;
    file_ = file.by_name();
    notice(settings_, fmt::format("SIGHUP: read {} again: {}", running->config_path, changes.empty() ? "nothing changed" : changes));
    if (!restart.empty()) {
      std::string names;  // joined by hand: fmt::join trips GCC 12's -Wstringop-overflow at -O3
      for (const std::string& name : restart) names += (names.empty() ? "" : ", ") + name;
      notice(settings_, fmt::format("SIGHUP: {} changed in {}: a restart applies it", names, running->config_path), true);
    }
  } catch (const UsageError& error) {
    notice(settings_, fmt::format("SIGHUP: the configuration stays as it was: {}", error.what()), true);
  }
}

}  // namespace ringlinger::tools
