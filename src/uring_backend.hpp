// The io_uring backend: the engine's IoPort requests become SQEs on the ring, and a connection's
// CQE becomes the engine's Completion (with the provided buffer resolved and given back after).
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine.hpp"
#include "io_port.hpp"
#include "ring.hpp"

namespace ringlinger::detail {

class UringBackend final : public IoPort {
 public:
  UringBackend(Ring& ring, std::uint32_t buffer_count, std::uint32_t buffer_bytes);
  ~UringBackend() override;
  UringBackend(const UringBackend&) = delete;
  UringBackend& operator=(const UringBackend&) = delete;

  void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) override;
  void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes) override;
  void submit_shutdown(OpTag tag, int fd) override;
  void submit_cancel(OpTag tag, int fd) override;
  void submit_close(OpTag tag, int fd) override;
  int shutdown_now(int fd) override;
  void set_reset_on_close(int fd) override;

  // Hands a connection request's CQE to the engine; a provided buffer the CQE carries goes back
  // to the kernel afterwards (whether or not the connection still exists).
  void complete(const io_uring_cqe& cqe, Engine& engine, Engine::TimePoint now);

 private:
  Ring& ring_;
  BufferRing buffers_;
  // Where discarding receives point. With MSG_TRUNC TCP copies nothing into it, so its pages are
  // never touched; it is still as large as any discarding receive, so a socket type that ignores
  // MSG_TRUNC cannot write past it.
  std::byte* discard_area_ = nullptr;
};

}  // namespace ringlinger::detail
