#include "uring_backend.hpp"

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "assert.hpp"

namespace ringlinger::detail {
namespace {
constexpr std::uint16_t kReceiveGroup = 0;
}  // namespace

UringBackend::UringBackend(Ring& ring, std::uint32_t buffer_count, std::uint32_t buffer_bytes)
    : ring_(ring), buffers_(ring, kReceiveGroup, buffer_count, buffer_bytes) {
  void* area = mmap(nullptr, kDiscardChunkBytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) throw std::system_error(errno, std::system_category(), "discard area");
  discard_area_ = static_cast<std::byte*>(area);
}

UringBackend::~UringBackend() { munmap(discard_area_, kDiscardChunkBytes); }

void UringBackend::submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) {
  io_uring_sqe* sqe = ring_.get_sqe();
  switch (mode) {
    case RecvMode::deliver:
      // The kernel picks a buffer from the group when data arrives.
      io_uring_prep_recv(sqe, fd, nullptr, buffers_.buffer_bytes(), 0);
      sqe->flags |= IOSQE_BUFFER_SELECT;
      sqe->buf_group = buffers_.group();
      break;
    case RecvMode::discard:
      // MSG_TRUNC on TCP: the bytes are consumed and dropped without being copied.
      io_uring_prep_recv(sqe, fd, discard_area_, std::min(max_bytes, kDiscardChunkBytes),
                         MSG_TRUNC);
      break;
  }
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_send(OpTag tag, int fd, std::span<const std::byte> bytes) {
  io_uring_sqe* sqe = ring_.get_sqe();
  // No MSG_WAITALL: a partial send completes with its count, which is progress for the send
  // timeout (a slow reader is not a dead one); the engine sends the rest.
  io_uring_prep_send(sqe, fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_shutdown(OpTag tag, int fd) {
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_shutdown(sqe, fd, SHUT_WR);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_cancel(OpTag tag, int fd) {
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

void UringBackend::submit_close(OpTag tag, int fd) {
  io_uring_sqe* sqe = ring_.get_sqe();
  io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data64(sqe, encode(tag));
}

int UringBackend::shutdown_now(int fd) { return ::shutdown(fd, SHUT_WR) == 0 ? 0 : -errno; }

void UringBackend::set_reset_on_close(int fd) {
  const linger reset{1, 0};
  // Fails only for a bad fd, which the engine never passes; the close then ends as it would.
  (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
}

void UringBackend::complete(const io_uring_cqe& cqe, Engine& engine, Engine::TimePoint now) {
  Completion completion{decode(cqe.user_data), cqe.res, {}};
  const bool has_buffer = (cqe.flags & IORING_CQE_F_BUFFER) != 0;
  const auto buffer_id = static_cast<std::uint16_t>(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  if (has_buffer && cqe.res > 0) {
    completion.data = buffers_.buffer(buffer_id).first(static_cast<std::size_t>(cqe.res));
  }
  engine.on_completion(completion, now);
  if (has_buffer) buffers_.recycle(buffer_id);
}

}  // namespace ringlinger::detail
