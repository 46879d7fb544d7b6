// `ringlinger wrap [flags] -- COMMAND ARGS...`: runs an unmodified program with
// libringlinger-preload.so preloaded, so that its plain close() of a socket with unread input
// becomes a graceful close. The flags become the environment variables of
// preload/environment.hpp, then wrap execs COMMAND: it keeps wrap's pid, stdio and exit code.
// A program whose close() does not go through the C library (static, Go) gets a warning first.
#include <elf.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "../preload/environment.hpp"
#include "commands.hpp"

#ifndef RINGLINGER_PRELOAD_INSTALLED
#error "meson defines RINGLINGER_PRELOAD_INSTALLED: <libdir>/ringlinger/libringlinger-preload.so"
#endif

namespace ringlinger::tools {
namespace {

namespace fs = std::filesystem;

// Overrides where the preload library is looked for (tests, a library built elsewhere).
constexpr const char* kPreloadLibraryVariable = "RINGLINGER_PRELOAD_LIBRARY";
constexpr const char* kPreloadName = "libringlinger-preload.so";
constexpr std::uint32_t kMaxLingering = 1'000'000;
constexpr std::uint64_t kMaxExitGraceMs = 86'400'000;

struct WrapFlags {
  DrainFlags drain;
  std::uint32_t max_lingering = wrap_env::kDefaultMaxLingering;
  std::string exit_grace = duration_flag_text_ms(wrap_env::kDefaultExitGraceMs);
  std::string json_path;
  bool quiet = false;
  std::vector<std::string> command;
  std::string never_filled;
  CLI::App* app = nullptr;  // to tell a flag given from its default
};

// The library to preload, as an absolute path: $RINGLINGER_PRELOAD_LIBRARY, else the build tree's
// (build/cli/ringlinger next to build/preload/), else the installed one.
std::string preload_library() {
  if (const char* named = std::getenv(kPreloadLibraryVariable); named != nullptr && *named != '\0') {
    if (!fs::is_regular_file(named)) {
      throw UsageError(fmt::format("{}={}: no such file", kPreloadLibraryVariable, named));
    }
    return fs::canonical(named).string();
  }
  std::error_code error;
  const fs::path self = fs::read_symlink("/proc/self/exe", error);
  const fs::path build_tree = self.parent_path().parent_path() / "preload" / kPreloadName;
  if (!error && fs::is_regular_file(build_tree)) return fs::canonical(build_tree).string();
  if (fs::is_regular_file(RINGLINGER_PRELOAD_INSTALLED)) return RINGLINGER_PRELOAD_INSTALLED;
  throw UsageError(fmt::format("{} not found: looked at {} and {} (set {} to its path)", kPreloadName,
                               RINGLINGER_PRELOAD_INSTALLED, build_tree.string(),
                               kPreloadLibraryVariable));
}

// LD_PRELOAD with what was there first, then `library`: a sanitizer's runtime must come first
// (ASan refuses to start otherwise), and another preload that replaces close() reaches ours
// through RTLD_NEXT as it would the C library's. ld.so splits the list at spaces and colons, so a
// path holding either cannot be preloaded.
std::string preload_list(const std::string& library) {
  if (library.find_first_of(" :") != std::string::npos) {
    throw UsageError(fmt::format("the preload library's path '{}' has a space or a colon, which "
                                 "LD_PRELOAD cannot carry",
                                 library));
  }
  const char* existing = std::getenv("LD_PRELOAD");
  if (existing == nullptr || *existing == '\0') return library;
  return std::string(existing) + " " + library;
}

// --json: created now, so that a path the program could not write is a usage error before it
// starts; passed on as an absolute path (the command may change its directory).
std::string json_file(const std::string& path) {
  if (path == "-") {
    throw UsageError("--json: '-' (standard output) belongs to the command; give a file name");
  }
  if (path.empty() || fs::is_directory(path)) {
    throw UsageError(fmt::format("--json: '{}' is not a file name", path));
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw UsageError(fmt::format("--json: cannot write {}: {}", path, std::strerror(errno)));
  ::close(fd);
  return fs::absolute(path).string();
}

// Each lingering socket holds a descriptor of the program's own: more than its limit cannot be.
void check_max_lingering(const WrapFlags& flags) {
  rlimit nofile{};
  if (flags.app->count("--max-lingering") == 0 || getrlimit(RLIMIT_NOFILE, &nofile) != 0 ||
      nofile.rlim_cur == RLIM_INFINITY || flags.max_lingering <= nofile.rlim_cur) {
    return;
  }
  throw UsageError(fmt::format("--max-lingering: {} is more than the descriptor limit, "
                               "RLIMIT_NOFILE's soft limit {} (ulimit -n)",
                               flags.max_lingering, nofile.rlim_cur));
}

// The environment the preload library reads (preload/environment.hpp), from the flags but
// --json; a name with no value is removed, so that a wrap inside a wrapped program does not
// inherit it.
std::vector<std::pair<const char*, std::string>> wrap_environment(const WrapFlags& flags) {
  const Config config = to_config(flags.drain);
  const std::uint64_t exit_grace_ms = duration_flag_ms("--exit-grace", flags.exit_grace);
  if (exit_grace_ms > kMaxExitGraceMs) {
    throw UsageError("--exit-grace: must be at most 24h (got " + flags.exit_grace + ")");
  }
  check_max_lingering(flags);
  return {
      {wrap_env::kDrainIdleTimeoutMs, std::to_string(config.drain_idle_timeout_ms)},
      {wrap_env::kDrainTimeoutMs, std::to_string(config.drain_timeout_ms)},
      {wrap_env::kDrainMaxBytes, std::to_string(config.drain_max_bytes)},
      {wrap_env::kSendTimeoutMs, std::to_string(config.send_timeout_ms)},
      {wrap_env::kMaxLingering, std::to_string(flags.max_lingering)},
      {wrap_env::kExitGraceMs, std::to_string(exit_grace_ms)},
      {wrap_env::kQuiet, flags.quiet ? "1" : ""},
      {wrap_env::kMainPid, std::to_string(::getpid())},
  };
}

// Where execvp would find `command`: itself when it names a path, else the first executable
// file of that name on $PATH (execvp's default path without one).
std::optional<std::string> resolve_command(const std::string& command) {
  if (command.find('/') != std::string::npos) return command;
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/bin:/usr/bin";
  while (true) {
    const std::size_t colon = rest.find(':');
    const std::string_view directory = rest.substr(0, colon);
    const std::string candidate = (directory.empty() ? std::string(".") : std::string(directory)) + "/" + command;
    struct stat info {};
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) && ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    if (colon == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(colon + 1);
  }
}

// Reads `count` objects at `offset`; false when the file is shorter.
template <class T>
bool read_at(int fd, std::uint64_t offset, T* out, std::size_t count = 1) {
  const std::size_t size = sizeof(T) * count;
  return offset <= static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) &&
         ::pread(fd, out, size, static_cast<off_t>(offset)) == static_cast<ssize_t>(size);
}

// Whether a PT_NOTE segment holds a note named "Go" (the Go linker's build id).
bool has_go_note(int fd, const Elf64_Phdr& note) {
  std::array<char, 4096> bytes{};
  const std::size_t size = std::min<std::uint64_t>(note.p_filesz, bytes.size());
  if (!read_at(fd, note.p_offset, bytes.data(), size)) return false;
  for (std::size_t at = 0; at + sizeof(Elf64_Nhdr) <= size;) {
    Elf64_Nhdr header{};
    std::memcpy(&header, bytes.data() + at, sizeof(header));
    const std::size_t name_at = at + sizeof(header);
    if (header.n_namesz == 3 && name_at + 3 <= size && std::memcmp(bytes.data() + name_at, "Go", 3) == 0) {
      return true;
    }
    at = name_at + ((header.n_namesz + 3ULL) & ~3ULL) + ((header.n_descsz + 3ULL) & ~3ULL);
  }
  return false;
}

// Whether the section names hold ".go.buildinfo" (every Go binary since Go 1.18).
bool has_go_section(int fd, const Elf64_Ehdr& elf) {
  if (elf.e_shentsize != sizeof(Elf64_Shdr) || elf.e_shnum == 0 || elf.e_shnum > 4096 ||
      elf.e_shstrndx >= elf.e_shnum) {
    return false;
  }
  std::vector<Elf64_Shdr> sections(elf.e_shnum);
  if (!read_at(fd, elf.e_shoff, sections.data(), sections.size())) return false;
  const Elf64_Shdr& names_section = sections[elf.e_shstrndx];
  std::string names(std::min<std::uint64_t>(names_section.sh_size, 1 << 16), '\0');
  if (!read_at(fd, names_section.sh_offset, names.data(), names.size())) return false;
  return std::any_of(sections.begin(), sections.end(), [&names](const Elf64_Shdr& section) {
    return section.sh_name < names.size() && std::string_view(names.c_str() + section.sh_name) == ".go.buildinfo";
  });
}

// "statically linked" or "a Go program" when `fd` is a 64-bit little-endian ELF file whose
// close() cannot be interposed; nothing for anything else (scripts, other ELF kinds).
std::optional<std::string_view> uncovered_kind(int fd) {
  if constexpr (std::endian::native != std::endian::little) return std::nullopt;
  Elf64_Ehdr elf{};
  if (!read_at(fd, 0, &elf) || std::memcmp(elf.e_ident, ELFMAG, SELFMAG) != 0 ||
      elf.e_ident[EI_CLASS] != ELFCLASS64 || elf.e_ident[EI_DATA] != ELFDATA2LSB ||
      elf.e_phentsize != sizeof(Elf64_Phdr) || elf.e_phnum == 0 || elf.e_phnum > 1024) {
    return std::nullopt;
  }
  std::vector<Elf64_Phdr> segments(elf.e_phnum);
  if (!read_at(fd, elf.e_phoff, segments.data(), segments.size())) return std::nullopt;
  const bool go = has_go_section(fd, elf) ||
                  std::any_of(segments.begin(), segments.end(), [fd](const Elf64_Phdr& segment) {
                    return segment.p_type == PT_NOTE && has_go_note(fd, segment);
                  });
  if (go) return "a Go program";
  const bool dynamic = std::any_of(segments.begin(), segments.end(),
                                   [](const Elf64_Phdr& segment) { return segment.p_type == PT_INTERP; });
  if (!dynamic) return "statically linked";
  return std::nullopt;
}

void warn_if_uncovered(const std::string& command) {
  const std::optional<std::string> path = resolve_command(command);
  const int fd = path ? ::open(path->c_str(), O_RDONLY | O_CLOEXEC) : -1;
  if (fd < 0) return;  // execvp will say why
  const std::optional<std::string_view> kind = uncovered_kind(fd);
  ::close(fd);
  if (kind) {
    std::cerr << fmt::format("ringlinger wrap: {} is {}: its close() does not go through the C "
                             "library, so wrap cannot see its sockets (see docs/WRAP.md)\n",
                             command, *kind);
  }
}

// Replaces this process with the command, or returns a shell's exit code for why it could not.
int exec_command(const std::vector<std::string>& command) {
  std::vector<char*> argv;
  for (const std::string& argument : command) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  ::execvp(argv[0], argv.data());
  const int error = errno;
  std::cerr << fmt::format("ringlinger wrap: cannot run {}: {}\n", command.front(), std::strerror(error));
  return error == ENOENT ? 127 : 126;
}

int run_wrap(const WrapFlags& flags) {
  for (const std::string& extra : flags.app->remaining()) {
    if (extra == "--") continue;  // CLI11 keeps the separator among them
    throw UsageError(fmt::format("{}: not a flag of wrap; a command's own flags go after --, as in "
                                 "ringlinger wrap [flags] -- COMMAND ARGS...",
                                 extra));
  }
  if (flags.command.empty()) throw UsageError("a command to run is needed after --");
  auto environment = wrap_environment(flags);
  const std::string preload = preload_list(preload_library());
  // Last: the file it creates stays only when everything else was right.
  environment.emplace_back(wrap_env::kJsonPath, flags.json_path.empty() ? "" : json_file(flags.json_path));
  for (const auto& [name, value] : environment) {
    if (value.empty()) {
      ::unsetenv(name);
    } else {
      ::setenv(name, value.c_str(), 1);
    }
  }
  ::setenv("LD_PRELOAD", preload.c_str(), 1);
  warn_if_uncovered(flags.command.front());
  return exec_command(flags.command);
}

// The usage line as it is typed: CLI11's would list the positionals.
class WrapFormatter : public CLI::Formatter {
 public:
  std::string make_usage(const CLI::App* /*app*/, std::string name) const override {
    return get_label("Usage") + ": " + name + " [OPTIONS] -- COMMAND [ARGS...]\n";
  }
};

}  // namespace

Command add_wrap_command(CLI::App& program) {
  auto flags = std::make_shared<WrapFlags>();
  CLI::App* app = program.add_subcommand(
      "wrap",
      "Runs COMMAND with ringlinger's graceful close preloaded, for programs that close their "
      "sockets plainly: a server that answers early (a 413 to an upload, a 401) and close()s "
      "without reading the request makes the kernel reset the connection, and the client loses "
      "the answer. Under wrap, such a close() hands the socket to a background thread that "
      "flushes it, shuts down the write side, drains to EOF and closes it; the program's call "
      "returns at once. COMMAND keeps wrap's pid, stdio and exit code.");
  flags->app = app;
  CommandFlags command(*app);
  add_drain_flags(command, flags->drain);
  // What the preload library carries over; the rest of the drain flags are the manager's own.
  for (const char* unused : {"--orphan-timeout", "--on-timeout", "--shutdown", "--max-connections",
                             "--batch-wait"}) {
    app->remove_option(app->get_option(unused));
  }
  command.add_option("--max-lingering", flags->max_lingering,
                     "Most sockets lingering at once (each holds one of the program's "
                     "descriptors); a close beyond it is a plain close. At most RLIMIT_NOFILE")
      .check(whole_number(1, kMaxLingering)).type_name("N").capture_default_str();
  app->add_option("--exit-grace", flags->exit_grace,
                  "At the program's exit, how long lingering sockets may take before they are "
                  "reset; 0 = reset them at once")
      ->type_name("DURATION")->capture_default_str();
  app->add_option("--json", flags->json_path,
                  "Write the counters to FILE as JSON at exit (a child process that handed "
                  "sockets off writes FILE.PID)")
      ->type_name("FILE");
  app->add_flag("--quiet", flags->quiet, "Do not print the summary line to stderr at exit");
  app->add_option("COMMAND", flags->command, "The program to run and its arguments, after --")
      ->type_name("");
  // CLI11 hands "--" and what follows back to the program once every positional has its
  // minimum (after an unknown flag's value, say); one never filled keeps them here.
  app->add_option("SEPARATOR", flags->never_filled)->group("");
  // Unknown flags before -- are reported by run_wrap, with where COMMAND's own flags go.
  app->allow_extras();
  app->formatter(std::make_shared<WrapFormatter>());
  app->footer(
      "Covered: dynamically linked programs that close through the C library (close, "
      "close_range, dup2/dup3 onto a socket, fclose, syscall(SYS_close)), such as C and C++ "
      "servers and Python's; docs/WRAP.md has the table of runtimes measured.\n"
      "Not covered: statically linked programs and Go programs (wrap warns), and programs that "
      "make the close system call themselves; their sockets close as before.\n"
      "How to tell: at exit the program prints 'ringlinger wrap[PID]: handed off N ...' to "
      "stderr; 0 handed off while clients lose answers means its closes were not seen.\n"
      "Exit status: COMMAND's; 2 for a usage error; 126 or 127 when COMMAND cannot be run.\n"
      "Example: ringlinger wrap --drain-timeout 10s -- python3 -m http.server 8080");
  return {app, [flags] { return run_wrap(*flags); }};
}

}  // namespace ringlinger::tools
