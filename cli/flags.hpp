// A command's flags as the commands declare them, with CLI11 behind one file (flags.cpp).
// <CLI/CLI.hpp> costs about 10 s of compile time in every file that includes it (g++ 12, -O3:
// its validators are objects built in each file), so only the files that drive CLI11 itself
// include it: flags.cpp, main.cpp (parsing and errors), settings_file.cpp and reload.cpp
// (--config), wrap.cpp (its own help and what follows --).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace ringlinger::tools {

// A check of a flag's value as typed: returns what is wrong with it, or nothing.
struct FlagCheck {
  std::function<std::string(const std::string&)> problem;
  std::string name;  // the validator's name in CLI11 ("whole number"); not shown to the user
};

// One flag, its help settings chained as CLI11's are: add_option(...).type_name("N").
class Flag {
 public:
  explicit Flag(CLI::Option& option) noexcept : option_(&option) {}
  Flag& type_name(const std::string& name);  // the placeholder in --help: SIZE, DURATION
  Flag& capture_default_str();                // --help shows the value it starts with
  Flag& group(const std::string& name);       // the heading it is listed under in --help
  Flag& check(const FlagCheck& check);
  Flag& one_of(const std::vector<std::string>& values);  // any other value is refused

 private:
  CLI::Option* option_;
};

// The flags of one command (a CLI11 subcommand).
class CommandFlags {
 public:
  explicit CommandFlags(CLI::App& app) noexcept : app_(&app) {}
  // A flag with a value, converted into `into`: std::string, a list of them (the flag may be
  // repeated), std::uint32_t or std::uint64_t (flags.cpp instantiates these).
  template <typename T>
  Flag add_option(const std::string& name, T& into, const std::string& help = "");
  Flag add_flag(const std::string& name, bool& into, const std::string& help);  // no value
  void footer(const std::string& text);  // after the flags in --help
  // Runs once the command line (of this command) is parsed, before the command runs.
  void parse_complete_callback(std::function<void()> callback);
  CLI::App& app() const noexcept { return *app_; }

 private:
  CLI::App* app_;
};

// Adds the subcommand `name` to the program.
CommandFlags add_subcommand(CLI::App& program, const std::string& name, const std::string& description);

}  // namespace ringlinger::tools
