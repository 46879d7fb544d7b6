// The C library's own functions behind the ones the preload library interposes, found with
// dlsym(RTLD_NEXT) once at load time (and on first use, for calls made by other libraries'
// constructors before ours ran).
#pragma once

#include <cstdio>
#include <spawn.h>
#include <sys/epoll.h>
#include <sys/socket.h>

namespace ringlinger::preload {

struct RealCalls {
  int (*close)(int) = nullptr;
  int (*close_range)(unsigned, unsigned, int) = nullptr;
  int (*dup2)(int, int) = nullptr;
  int (*dup3)(int, int, int) = nullptr;
  int (*fclose)(FILE*) = nullptr;
  int (*epoll_ctl)(int, int, int, epoll_event*) = nullptr;
  long (*syscall)(long, long, long, long, long, long, long) = nullptr;
  int (*accept)(int, sockaddr*, socklen_t*) = nullptr;
  int (*accept4)(int, sockaddr*, socklen_t*, int) = nullptr;
  int (*socket)(int, int, int) = nullptr;
  int (*open)(const char*, int, ...) = nullptr;
  int (*openat)(int, const char*, int, ...) = nullptr;
  int (*dup)(int) = nullptr;
  int (*fcntl)(int, int, ...) = nullptr;
  int (*pipe2)(int*, int) = nullptr;
  int (*posix_spawn)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                     const posix_spawnattr_t*, char* const[], char* const[]) = nullptr;
  int (*posix_spawnp)(pid_t*, const char*, const posix_spawn_file_actions_t*,
                      const posix_spawnattr_t*, char* const[], char* const[]) = nullptr;
  int (*system)(const char*) = nullptr;
  FILE* (*popen)(const char*, const char*) = nullptr;
};

// Every pointer set (an abort with a message if the C library lacks one of them).
const RealCalls& real() noexcept;

}  // namespace ringlinger::preload
