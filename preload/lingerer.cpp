// The manager thread and the handoff. Program threads never touch the Manager but through
// post() (thread-safe); everything else the Manager does happens on its own thread, whose calls
// of close() and the rest go straight to the C library (on_manager_thread()).
#include "lingerer.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <memory>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "classify.hpp"
#include "fd_table.hpp"
#include "real_calls.hpp"
#include "ringlinger/manager.hpp"
#include "settings.hpp"
#include "summary.hpp"

namespace ringlinger::preload {
namespace {

using namespace std::chrono_literals;

// With nothing lingering for this long, the manager thread ends and frees its descriptors.
constexpr auto kIdleStop = 2s;
// The longest a program's call waits for the manager thread to reset a socket it needs gone.
constexpr auto kEvictWait = 2s;

__attribute__((tls_model("initial-exec"))) thread_local bool tls_manager_thread = false;

// Everything shared, in one object that is never destroyed: the manager thread and program
// threads may still run while the process's static destructors do.
struct Shared {
  Settings settings;
  Counters counters;
  // Held across a handoff (epoll removal, dup, close, post) and by fork's prepare handler, so a
  // fork never copies half a handoff.
  std::mutex handoff_mutex;
  // Guards the manager thread's start and end.
  std::mutex start_mutex;
  std::condition_variable started;
  std::thread* thread = nullptr;
  Manager* manager = nullptr;  // set by the manager thread while it runs
  bool running = false, start_failed = false, disabled = false, exiting = false;
  std::atomic<pid_t> pid{0};  // this process's, set at load and in a fork child
  // on_closed: a lingering socket's descriptor is free again.
  std::mutex closed_mutex;
  std::condition_variable closed;
};

Shared& shared() noexcept {
  static Shared* instance = new Shared;  // never deleted (see Shared)
  return *instance;
}

// The manager thread's own bookkeeping (touched only there).
struct Books {
  std::vector<int> fd_by_slot;
  std::vector<std::uint64_t> inode_by_slot;
  std::unordered_map<int, ConnectionId> id_by_fd;
  std::deque<ConnectionId> order;  // adoption order, for releasing the oldest first
};

void unreserve() noexcept { shared().counters.lingering.fetch_sub(1, std::memory_order_acq_rel); }

// The socket `inode` (ours, numbered `fd`) is closed. The number may be another socket of ours
// by now (the kernel freed it at the close, the program took it, and it came back to us): then
// its mark stays.
void forget_lingering(int fd, std::uint64_t inode) noexcept {
  FdEntry* entry = FdTable::find(fd, false);
  if (entry == nullptr) return;
  std::uint64_t expected = inode;
  if (!entry->inode.compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) return;
  entry->flags.fetch_and(static_cast<std::uint8_t>(~FdEntry::kLingering), std::memory_order_release);
}

std::uint64_t inode_of(int fd) noexcept {
  const FdEntry* entry = FdTable::find(fd, false);
  return entry != nullptr ? entry->inode.load(std::memory_order_acquire) : 0;
}

// Drops the closed connections at the front of the adoption order, which keeps it about as long
// as the number lingering (they mostly end in the order they came).
void prune(Books& books) {
  while (!books.order.empty() && !shared().manager->state(books.order.front())) books.order.pop_front();
}

void on_closed(Books& books, ConnectionId id, const CloseReport& report) {
  Shared& s = shared();
  const int fd = books.fd_by_slot[id.slot];
  books.id_by_fd.erase(fd);
  forget_lingering(fd, books.inode_by_slot[id.slot]);
  s.counters.outcomes[static_cast<std::size_t>(report.outcome)].fetch_add(1, std::memory_order_relaxed);
  unreserve();
  {
    // Taken so that a waiter that saw the mark still set is waiting by now: no wakeup is lost.
    std::lock_guard lock(s.closed_mutex);
  }
  s.closed.notify_all();
}

// Runs on the manager thread (posted): adopt and close.
void adopt(Books& books, int fd) {
  Shared& s = shared();
  const std::optional<ConnectionId> id = s.manager->adopt(fd);
  if (!id) {
    forget_lingering(fd, inode_of(fd));
    real().close(fd);
    unreserve();
    count_plain(Plain::not_adopted);
    return;
  }
  books.fd_by_slot[id->slot] = fd;
  books.inode_by_slot[id->slot] = inode_of(fd);
  books.id_by_fd[fd] = *id;
  books.order.push_back(*id);
  s.manager->close(*id);
  prune(books);
}

void reset(ConnectionId id) {
  shared().counters.evicted.fetch_add(1, std::memory_order_relaxed);
  shared().manager->abort(id);
}

// Resets the `count` connections adopted first that are still lingering; returns their fds.
std::vector<int> reset_oldest(Books& books, std::uint32_t count) {
  std::vector<int> fds;
  while (fds.size() < count && !books.order.empty()) {
    const ConnectionId id = books.order.front();
    books.order.pop_front();
    if (!shared().manager->state(id)) continue;  // closed already
    fds.push_back(books.fd_by_slot[id.slot]);
    reset(id);
  }
  return fds;
}

Books* books_of_thread = nullptr;  // the running manager thread's books (used by posted tasks)

// The loop: until stopped, or idle for kIdleStop (then it says it is gone before it goes, under
// start_mutex, so a handoff either sees it running or starts a new one).
void drive(Manager& manager) {
  Shared& s = shared();
  auto idle_since = std::chrono::steady_clock::now();
  while (manager.run_once(100ms)) {
    if (s.counters.lingering.load(std::memory_order_acquire) != 0) {
      idle_since = std::chrono::steady_clock::now();
      continue;
    }
    if (std::chrono::steady_clock::now() - idle_since < kIdleStop) continue;
    std::unique_lock lock(s.start_mutex);
    if (s.counters.lingering.load(std::memory_order_acquire) != 0 || s.exiting) continue;
    s.running = false;
    s.manager = nullptr;
    lock.unlock();
    manager.stop(0ms);
  }
}

void manager_thread() {
  tls_manager_thread = true;
  Shared& s = shared();
  Books books;
  books.fd_by_slot.assign(s.settings.config.max_connections, -1);
  books.inode_by_slot.assign(s.settings.config.max_connections, 0);
  Callbacks callbacks;
  callbacks.on_closed = [&books](ConnectionId id, const CloseReport& report) {
    on_closed(books, id, report);
  };
  std::optional<Manager> manager;
  try {
    manager.emplace(s.settings.config, std::move(callbacks));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "libringlinger-preload: no graceful close in this process: %s\n", error.what());
    std::lock_guard lock(s.start_mutex);
    s.start_failed = true;
    s.started.notify_all();
    return;
  }
  {
    std::lock_guard lock(s.start_mutex);
    if (s.exiting) {  // exit() came while it started: it waits to join, with nothing to stop
      s.start_failed = true;
      s.started.notify_all();
      return;
    }
    s.manager = &*manager;
    books_of_thread = &books;
    s.started.notify_all();
  }
  drive(*manager);
  // No task can be queued any more: running was cleared (idle) or exiting set, under start_mutex.
  books_of_thread = nullptr;
}

// Under start_mutex: the manager thread runs, or it cannot (then false, and it never will).
bool ensure_running(std::unique_lock<std::mutex>& lock) {
  Shared& s = shared();
  if (s.running) return true;
  if (s.disabled || s.exiting) return false;
  if (s.thread != nullptr) {  // one that ended when idle
    s.thread->join();
    delete s.thread;
    s.thread = nullptr;
  }
  s.start_failed = false;
  // The thread takes no signal: the program's handlers run on the program's threads.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  try {
    s.thread = new std::thread(manager_thread);
  } catch (const std::exception&) {
    s.disabled = true;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (s.disabled) return false;
  s.started.wait(lock, [&s] { return s.manager != nullptr || s.start_failed; });
  if (s.start_failed) {
    s.disabled = true;
    return false;
  }
  s.running = true;
  return true;
}

// Queues `task` for the manager thread, starting it if needed; false if it cannot run.
bool post_to_manager(std::function<void(Books&)> task) {
  Shared& s = shared();
  std::unique_lock lock(s.start_mutex);
  if (!ensure_running(lock)) return false;
  return !s.manager->post([task = std::move(task)] { task(*books_of_thread); });
}

void remove_from_epoll_sets(int fd, FdEntry* entry) noexcept {
  if (entry == nullptr) return;
  for (auto& slot : entry->epoll_fds) {
    const int epoll_fd = slot.load(std::memory_order_relaxed) - 1;
    if (epoll_fd < 0) continue;
    epoll_event unused{};
    real().epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, &unused);  // ENOENT, EBADF: nothing to remove
  }
}

