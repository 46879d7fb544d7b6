// The manager thread: a ringlinger Manager that closes the sockets the program dropped, started
// on the first handoff, gone again after a while with nothing lingering (its ring, eventfd and
// pipe with it), stopped within the exit grace when the process exits. Its counters are printed
// at exit (summary.hpp).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "ringlinger/outcome.hpp"

namespace ringlinger::preload {

// Why a close that had bytes pending was still a plain close.
enum class Plain : std::uint8_t { so_linger, shared, max_lingering, exiting, not_adopted };
inline constexpr std::size_t kPlainCount = 5;
const char* to_string(Plain reason) noexcept;

struct Counters {
  std::atomic<std::uint64_t> handed_off{0};
  std::array<std::atomic<std::uint64_t>, kPlainCount> plain{};
  std::atomic<std::uint64_t> evicted{0};  // reset early: a descriptor was needed (EMFILE, dup2 onto it)
  std::array<std::atomic<std::uint64_t>, kOutcomeCount> outcomes{};
  std::atomic<std::uint32_t> lingering{0};
};

// Reads the settings, registers the fork and exit handlers. From the library's constructor.
void initialise() noexcept;
// The manager thread calls the real functions, always.
bool on_manager_thread() noexcept;
// False in the child of a vfork() (or clone(CLONE_VM)) before its exec: it shares this process's
// memory, and so the descriptor table's marks, but not its descriptors, and must change neither
// the marks nor hand anything to the parent's manager thread. One getpid(): asked only before
// such a change; on a plain close, only of a number the table knows something of (a socket in an
// epoll set, a shared mark), so an epoll server pays it once per connection.
bool own_process() noexcept;
void count_plain(Plain reason) noexcept;

// Takes `fd`, a program's connected TCP socket with bytes pending that is the last reference:
// removes it from the program's epoll sets, moves it to a close-on-exec number of ours, closes
// the program's number (unless `close_number` is false: the caller's own call does, dup2 or
// fclose) and gives ours to the manager thread. True when done (the program's close succeeds);
// false when the caller must close `fd` the plain way (the reason is counted).
bool take(int fd, bool close_number) noexcept;
// Before the program closes or replaces the numbers first..last (close_range, dup2 onto one): the
// lingering sockets among them are reset and closed, and the call waits for it (bounded).
void evict_range(unsigned first, unsigned last) noexcept;
// After EMFILE: resets the oldest lingering sockets and waits for a descriptor to be free; true
// when the call should be tried again.
bool release_descriptors() noexcept;

}  // namespace ringlinger::preload
