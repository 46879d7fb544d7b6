// dlsym(RTLD_NEXT): the definition that would have been used without this library.
#include "real_calls.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace ringlinger::preload {
namespace {

template <typename Function>
void find(Function*& slot, const char* name) noexcept {
  void* symbol = dlsym(RTLD_NEXT, name);
  if (symbol == nullptr) {
    // Nothing can go on without the real call; a message through write(2), which is not ours.
    static constexpr char kPrefix[] = "libringlinger-preload: the C library has no ";
    [[maybe_unused]] auto a = ::write(2, kPrefix, sizeof kPrefix - 1);
    [[maybe_unused]] auto b = ::write(2, name, std::strlen(name));
    [[maybe_unused]] auto c = ::write(2, "\n", 1);
    std::abort();
  }
  slot = reinterpret_cast<Function*>(symbol);
}

RealCalls resolve() noexcept {
  RealCalls calls;
  find(calls.close, "close");
  find(calls.close_range, "close_range");
  find(calls.dup2, "dup2");
  find(calls.dup3, "dup3");
  find(calls.fclose, "fclose");
  find(calls.epoll_ctl, "epoll_ctl");
  find(calls.syscall, "syscall");
  find(calls.accept, "accept");
  find(calls.accept4, "accept4");
  find(calls.socket, "socket");
  find(calls.open, "open");
  find(calls.openat, "openat");
  find(calls.dup, "dup");
  find(calls.fcntl, "fcntl");
  find(calls.pipe2, "pipe2");
  find(calls.posix_spawn, "posix_spawn");
  find(calls.posix_spawnp, "posix_spawnp");
  find(calls.system, "system");
  find(calls.popen, "popen");
  return calls;
}

}  // namespace

const RealCalls& real() noexcept {
  // A function-local static: initialised on first use, which may come from another library's
  // constructor before ours; thread-safe by the C++ rules (a guard, no allocation).
  static const RealCalls calls = resolve();
  return calls;
}

}  // namespace ringlinger::preload