// Where our numbers start: below the descriptor limit (read now: the program may have changed
// it) by room for every lingering socket, if that leaves the first 1024 to the program.
int high_fd_base() noexcept {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur == RLIM_INFINITY) return FdTable::kMaxTracked / 2;
  const auto top = static_cast<long long>(limit.rlim_cur) - shared().settings.max_lingering - 64;
  return top > 1024 ? static_cast<int>(std::min<long long>(top, FdTable::kMaxTracked / 2)) : 0;
}

// The program's socket as a close-on-exec number of ours, out of the way of the low numbers
// programs expect (select's FD_SETSIZE); -1 if there is none.
int move_out_of_the_way(int fd) noexcept {
  int moved = real().fcntl(fd, F_DUPFD_CLOEXEC, high_fd_base());
  if (moved < 0) moved = real().fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (moved < 0) return -1;
  // SO_LINGER {1, N}: a close that blocks until sent; the manager waits for that itself.
  const linger off{};
  setsockopt(moved, SOL_SOCKET, SO_LINGER, &off, sizeof off);
  struct stat status{};
  FdEntry* entry = FdTable::find(moved, true);
  if (entry == nullptr || fstat(moved, &status) != 0) {
    real().close(moved);
    return -1;
  }
  entry->clear();
  entry->inode.store(status.st_ino, std::memory_order_relaxed);
  entry->flags.store(FdEntry::kLingering, std::memory_order_release);
  return moved;
}

