// ringlinger: close TCP connections the right way, at scale, on io_uring.
//   ringlinger serve   a gracefully closing HTTP/1.x responder (the early-response case)
//   ringlinger client  a verifying load generator (exact bytes AND clean EOF per connection)
//   ringlinger demo    serve + client, then the same with a plain close(), side by side
//   ringlinger bench   the same workload against several backends, side by side
//   ringlinger probe   what this machine supports, and which backend serve and bench would use
//   ringlinger proxy   an L4 TCP proxy that passes half-closes on and closes both legs gracefully
//   ringlinger wrap    runs a program with close() made graceful (libringlinger-preload.so)
//   ringlinger help    the program's help, or a subcommand's
// Every usage error exits with 2 before anything starts, as "ringlinger SUBCOMMAND: --flag: what
// is wrong (got VALUE)" and a pointer to that subcommand's --help.
#include <algorithm>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "ringlinger/version.hpp"

namespace ringlinger::tools {
namespace {

// "serve, client, ..., help": every subcommand, for messages.
std::string subcommand_names(const CLI::App& program) {
  std::string names;
  for (const CLI::App* command : program.get_subcommands({})) {
    names += (names.empty() ? "" : ", ") + command->get_name();
  }
  return names;
}

// `ringlinger help [SUBCOMMAND]`: what `ringlinger --help` or `ringlinger SUBCOMMAND --help`
// prints, exit 0; an unknown name exits with 2.
Command add_help_command(CLI::App& program) {
  auto name = std::make_shared<std::string>();
  CLI::App* app = program.add_subcommand("help", "Print this help, or SUBCOMMAND's (as --help does)");
  app->add_option("subcommand", *name, "The subcommand to describe")->type_name("SUBCOMMAND");
  return {app, [&program, name] {
            if (name->empty()) {
              std::cout << program.get_formatter()->make_help(&program, program.get_name(),
                                                                CLI::AppFormatMode::Normal);
              return 0;
            }
            for (const CLI::App* command : program.get_subcommands({})) {
              if (command->get_name() == *name) {
                std::cout << command->help(program.get_name());
                return 0;
              }
            }
            throw UsageError("no subcommand '" + *name + "'; the subcommands are " +
                             subcommand_names(program));
          }};
}

// CLI11's message for a flag value it could not convert ("Could not convert: --threads = -1"),
// said like ours: the flag, the value, and what it takes.
std::string usage_message(const CLI::App* command, const CLI::ParseError& error) {
  constexpr std::string_view kConversion = "Could not convert: ";
  const std::string message = error.what();
  // "Could not convert: FLAG = VALUE", FLAG without spaces: anything else is passed on as it is.
  // (Split by hand: <regex> was the costliest header of the build.)
  const std::string_view rest = std::string_view(message).substr(
      std::min(message.size(), kConversion.size()));
  const std::size_t equals = rest.find(" = ");
  if (command == nullptr || !message.starts_with(kConversion) || equals == 0 ||
      equals == std::string_view::npos || rest.substr(0, equals).find_first_of(" \t\n") !=
                                              std::string_view::npos) {
    return message;
  }
  const std::string flag(rest.substr(0, equals));
  const std::string value(rest.substr(equals + 3));
  const CLI::Option* option = command->get_option_no_throw(flag);
  const std::string type = option != nullptr ? option->get_type_name() : std::string();
  const std::string expected = type == "N" || type == "UINT" ? "a whole number"
                               : type == "INT"               ? "an integer"
                               : type == "FLOAT"             ? "a number"
                                                             : "a valid " + type;
  return flag + ": '" + value + "' is not " + expected;
}

// The subcommand whose flags were being parsed when an error came, if any.
CLI::App* failing_command(const CLI::App& program) {
  const auto parsed = program.get_subcommands();
  return parsed.empty() ? nullptr : parsed.front();
}

}  // namespace
}  // namespace ringlinger::tools

int main(int argc, char** argv) {
  using namespace ringlinger::tools;
  CLI::App program{
      "ringlinger: close TCP connections the right way (flush, shutdown(SHUT_WR), drain to EOF, "
      "close) for tens of thousands of connections on one io_uring ring.",
      "ringlinger"};
  program.require_subcommand(1);
  program.set_version_flag("--version", "ringlinger " + std::string(ringlinger::version()));
  const std::vector<Command> commands = {add_serve_command(program), add_client_command(program),
                                         add_demo_command(program), add_bench_command(program),
                                         add_probe_command(program),
                                         add_proxy_command(program), add_wrap_command(program),
                                         add_help_command(program)};
  try {
    program.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return program.exit(error);  // --help, --version
    const CLI::App* command = failing_command(program);
    if (command == nullptr) {
      std::cerr << "ringlinger: " << error.what() << " (one of " << subcommand_names(program)
                << ")\nRun 'ringlinger --help' for usage.\n";
      return 2;
    }
    const std::string& name = command->get_name();
    std::cerr << "ringlinger " << name << ": " << usage_message(command, error)
              << "\nRun 'ringlinger " << name << " --help' for usage.\n";
    return 2;
  }
  for (const Command& command : commands) {
    if (!command.app->parsed()) continue;
    const std::string& name = command.app->get_name();
    try {
      return command.run();
    } catch (const UsageError& error) {
      std::cerr << "ringlinger " << name << ": " << error.what() << "\nRun 'ringlinger " << name
                << " --help' for usage.\n";
      return 2;
    } catch (const std::exception& error) {
      std::cerr << "ringlinger " << name << ": " << error.what() << "\n";
      return 1;
    }
  }
  return 2;
}
