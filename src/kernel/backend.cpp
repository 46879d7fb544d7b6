#include "kernel/backend.hpp"

#include <sys/mman.h>
#include <sys/socket.h>

#include <cerrno>
#include <system_error>

#include "core/assert.hpp"
#include "kernel/socket_calls.hpp"
#include "kernel/tcp_info.hpp"

namespace ringlinger::detail {
namespace {

std::byte* map_discard_area() {
  void* area = mmap(nullptr, kDiscardChunkBytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) throw std::system_error(errno, std::system_category(), "discard area");
  return static_cast<std::byte*>(area);
}

}  // namespace

Backend::Backend(Stats& stats)
    : stats_(stats), listeners_(stats), discard_area_(map_discard_area()) {}

Backend::~Backend() { munmap(discard_area_, kDiscardChunkBytes); }

void Backend::attach(Engine& engine, Host& host) {
  engine_ = &engine;
  host_ = &host;
}

// --- listeners --------------------------------------------------------------------------------

SocketAddress Backend::listen(const SocketAddress& address, const ListenOptions& options) {
  const int fd = open_listener(address, options);
  auto bound = SocketAddress::local_of(fd);
  RL_ASSERT(bound.has_value());
  if (const int error = watch_listener(listeners_.add(fd)); error != 0) {
    listeners_.remove_last();
    throw std::system_error(error, std::system_category(), "listen on " + address.to_string());
  }
  return *bound;
}

Backend::Backlog Backend::accept_backlog(std::uint32_t index, TimePoint now) {
  // By index: the host's on_accepted may add a listener (Manager::listen from a callback).
  if (!host_->can_accept()) return Backlog::host_full;
  while (listeners_[index].fd >= 0) {
    ++stats_.syscalls;
    const int fd = accept4(listeners_[index].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (!host_->on_accepted(fd, now)) return Backlog::host_full;
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Backlog::drained;
    if (errno == EINTR || errno == ECONNABORTED) continue;
    listeners_.accept_failed(index, now);  // EMFILE, ENFILE, ENOBUFS, ENOMEM...
    return Backlog::failed;
  }
  return Backlog::host_full;
}

void Backend::resume_paused_listeners(TimePoint now) {
  for (std::uint32_t index = 0; index < listeners_.size(); ++index) {
    if (listeners_.may_resume(index, now) && host_->can_accept()) accept_again(index, now);
  }
}

void Backend::close_listeners() {
  listeners_.start_closing();
  for (std::uint32_t index = 0; index < listeners_.size(); ++index) {
    stop_accepting(index);
    listeners_.close_if_idle(index);
  }
}

// --- IoPort: synchronous calls ----------------------------------------------------------------

int Backend::shutdown_now(int fd) { return shutdown_write(fd, stats_.syscalls); }

void Backend::set_reset_on_close(int fd) { detail::set_reset_on_close(fd, stats_.syscalls); }

void Backend::limit_orphan_time(int fd, std::uint32_t milliseconds) {
  detail::limit_orphan_time(fd, milliseconds, stats_.syscalls);
}

PeerAcks Backend::peer_acks(int fd, TimePoint now) {
  return read_peer_acks(fd, now, stats_.syscalls);
}

}  // namespace ringlinger::detail