bool reserve() noexcept {
  Shared& s = shared();
  if (s.counters.lingering.fetch_add(1, std::memory_order_acq_rel) < s.settings.max_lingering) return true;
  unreserve();
  count_plain(Plain::max_lingering);
  return false;
}

// fork(): the child has no manager thread; its copies of the lingering sockets are closed (they
// are the parent's to finish), and every descriptor open at the fork may be the child's too.
void prepare_fork() noexcept {
  shared().handoff_mutex.lock();
  shared().start_mutex.lock();
}

void after_fork_in_parent() noexcept {
  shared().start_mutex.unlock();
  shared().handoff_mutex.unlock();
  mark_open_descriptors_shared(false);
}

void after_fork_in_child() noexcept {
  Shared& s = shared();
  // The locks were taken by the thread that forked, which is this one: new ones instead.
  new (&s.handoff_mutex) std::mutex;
  new (&s.start_mutex) std::mutex;
  new (&s.closed_mutex) std::mutex;
  new (&s.started) std::condition_variable;
  new (&s.closed) std::condition_variable;
  s.pid.store(getpid(), std::memory_order_relaxed);
  s.thread = nullptr;  // the parent's thread: not here (its object is left alone, never joined)
  s.manager = nullptr;
  s.running = false;
  books_of_thread = nullptr;
  FdTable::for_each(FdEntry::kLingering, [](int fd, FdEntry& entry) {
    struct stat status{};
    if (fstat(fd, &status) == 0 && status.st_ino == entry.inode.load(std::memory_order_relaxed)) {
      real().close(fd);
    }
    entry.clear();
  });
  s.counters.lingering.store(0, std::memory_order_relaxed);
  s.counters.handed_off.store(0, std::memory_order_relaxed);
  for (auto& count : s.counters.plain) count.store(0, std::memory_order_relaxed);
  for (auto& count : s.counters.outcomes) count.store(0, std::memory_order_relaxed);
  s.counters.evicted.store(0, std::memory_order_relaxed);
  mark_open_descriptors_shared(false);
}

void at_exit() noexcept {
  Shared& s = shared();
  std::thread* thread = nullptr;
  {
    std::lock_guard lock(s.start_mutex);
    s.exiting = true;
    // Posted, not called: the handoffs queued before it are adopted first, and get the grace.
    if (s.running) {
      const auto grace = std::chrono::milliseconds(s.settings.exit_grace_ms);
      try {
        s.manager->post([grace] { shared().manager->stop(grace); });
      } catch (const std::exception&) {
        s.manager->stop(grace);
      }
    }
    s.running = false;
    thread = s.thread;
    s.thread = nullptr;
  }
  if (thread != nullptr) thread->join();
  write_summary(s.settings, s.counters);
}

// Waits until `done()` (called with closed_mutex held), or kEvictWait; returns done().
template <typename Done>
bool wait_for_closes(Done done) {
  Shared& s = shared();
  std::unique_lock lock(s.closed_mutex);
  return s.closed.wait_for(lock, kEvictWait, done);
}

}  // namespace

