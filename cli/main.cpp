// ringlinger: close TCP connections the right way, at scale, on io_uring.
//   ringlinger serve   a gracefully closing HTTP/1.x responder (the early-response case)
//   ringlinger client  a verifying load generator (exact bytes AND clean EOF per connection)
//   ringlinger demo    serve + client, then the same with a plain close(), side by side
//   ringlinger bench   the same workload against several backends, side by side
//   ringlinger probe   what this machine supports, and which backend serve and bench would use
//   ringlinger proxy   an L4 TCP proxy that passes half-closes on and closes both legs gracefully
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "ringlinger/version.hpp"

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
                                         add_proxy_command(program)};
  try {
    program.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) return program.exit(error);  // --help, --version
    std::cerr << "ringlinger: " << error.what() << "\nRun 'ringlinger --help' for usage.\n";
    return 2;
  }
  for (const Command& command : commands) {
    if (!command.app->parsed()) continue;
    try {
      return command.run();
    } catch (const UsageError& error) {
      std::cerr << "ringlinger " << command.app->get_name() << ": " << error.what() << "\n";
      return 2;
    } catch (const std::exception& error) {
      std::cerr << "ringlinger " << command.app->get_name() << ": " << error.what() << "\n";
      return 1;
    }
  }
  return 2;
}
