// The C library functions this library replaces, and nothing else: the ways a program drops a
// socket (close, close_range, dup2/dup3 onto it, fclose, syscall(SYS_close, ...)), the epoll
// registrations it makes (so a handed-off socket leaves its epoll sets), the calls that copy
// descriptors into another process (fork's handlers are in lingerer.cpp; posix_spawn, system,
// popen here), and the calls that create a descriptor (an EMFILE while sockets linger resets the
// oldest of them and tries once more). Every function goes straight to the C library's own when
// called on the manager thread.
// meson builds with _FILE_OFFSET_BITS=64, under which <fcntl.h> renames open to open64: this
// file defines both, under their own names.
#undef _FILE_OFFSET_BITS
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>

#include "classify.hpp"
#include "fd_table.hpp"
#include "lingerer.hpp"
#include "real_calls.hpp"

namespace ringlinger::preload {
namespace {

void mark_shared(int fd) noexcept;

// What becomes of a program's descriptor it is about to drop.
enum class Drop { plain, handed_off, ours };

// One of ours: marked so, and still the same socket (the manager may have closed it and the
// program got the number again before the mark was cleared: then the mark goes now).
bool lingering(int fd, FdEntry* entry) noexcept {
  if (entry == nullptr || (entry->flags.load(std::memory_order_acquire) & FdEntry::kLingering) == 0) {
    return false;
  }
  const int saved = errno;
  struct stat status{};
  const bool same = fstat(fd, &status) == 0 && status.st_ino == entry->inode.load(std::memory_order_relaxed);
  const bool own = own_process();
  errno = saved;
  if (!own) return false;  // a vfork child's copy of ours: its to close
  if (!same) entry->clear();
  return same;
}

// The number is closed: what was known of it goes (not by a vfork child, whose table it is not).
void forget(FdEntry* entry) noexcept {
  const int saved = errno;
  if (own_process()) entry->clear();
  errno = saved;
}

// The decision every dropping call shares. `close_number`: as take()'s.
Drop drop(int fd, bool close_number) noexcept {
  FdEntry* entry = FdTable::find(fd, false);
  if (lingering(fd, entry)) return Drop::ours;  // not the program's: it closed this number before
  if (!has_pending_bytes(fd)) {
    if (entry != nullptr && entry->in_use()) forget(entry);
    return Drop::plain;
  }
  const std::uint8_t flags = entry != nullptr ? entry->flags.load(std::memory_order_relaxed) : 0;
  if ((flags & (FdEntry::kShared | FdEntry::kEpollOverflow)) != 0) {
    count_plain(Plain::shared);
    forget(entry);
    return Drop::plain;
  }
  if (take(fd, close_number)) return Drop::handed_off;
  if (entry != nullptr) forget(entry);
  return Drop::plain;
}

int close_fd(int fd) noexcept {
  if (on_manager_thread()) return real().close(fd);
  switch (drop(fd, true)) {
    case Drop::handed_off:
      return 0;
    case Drop::ours:
      errno = EBADF;  // what the program would have had: for it, the number is closed
      return -1;
    case Drop::plain:
      break;
  }
  return real().close(fd);
}

// dup2/dup3 onto `target` drop the program's socket there, or one of ours the program cannot
// know is open (then it is reset first: the program's call must get the number).
void before_replacing(int source, int target) noexcept {
  if (source == target || on_manager_thread()) return;
  if (drop(target, false) == Drop::ours) {
    evict_range(static_cast<unsigned>(target), static_cast<unsigned>(target));
  }
}

// dup2 (`two`: flags ignored, and the same number returned when both are the same) or dup3.
int dup3_fd(int source, int target, int flags, bool two) noexcept {
  before_replacing(source, target);
  const int result = two ? real().dup2(source, target) : real().dup3(source, target, flags);
  if (result >= 0 && source != target) {
    mark_shared(source);
    mark_shared(target);
  }
  return result;
}

struct RangeVisit {
  unsigned first, last;
};

// close_range: the program's sockets in the range are dropped one by one; ours are skipped, by
// closing the range in pieces around them.
int close_range_around_ours(unsigned first, unsigned last, int flags) noexcept {
  if (!own_process()) return real().close_range(first, last, flags);  // a vfork child's
  RangeVisit range{first, last};
  for_each_open_descriptor(
      [](int fd, void* context) {
        const auto* r = static_cast<RangeVisit*>(context);
        if (static_cast<unsigned>(fd) >= r->first && static_cast<unsigned>(fd) <= r->last) {
          drop(fd, false);  // the program's number is closed by the calls below, in any case
        }
      },
      &range);
  unsigned from = first;
  bool done = false;  // the last number of the range was one of ours
  int result = 0;
  FdTable::for_each(FdEntry::kLingering, [&](int fd, FdEntry&) {  // in ascending order
    const auto number = static_cast<unsigned>(fd);
    if (done || number < from || number > last) return;
    if (number > from && real().close_range(from, number - 1, flags) != 0) result = -1;
    done = number == last;
    from = number + 1;
  });
  if (!done && real().close_range(from, last, flags) != 0) result = -1;
  return result;
}

// A call that creates a descriptor: EMFILE while sockets linger frees some and tries again.
// Not again from inside a release: what it calls may make descriptors too (UBSan's vptr check
// makes a pipe), and would release again, without end.
__attribute__((tls_model("initial-exec"))) thread_local bool tls_releasing = false;

template <typename Call>
auto retry_on_emfile(Call call) noexcept {
  auto result = call();
  if (result < 0 && errno == EMFILE && !on_manager_thread() && !tls_releasing) {
    tls_releasing = true;
    const bool released = release_descriptors();
    tls_releasing = false;
    if (released) result = call();
  }
  return result;
}

// A second number for the same socket: closing one of them is not its end any more (for good:
// when the other goes, nothing says so).
void mark_shared(int fd) noexcept {
  // No own_process() here: a vfork child's mark only makes the parent close that number plainly,
  // the safe way, and a getpid() per dup would be paid by every program.
  if (on_manager_thread()) return;
  if (FdEntry* entry = FdTable::find(fd, true)) entry->flags.fetch_or(FdEntry::kShared, std::memory_order_relaxed);
}

template <typename Call>
int duplicate(int source, Call call) noexcept {
  const int result = retry_on_emfile(call);
  if (result >= 0) {
    mark_shared(source);
    mark_shared(result);
  }
  return result;
}

int fcntl_fd(int fd, int command, void* argument) noexcept {
  if (command != F_DUPFD && command != F_DUPFD_CLOEXEC) return real().fcntl(fd, command, argument);
  return duplicate(fd, [&] { return real().fcntl(fd, command, argument); });
}

// Before a program starts another: its inheritable sockets are the new program's too.
void before_spawn() noexcept {
  if (!on_manager_thread()) mark_open_descriptors_shared(true);
}

long forward_syscall(long number, va_list args) noexcept {
  long a[6];
  for (long& value : a) value = va_arg(args, long);
  switch (number) {
    case SYS_close:
      return close_fd(static_cast<int>(a[0]));
    case SYS_close_range:
      return close_range(static_cast<unsigned>(a[0]), static_cast<unsigned>(a[1]),
                         static_cast<int>(a[2]));
    case SYS_dup2:
    case SYS_dup3:
      return dup3_fd(static_cast<int>(a[0]), static_cast<int>(a[1]), static_cast<int>(a[2]),
                     number == SYS_dup2);
    case SYS_dup:
      return duplicate(static_cast<int>(a[0]), [&] { return real().syscall(number, a[0], 0, 0, 0, 0, 0); });
    default:
      break;
  }
  return real().syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

__attribute__((constructor)) void load() noexcept {
  real();
  initialise();
}

}  // namespace
}  // namespace ringlinger::preload

using ringlinger::preload::before_replacing;
using ringlinger::preload::before_spawn;
using ringlinger::preload::real;
using ringlinger::preload::retry_on_emfile;

// The library is built with hidden visibility; these, and only these, are seen by the program.
#pragma GCC visibility push(default)
extern "C" {

int close(int fd) { return ringlinger::preload::close_fd(fd); }

int close_range(unsigned first, unsigned last, int flags) {
  if (ringlinger::preload::on_manager_thread() || (flags & CLOSE_RANGE_CLOEXEC) != 0 || first > last) {
    return real().close_range(first, last, flags);
  }
  return ringlinger::preload::close_range_around_ours(first, last, flags);
}

int dup2(int source, int target) { return ringlinger::preload::dup3_fd(source, target, 0, true); }

int dup3(int source, int target, int flags) {
  return ringlinger::preload::dup3_fd(source, target, flags, false);
}

int fclose(FILE* stream) {
  const int fd = stream != nullptr ? fileno(stream) : -1;
  if (fd >= 0 && !ringlinger::preload::on_manager_thread()) {
    fflush(stream);  // the stream's buffered output goes first, as fclose's would
    ringlinger::preload::drop(fd, false);  // fclose closes the program's number below
  }
  return real().fclose(stream);
}

int epoll_ctl(int epoll_fd, int operation, int fd, epoll_event* event) {
  const int result = real().epoll_ctl(epoll_fd, operation, fd, event);
  if (result != 0 || ringlinger::preload::on_manager_thread()) return result;
  // No own_process() here (a getpid() per registration): a vfork child does not touch epoll sets
  // before its exec; the close of one is where a vfork child meets the marks, and is checked.
  using ringlinger::preload::FdTable;
  if (operation == EPOLL_CTL_ADD) {
    if (auto* entry = FdTable::find(fd, true)) entry->add_epoll(epoll_fd);
  } else if (operation == EPOLL_CTL_DEL) {
    if (auto* entry = FdTable::find(fd, false)) entry->remove_epoll(epoll_fd);
  }
  return result;
}

long syscall(long number, ...) {
  va_list args;
  va_start(args, number);
  const long result = ringlinger::preload::forward_syscall(number, args);
  va_end(args);
  return result;
}

int accept(int fd, sockaddr* address, socklen_t* length) {
  return retry_on_emfile([&] { return real().accept(fd, address, length); });
}

int accept4(int fd, sockaddr* address, socklen_t* length, int flags) {
  return retry_on_emfile([&] { return real().accept4(fd, address, length, flags); });
}

int socket(int domain, int type, int protocol) {
  return retry_on_emfile([&] { return real().socket(domain, type, protocol); });
}

// The one variadic argument after `last`, as `type`, into a new variable `name`.
#define RINGLINGER_VARIADIC_ARGUMENT(type, name, last) \
  type name;                                           \
  {                                                    \
    va_list args;                                      \
    va_start(args, last);                              \
    name = va_arg(args, type);                         \
    va_end(args);                                      \
  }

// open's mode argument is there only with O_CREAT or O_TMPFILE.
#define RINGLINGER_OPEN_MODE(flags)                                            \
  mode_t mode = 0;                                                             \
  if (((flags) & O_CREAT) != 0 || ((flags) & O_TMPFILE) == O_TMPFILE) {         \
    RINGLINGER_VARIADIC_ARGUMENT(mode_t, given, flags)                         \
    mode = given;                                                              \
  }

int open(const char* path, int flags, ...) {
  RINGLINGER_OPEN_MODE(flags)
  return retry_on_emfile([&] { return real().open(path, flags, mode); });
}

int open64(const char* path, int flags, ...) {
  RINGLINGER_OPEN_MODE(flags)
  return retry_on_emfile([&] { return real().open(path, flags, mode); });
}

int openat(int directory, const char* path, int flags, ...) {
  RINGLINGER_OPEN_MODE(flags)
  return retry_on_emfile([&] { return real().openat(directory, path, flags, mode); });
}

int openat64(int directory, const char* path, int flags, ...) {
  RINGLINGER_OPEN_MODE(flags)
  return retry_on_emfile([&] { return real().openat(directory, path, flags, mode); });
}

int dup(int fd) {
  return ringlinger::preload::duplicate(fd, [&] { return real().dup(fd); });
}

// fcntl's third argument, whatever it is, read as glibc's fcntl reads it (a pointer's width).
int fcntl(int fd, int command, ...) {
  RINGLINGER_VARIADIC_ARGUMENT(void*, argument, command)
  return ringlinger::preload::fcntl_fd(fd, command, argument);
}

int fcntl64(int fd, int command, ...) {
  RINGLINGER_VARIADIC_ARGUMENT(void*, argument, command)
  return ringlinger::preload::fcntl_fd(fd, command, argument);
}

int pipe2(int fds[2], int flags) {
  return retry_on_emfile([&] { return real().pipe2(fds, flags); });
}

int pipe(int fds[2]) {
  return retry_on_emfile([&] { return real().pipe2(fds, 0); });
}

int posix_spawn(pid_t* pid, const char* path, const posix_spawn_file_actions_t* actions,
                const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  before_spawn();
  return real().posix_spawn(pid, path, actions, attributes, argv, envp);
}

int posix_spawnp(pid_t* pid, const char* file, const posix_spawn_file_actions_t* actions,
                 const posix_spawnattr_t* attributes, char* const argv[], char* const envp[]) {
  before_spawn();
  return real().posix_spawnp(pid, file, actions, attributes, argv, envp);
}

int system(const char* command) {
  before_spawn();
  return real().system(command);
}

FILE* popen(const char* command, const char* mode) {
  before_spawn();
  return real().popen(command, mode);
}

}  // extern "C"
#pragma GCC visibility pop
