// What the preload library knows of each descriptor number, readable from any thread and from a
// fork child (no locks, no allocation but mmap): whether the open file may be shared with another
// process, the epoll sets the program registered it in, and whether it is one of the lingering
// sockets the manager thread owns (with the socket's inode, to tell it from a reused number).
// Pages of entries are mapped on first use; descriptors past kMaxTracked are not tracked (and so
// are never handed off).
#pragma once

#include <atomic>
#include <cstdint>

namespace ringlinger::preload {

struct FdEntry {
  static constexpr std::uint8_t kShared = 1;         // open at a fork or spawn: maybe not the last reference
  static constexpr std::uint8_t kEpollOverflow = 2;  // in more epoll sets than kEpollSlots
  static constexpr std::uint8_t kLingering = 4;      // a socket the manager thread closes
  static constexpr int kEpollSlots = 3;

  std::atomic<std::uint8_t> flags{0};
  // The epoll sets (their fd + 1: 0 is an empty slot, so a fresh mapped page is all empty).
  std::atomic<std::int32_t> epoll_fds[kEpollSlots] = {0, 0, 0};
  std::atomic<std::uint64_t> inode{0};  // kLingering: the socket's inode (fstat's st_ino)

  // Forgets everything: the number was closed.
  void clear() noexcept;
  // Whether there is anything to forget (one load: the plain close's only cost here).
  bool in_use() const noexcept;
  void add_epoll(int epoll_fd) noexcept;
  void remove_epoll(int epoll_fd) noexcept;
};

class FdTable {
 public:
  static constexpr int kMaxTracked = 1 << 20;
  // The entry of `fd`; nullptr when fd is negative or too large, or (when `create` is false) when
  // its page was never mapped, or when mapping failed.
  static FdEntry* find(int fd, bool create) noexcept;
  // Calls `visit(fd, entry)` for every mapped entry with one of `flags` set.
  template <typename Visit>
  static void for_each(std::uint8_t flags, Visit visit) noexcept;

 private:
  static constexpr int kPageBits = 12;
  static constexpr int kPages = kMaxTracked >> kPageBits;
  static FdEntry* page(int index) noexcept;
};

// Calls `visit(fd)` for every descriptor open in this process, read from /proc/self/fd with raw
// system calls (async-signal-safe: a fork child of a threaded program may call nothing else).
void for_each_open_descriptor(void (*visit)(int fd, void* context), void* context) noexcept;

// Marks every descriptor open in this process (/proc/self/fd, read with raw system calls: safe
// in a fork child) as shared, except the lingering ones; with `only_inheritable`,
// only those without close-on-exec (what a spawned program inherits).
void mark_open_descriptors_shared(bool only_inheritable) noexcept;

template <typename Visit>
void FdTable::for_each(std::uint8_t flags, Visit visit) noexcept {
  for (int index = 0; index < kPages; ++index) {
    FdEntry* entries = page(index);
    if (entries == nullptr) continue;
    for (int offset = 0; offset < (1 << kPageBits); ++offset) {
      if ((entries[offset].flags.load(std::memory_order_acquire) & flags) != 0) {
        visit((index << kPageBits) + offset, entries[offset]);
      }
    }
  }
}

}  // namespace ringlinger::preload
