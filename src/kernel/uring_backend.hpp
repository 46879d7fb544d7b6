// The io_uring backend: the engine's requests become SQEs on one ring; each loop step is one
// io_uring_enter that submits them all and waits; completions go back to the engine (with the
// provided buffer resolved and given back after). Listeners use a multishot accept.
#pragma once

#include <liburing.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "kernel/backend.hpp"
#include "kernel/ring.hpp"
#include "ringlinger/config.hpp"

namespace ringlinger::detail {

class UringBackend final : public Backend, private IoPort {
 public:
  // Throws std::system_error when io_uring (or a feature it needs) is unavailable.
  UringBackend(const Config& config, Stats& stats);
  ~UringBackend() override;
  UringBackend(const UringBackend&) = delete;
  UringBackend& operator=(const UringBackend&) = delete;

  // Backend
  IoPort& io() override { return *this; }
  void attach(Engine& engine, Host& host) override;
  SocketAddress listen(const SocketAddress& address, int backlog, bool reuse_port) override;
  void watch_wake(int fd) override;
  int notification_fd() override;
  void clear_notification() override;
  bool has_unsubmitted_work() const override;
  void step(std::chrono::nanoseconds timeout, TimePoint& now) override;
  void resume_listeners(TimePoint now) override;
  std::optional<TimePoint> next_listener_deadline(TimePoint now) const override;
  void close_listeners() override;
  bool has_open_listeners() const override;
  std::string describe() const override;

 private:
  // IoPort
  void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) override;
  void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) override;
  void submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                        std::uint32_t length) override;
  void submit_shutdown(OpTag tag, int fd) override;
  void submit_cancel(OpTag tag, int fd) override;
  void submit_close(OpTag tag, int fd) override;
  int shutdown_now(int fd) override;
  void set_reset_on_close(int fd) override;
  void limit_orphan_time(int fd, std::uint32_t milliseconds) override;
  PeerAcks peer_acks(int fd, TimePoint now) override;

  // A listening socket and its multishot accept.
  struct Listener {
    int fd = -1;
    bool accept_in_flight = false;  // the multishot accept is armed
    bool cancel_in_flight = false;  // a cancel of that accept is in flight (pause or stop)
    TimePoint resume_at{};          // after an accept error, not before this
  };

  void dispatch(const io_uring_cqe& cqe, TimePoint now);
  void complete_file_send(const io_uring_cqe& cqe, TimePoint now);
  void complete_connection_request(const io_uring_cqe& cqe, TimePoint now);
  void handle_accept(OpTag tag, int result, unsigned flags, TimePoint now);
  void handle_accept_cancel(OpTag tag);
  void arm_accept(std::uint32_t index);
  void pause_accept(std::uint32_t index);
  void close_listener_if_idle(std::uint32_t index);
  void arm_wake();

  Stats& stats_;
  // Before the ring, so it outlives it: the kernel reads the wake pipe into wake_bytes_ until
  // the ring is torn down.
  int wake_fd_ = -1;
  std::array<std::byte, 64> wake_bytes_{};
  // Manager::event_fd(): an eventfd registered with the ring (IORING_REGISTER_EVENTFD), -1 until
  // asked for.
  int notification_fd_ = -1;
  Ring ring_;
  BufferRing buffers_;
  // Where discarding receives point. With MSG_TRUNC TCP copies nothing into it, so its pages are
  // never touched; it is still as large as any discarding receive, so a socket type that ignores
  // MSG_TRUNC cannot write past it.
  std::byte* discard_area_ = nullptr;
  std::vector<Listener> listeners_;
  bool listeners_closing_ = false;
  std::vector<io_uring_cqe> batch_;
  // File sends waiting for their socket to be writable (a POLLOUT poll in the ring), by slot:
  // the sendfile runs when the poll completes. Only connections using send_file() are here.
  struct FileSend {
    std::uint32_t generation;
    int socket_fd;
    int file_fd;
    std::uint64_t offset;
    std::uint32_t length;
  };
  std::unordered_map<std::uint32_t, FileSend> file_sends_;
  Engine* engine_ = nullptr;
  Host* host_ = nullptr;
};

}  // namespace ringlinger::detail
