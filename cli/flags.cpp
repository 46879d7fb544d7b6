#include "flags.hpp"

#include <CLI/CLI.hpp>

#include <utility>

namespace ringlinger::tools {

Flag& Flag::type_name(const std::string& name) {
  option_->type_name(name);
  return *this;
}

Flag& Flag::capture_default_str() {
  option_->capture_default_str();
  return *this;
}

Flag& Flag::group(const std::string& name) {
  option_->group(name);
  return *this;
}

Flag& Flag::check(const FlagCheck& check) {
  option_->check(CLI::Validator(check.problem, "", check.name));
  return *this;
}

Flag& Flag::one_of(const std::vector<std::string>& values) {
  option_->check(CLI::IsMember(values));
  return *this;
}

template <typename T>
Flag CommandFlags::add_option(const std::string& name, T& into, const std::string& help) {
  return Flag(*app_->add_option(name, into, help));
}
template Flag CommandFlags::add_option(const std::string&, std::string&, const std::string&);
template Flag CommandFlags::add_option(const std::string&, std::vector<std::string>&,
                                       const std::string&);
template Flag CommandFlags::add_option(const std::string&, std::uint32_t&, const std::string&);
template Flag CommandFlags::add_option(const std::string&, std::uint64_t&, const std::string&);

Flag CommandFlags::add_flag(const std::string& name, bool& into, const std::string& help) {
  return Flag(*app_->add_flag(name, into, help));
}

void CommandFlags::footer(const std::string& text) { app_->footer(text); }

void CommandFlags::parse_complete_callback(std::function<void()> callback) {
  app_->parse_complete_callback(std::move(callback));
}

CommandFlags add_subcommand(CLI::App& program, const std::string& name, const std::string& description) {
  return CommandFlags(*program.add_subcommand(name, description));
}

}  // namespace ringlinger::tools
