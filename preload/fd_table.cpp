// The descriptor table: pages of FdEntry mapped with mmap on first use (zeroed memory is an
// empty entry), found with one atomic load.
#include "fd_table.hpp"

#include "real_calls.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ringlinger::preload {
namespace {

constexpr int kPageEntries = 1 << 12;
std::atomic<FdEntry*> pages[FdTable::kMaxTracked / kPageEntries];

FdEntry* map_page(int index) noexcept {
  void* memory = mmap(nullptr, sizeof(FdEntry) * kPageEntries, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  FdEntry* fresh = static_cast<FdEntry*>(memory);
  FdEntry* expected = nullptr;
  if (!pages[index].compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) {
    munmap(memory, sizeof(FdEntry) * kPageEntries);  // another thread mapped it first
    return expected;
  }
  return fresh;
}

// A decimal name of /proc/self/fd, or -1.
int parse_fd(const char* name) noexcept {
  if (name[0] < '0' || name[0] > '9') return -1;
  long value = 0;
  for (const char* c = name; *c != '\0'; ++c) {
    if (*c < '0' || *c > '9' || value > FdTable::kMaxTracked) return -1;
    value = value * 10 + (*c - '0');
  }
  return static_cast<int>(value);
}

}  // namespace

void FdEntry::clear() noexcept {
  flags.store(0, std::memory_order_release);
  for (auto& slot : epoll_fds) slot.store(0, std::memory_order_relaxed);
  inode.store(0, std::memory_order_relaxed);
}

bool FdEntry::in_use() const noexcept {
  if (flags.load(std::memory_order_relaxed) != 0) return true;
  for (const auto& slot : epoll_fds) {
    if (slot.load(std::memory_order_relaxed) != 0) return true;
  }
  return false;
}

void FdEntry::add_epoll(int epoll_fd) noexcept {
  const std::int32_t value = epoll_fd + 1;
  for (auto& slot : epoll_fds) {
    if (slot.load(std::memory_order_relaxed) == value) return;
  }
  for (auto& slot : epoll_fds) {
    std::int32_t empty = 0;
    if (slot.compare_exchange_strong(empty, value, std::memory_order_relaxed)) return;
  }
  flags.fetch_or(kEpollOverflow, std::memory_order_relaxed);
}

void FdEntry::remove_epoll(int epoll_fd) noexcept {
  for (auto& slot : epoll_fds) {
    std::int32_t value = epoll_fd + 1;
    slot.compare_exchange_strong(value, 0, std::memory_order_relaxed);
  }
}

FdEntry* FdTable::page(int index) noexcept { return pages[index].load(std::memory_order_acquire); }

FdEntry* FdTable::find(int fd, bool create) noexcept {
  if (fd < 0 || fd >= kMaxTracked) return nullptr;
  const int index = fd >> kPageBits;
  FdEntry* entries = page(index);
  if (entries == nullptr) {
    if (!create) return nullptr;
    entries = map_page(index);
    if (entries == nullptr) return nullptr;
  }
  return &entries[fd & (kPageEntries - 1)];
}

void for_each_open_descriptor(void (*visit)(int fd, void* context), void* context) noexcept {
  // The C library's syscall(3), not this library's (which would take SYS_close for a program's).
  const auto raw = real().syscall;
  const long directory = raw(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                             O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0, 0);
  if (directory < 0) return;
  alignas(8) char buffer[4096];
  for (;;) {
    const long length = raw(SYS_getdents64, directory, reinterpret_cast<long>(buffer),
                            sizeof buffer, 0, 0, 0);
    if (length <= 0) break;
    for (long offset = 0; offset < length;) {
      struct Dirent64 { ino64_t ino; off64_t off; unsigned short reclen; unsigned char type; char name[1]; };
      const auto* entry = reinterpret_cast<const Dirent64*>(buffer + offset);
      offset += entry->reclen;
      const int fd = parse_fd(entry->name);
      if (fd >= 0 && fd != directory) visit(fd, context);
    }
  }
  raw(SYS_close, directory, 0, 0, 0, 0, 0);
}

void mark_open_descriptors_shared(bool only_inheritable) noexcept {
  for_each_open_descriptor(
      [](int fd, void* context) {
        if (*static_cast<bool*>(context) && (real().fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0) return;
        FdEntry* entry = FdTable::find(fd, true);
        if (entry == nullptr) return;
        if ((entry->flags.load(std::memory_order_relaxed) & FdEntry::kLingering) != 0) return;
        entry->flags.fetch_or(FdEntry::kShared, std::memory_order_relaxed);
      },
      &only_inheritable);
}

}  // namespace ringlinger::preload
