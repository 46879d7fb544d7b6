// The epoll backend: the same engine and semantics on edge-triggered epoll and non-blocking
// system calls, for where io_uring cannot be used. Each request the engine submits is recorded
// per slot and attempted at once (most sends and many receives succeed without waiting); one
// that finds the socket not ready waits for epoll to report the next edge. Completions are handed
// to the engine from the attempt itself, so a delivering receive needs one shared buffer only.
#pragma once

#include <sys/epoll.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kernel/backend.hpp"
#include "ringlinger/config.hpp"

namespace ringlinger::detail {

class EpollBackend final : public Backend {
 public:
  // Throws std::system_error when epoll_create1 fails.
  EpollBackend(const Config& config, Stats& stats);
  ~EpollBackend() override;

  // The wake pipe: in the epoll set, emptied when it reports an edge.
  void watch_wake(int fd) override;
  // The epoll fd itself; the step's epoll_pwait2 consumes its readiness.
  int notification_fd() override;
  void clear_notification() override;
  // Attempts queued for the next step.
  bool has_unsubmitted_work() const override;
  // One epoll_pwait2, then every attempt its events and the new requests allow.
  void step(std::chrono::nanoseconds timeout, TimePoint& now) override;

 private:
  // IoPort: requests are recorded per slot, then attempted.
  void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) override;
  void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) override;
  // sendfile(2) when the socket is writable (at once, or at its next edge).
  void submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                        std::uint32_t length) override;
  void submit_shutdown(OpTag tag, int fd) override;
  void submit_cancel(OpTag tag, int fd) override;
  void submit_close(OpTag tag, int fd) override;

  // Backend: a listener is in the epoll set; its backlog is accepted when it reports an edge.
  int watch_listener(std::uint32_t index) override;
  void accept_again(std::uint32_t index, TimePoint now) override;
  void stop_accepting(std::uint32_t index) override;

  struct PendingRecv {
    OpTag tag;
    RecvMode mode;
    std::uint32_t max_bytes;
  };
  struct PendingSend {
    OpTag tag;
    std::span<const std::byte> bytes;
    bool more = false;
    int file_fd = -1;  // >= 0: a file send of `file_length` bytes from `file_offset`
    std::uint64_t file_offset = 0;
    std::uint32_t file_length = 0;
  };
  // The requests of one connection slot that have not completed yet, and what epoll said.
  struct Slot {
    int fd = -1;
    std::uint32_t generation = 0;
    bool registered = false;  // in the epoll set (EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET)
    bool readable = true;     // edge-triggered readiness: cleared by EAGAIN, set by an event
    bool writable = true;
    bool queued = false;      // in attempts_
    std::optional<PendingRecv> recv;
    std::optional<PendingSend> send;
    std::optional<OpTag> shutdown;
    std::optional<OpTag> cancel;
    std::optional<OpTag> close;
  };

  Slot& slot_for(OpTag tag, int fd);
  void queue_attempt(std::uint32_t slot);
  void run_attempts(TimePoint now);
  bool attempt(std::uint32_t slot, TimePoint now);
  void attempt_send(Slot& slot, TimePoint now);
  void attempt_recv(Slot& slot, TimePoint now);
  void cancel_requests(Slot& slot, TimePoint now);
  void close_slot(Slot& slot, TimePoint now);
  void wait_for_edge(Slot& slot);
  void handle_event(const epoll_event& event, TimePoint now);
  void complete(OpTag tag, std::int32_t result, TimePoint now, std::span<const std::byte> data = {});

  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // the manager's; watched, not owned
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> attempts_;  // slots with something to try
  std::vector<std::uint32_t> attempting_;
  std::vector<epoll_event> events_;
  std::vector<std::byte> receive_buffer_;  // for delivering receives, handed out one at a time
};

}  // namespace ringlinger::detail