const char* to_string(Plain reason) noexcept {
  static constexpr const char* kNames[kPlainCount] = {"so_linger", "shared", "max_lingering",
                                                      "exiting", "not_adopted"};
  return kNames[static_cast<std::size_t>(reason)];
}

void initialise() noexcept {
  Shared& s = shared();
  s.pid.store(getpid(), std::memory_order_relaxed);
  try {
    s.settings = read_settings();
  } catch (const std::exception&) {
    s.disabled = true;
  }
  pthread_atfork(prepare_fork, after_fork_in_parent, after_fork_in_child);
  std::atexit(at_exit);
  // Inherited descriptors (inetd-style sockets on 0 and 1, socket activation) may have other
  // holders: never ours to finish.
  mark_open_descriptors_shared(false);
}

bool on_manager_thread() noexcept { return tls_manager_thread; }
bool own_process() noexcept { return getpid() == shared().pid.load(std::memory_order_relaxed); }

void count_plain(Plain reason) noexcept {
  shared().counters.plain[static_cast<std::size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
}

bool take(int fd, bool close_number) noexcept {
  Shared& s = shared();
  if (s.exiting || s.disabled) {
    count_plain(s.exiting ? Plain::exiting : Plain::not_adopted);
    return false;
  }
  if (wants_reset(fd)) {
    count_plain(Plain::so_linger);
    return false;
  }
  if (!own_process()) return false;
  if (!reserve()) return false;
  std::lock_guard lock(s.handoff_mutex);
  FdEntry* entry = FdTable::find(fd, false);
  remove_from_epoll_sets(fd, entry);
  const int moved = move_out_of_the_way(fd);
  if (moved < 0) {
    unreserve();
    count_plain(Plain::not_adopted);
    return false;
  }
  if (close_number) real().close(fd);  // not the last reference any more: nothing goes on the wire
  if (entry != nullptr) entry->clear();
  bool posted = false;
  try {
    posted = post_to_manager([moved](Books& books) { adopt(books, moved); });
  } catch (const std::exception&) {
  }
  if (!posted) {  // the number is closed already: finish it the plain way
    forget_lingering(moved, inode_of(moved));
    real().close(moved);
    unreserve();
    count_plain(Plain::not_adopted);
    return true;
  }
  s.counters.handed_off.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void evict_range(unsigned first, unsigned last) noexcept {
  std::vector<int> fds;
  try {
    FdTable::for_each(FdEntry::kLingering, [&](int fd, FdEntry&) {
      if (static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) fds.push_back(fd);
    });
    if (fds.empty()) return;
    post_to_manager([fds](Books& books) {
      for (int fd : fds) {
        if (auto it = books.id_by_fd.find(fd); it != books.id_by_fd.end()) reset(it->second);
      }
    });
    wait_for_closes([&fds] {
      for (int fd : fds) {
        FdEntry* entry = FdTable::find(fd, false);
        if (entry != nullptr && (entry->flags.load() & FdEntry::kLingering) != 0) return false;
      }
      return true;
    });
  } catch (const std::exception&) {
  }
}

bool release_descriptors() noexcept {
  Shared& s = shared();
  const std::uint32_t lingering = s.counters.lingering.load(std::memory_order_acquire);
  if (lingering == 0 || on_manager_thread()) return false;
  try {
    // Which sockets the manager thread reset, once it did: a descriptor is free when one of them
    // is no longer ours (a count of closes would also count closes whose descriptor another
    // call of the program took already).
    struct Reset {
      bool done = false;
      std::vector<int> fds;
    };
    auto resets = std::make_shared<Reset>();
    const std::uint32_t count = std::max<std::uint32_t>(1, lingering / 8);
    if (!post_to_manager([count, resets](Books& books) {
          std::vector<int> fds = reset_oldest(books, count);
          {
            std::lock_guard lock(shared().closed_mutex);
            resets->fds = std::move(fds);
            resets->done = true;
          }
          shared().closed.notify_all();
        })) {
      return false;
    }
    return wait_for_closes([&resets] {
      if (!resets->done) return false;
      for (int fd : resets->fds) {
        const FdEntry* entry = FdTable::find(fd, false);
        if (entry == nullptr || (entry->flags.load() & FdEntry::kLingering) == 0) return true;
      }
      return false;
    });
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace ringlinger::preload
