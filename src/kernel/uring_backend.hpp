// The io_uring backend: the engine's requests become SQEs on one ring; each loop step is one
// io_uring_enter that submits them all and waits; completions go back to the engine (with the
// provided buffer resolved and given back after). Listeners wait with a multishot poll; accepts
// that do not wait drain their backlogs.
#pragma once

#include <liburing.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "kernel/backend.hpp"
#include "kernel/ring.hpp"
#include "ringlinger/config.hpp"

namespace ringlinger::detail {

class UringBackend final : public Backend {
 public:
  // Throws std::system_error when io_uring (or a feature it needs) is unavailable.
  UringBackend(const Config& config, Stats& stats);
  ~UringBackend() override;

  // The wake pipe: a read of it in the ring, armed again after each wake.
  void watch_wake(int fd) override;
  // An eventfd registered with the ring (IORING_REGISTER_EVENTFD).
  int notification_fd() override;
  void clear_notification() override;
  // Prepared SQEs, or completions the kernel holds back after the queue overflowed.
  bool has_unsubmitted_work() const override;
  void submit_prepared() override { ring_.submit_prepared(); }
  // One io_uring_enter that submits every prepared SQE and waits for a batch of completions
  // (after one that does not wait, when responses followed by a close are to be handed over).
  void step(std::chrono::nanoseconds timeout, TimePoint& now) override;

  // Tests only: while set, the accepts that drain a backlog carry a flag no kernel knows, which
  // the kernel refuses with EINVAL as kernels before 6.10 refuse IORING_ACCEPT_DONTWAIT. The
  // switch to accept4(2) then runs on any kernel (tests/tcp/accept_fallback_test.cpp).
  static void refuse_accept_dontwait_for_testing(bool refuse) noexcept;
  // Tests only: while set, backends made after it drain with one receive per part, as on a
  // kernel without the multishot receive's limit (the fallback runs on any kernel).
  static void drain_without_multishot_for_testing(bool without) noexcept;
  // Tests only: backends made after it give the multishot drain `count` buffers (a power of
  // two; 0: the default), so that drains run out of them (ENOBUFS) and are started again.
  static void drain_buffers_for_testing(std::uint32_t count) noexcept;

 private:
  // IoPort: requests become SQEs.
  // A recv into a provided buffer (deliver), or into the discard area with MSG_TRUNC.
  void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) override;
  void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool more) override;
  // MSG_MORE on the send still unsubmitted, and a submission before the step's wait.
  bool fin_follows(OpTag tag) override;
  // A send with MSG_MORE, marked as fin_follows() marks one.
  bool submit_final_send(OpTag tag, int fd, std::span<const std::byte> bytes) override;
  void push_held(int fd) override;  // TCP_NODELAY, which pushes what is held
  // A POLLOUT poll in the ring; sendfile(2) runs when it completes.
  void submit_send_file(OpTag tag, int fd, int file_fd, std::uint64_t offset,
                        std::uint32_t length) override;
  void submit_shutdown(OpTag tag, int fd) override;
  void submit_cancel(OpTag tag, int fd) override;
  void submit_close(OpTag tag, int fd) override;
  bool submit_close_unreported(OpTag tag, int fd) override;

  // Backend: a listener waits for connections with a multishot poll.
  int watch_listener(std::uint32_t index) override;
  void accept_again(std::uint32_t index, TimePoint now) override;
  void stop_accepting(std::uint32_t index) override;

  // A close's SQE, with IOSQE flags (IOSQE_CQE_SKIP_SUCCESS for an unreported one).
  void prepare_close(OpTag tag, int fd, std::uint8_t sqe_flags);
  // A request whose SQE did not fit: submits what is prepared, then `submit` again.
  template <auto submit, class... Args>
  void after_making_room(Args... args);

  // Every completion ready now, to the engine (a connection's) or its handler.
  void handle_ready(TimePoint now);
  // Submits the sends fin_follows() marked, without waiting, and handles what completed: their
  // shutdowns go out now, each with the data it held, not after the batched wait.
  [[gnu::noinline]] void hand_over_held_sends(TimePoint& now);
  void dispatch(OpTag tag, const io_uring_cqe& cqe, TimePoint now);
  void complete_file_send(const io_uring_cqe& cqe, TimePoint now);
  void complete_connection_request(OpTag tag, const io_uring_cqe& cqe, TimePoint now);
  void handle_listen_poll(OpTag tag, int result, unsigned flags, TimePoint now);
  void drain_backlog(std::uint32_t index, TimePoint now);
  void handle_accept(OpTag tag, int result, unsigned flags, TimePoint now);
  void handle_accept_end(OpTag tag, int result, unsigned flags, TimePoint now);
  void handle_accept_cancel(OpTag tag);
  void arm_accept(std::uint32_t index);
  void pause_accept(std::uint32_t index);
  void arm_wake();
  [[gnu::noinline]] void handle_wake(int result);

  // Before the ring, so it outlives it: the kernel reads the wake pipe into wake_bytes_ until
  // the ring is torn down.
  int wake_fd_ = -1;
  std::array<std::byte, 64> wake_bytes_{};
  // Manager::event_fd(): an eventfd registered with the ring (IORING_REGISTER_EVENTFD), -1 until
  // asked for.
  int notification_fd_ = -1;
  Ring ring_;
  // The kernel takes IORING_ACCEPT_DONTWAIT (6.10+); false after it refused it (EINVAL).
  bool accept_dontwait_ = true;
  BufferRing buffers_;
  // The send submit_send() prepared last, for fin_follows(); sends it marked wait to be submitted.
  io_uring_sqe* last_send_ = nullptr;
  bool held_sends_ = false;
  // Set where drains run as one multishot receive each (receive_limit.hpp): their buffers,
  // entries that all are the discard area, under an id after buffers_' own. Unset (a kernel
  // without the limit, or a test asking so): one receive per part.
  std::optional<BufferRing> drain_buffers_;
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
};

}  // namespace ringlinger::detail
