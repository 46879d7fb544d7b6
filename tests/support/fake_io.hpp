// FakeIo: a detail::IoPort with no kernel behind it, for the engine fuzzer and the benchmarks.
//
// Every asynchronous request the engine submits is recorded as outstanding until the test takes
// it out (in any order) and hands the engine a completion with whatever result it likes (a
// discarding recv may first give parts, take_part(), and stay outstanding). The synchronous
// calls (shutdown_now, set_reset_on_close) return what the test says. The fake also checks, at
// the moment of each submission, the rules any IoPort user must keep (they hold for any test, so
// they live here rather than in one test's model):
//   - at most one request of each Op outstanding per slot, all of one generation;
//   - nothing is submitted for a slot, or on an fd, once its close was submitted;
//   - a close is submitted only when nothing else is outstanding for that slot or that fd;
//   - requests only on an fd the test opened (and the engine adopted), with sane sizes.
// Breaches are collected as text in violations(); an Observer sees every call after the checks.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/io_port.hpp"
#include "core/op_table.hpp"
#include "core/user_data.hpp"

namespace ringlinger::fake {

using detail::Op;
using detail::OpTag;
using detail::PeerAcks;
using detail::RecvMode;

// One submitted request: outstanding until the test takes it out to complete it.
struct Request {
  OpTag tag{};
  int fd = -1;
  // recv only: where the bytes go.
  RecvMode mode = RecvMode::deliver;
  // recv only: the engine's limit (0 for a delivering receive: one shared buffer's worth). For a
  // discarding receive, what the request may still take in all its parts: take_part() lowers it.
  std::uint32_t max_bytes = 0;
  // send only: exactly what the engine asked to send.
  std::span<const std::byte> bytes;
  // close only: the kernel already ran it (the fd number is free again); the completion is due.
  bool fd_released = false;
  // close only: submitted with submit_close_unreported(): it ran at once and completes never.
  bool unreported = false;
  // Order of submission, from 1.
  std::uint64_t serial = 0;
};

// What the fake knows of an fd number.
enum class FdState : std::uint8_t {
  unused,   // never opened, or its close ran
  open,     // handed out by open_fd()
  closing,  // a close was submitted and has not run yet
};

inline std::string_view op_name(Op op) noexcept {
  return is_known(op) ? op_def(op).name : std::string_view("?");
}

inline std::string describe(const Request& request) {
  std::string text = std::string(op_name(request.tag.op)) + "{slot " +
                     std::to_string(request.tag.slot) + ", gen " +
                     std::to_string(request.tag.generation) + ", fd " + std::to_string(request.fd);
  if (request.tag.op == Op::recv) {
    text += request.mode == RecvMode::deliver ? ", deliver" : ", discard";
    text += ", max " + std::to_string(request.max_bytes);
  }
  if (request.tag.op == Op::send) text += ", len " + std::to_string(request.bytes.size());
  if (request.fd_released) text += ", ran";
  if (request.unreported) text += ", unreported";
  return text + ", #" + std::to_string(request.serial) + "}";
}

class FakeIo final : public detail::IoPort {
 public:
  // Sees every call after the fake's own checks (the fuzzer's model listens here).
  class Observer {
   public:
    virtual void on_submit(const Request& request) = 0;
    virtual void on_shutdown_now(int fd, int result) = 0;
    virtual void on_set_reset_on_close(int fd) = 0;
    virtual void on_limit_orphan_time(int fd, std::uint32_t milliseconds) = 0;

   protected:
    ~Observer() = default;
  };

  // The first fd number handed out (0-2 look like stdio; the value itself does not matter).
  static constexpr int kFirstFd = 3;

  // The result of each shutdown_now(fd); 0 (success) when unset.
  std::function<int(int fd)> shutdown_result;
  // What peer_acks() returns (unset: unknown, as for a socket that is not TCP).
  std::function<PeerAcks(int fd, std::chrono::steady_clock::time_point now)> peer_acks_result;
  // Told about every call; may be null.
  Observer* observer = nullptr;
  // Whether submit_close_unreported() takes the close, as io_uring does with
  // IORING_FEAT_CQE_SKIP; when false it refuses it, as a backend without that does.
  bool closes_unreported = false;

  // --- fds -----------------------------------------------------------------------------------

  // A new "socket": the lowest unused number, as the kernel picks it.
  int open_fd() {
    std::size_t index = lowest_unused_;
    while (index < fds_.size() && fds_[index] != FdState::unused) ++index;
    if (index == fds_.size()) {
      fds_.push_back(FdState::unused);
      resets_.push_back(false);
      fd_requests_.push_back(0);
    }
    fds_[index] = FdState::open;
    resets_[index] = false;
    lowest_unused_ = index + 1;
    return static_cast<int>(index) + kFirstFd;
  }

  // The test closed `fd` itself (adopt() refused it).
  void forget_fd(int fd) {
    if (fd_state(fd) != FdState::open)
      return note("forget_fd(" + std::to_string(fd) + ") not open");
    fds_[index_of(fd)] = FdState::unused;
    lowest_unused_ = std::min(lowest_unused_, index_of(fd));
  }

  FdState fd_state(int fd) const noexcept {
    if (fd < kFirstFd || index_of(fd) >= fds_.size()) return FdState::unused;
    return fds_[index_of(fd)];
  }

  // Whether set_reset_on_close(fd) was called since open_fd() returned fd.
  bool reset_requested(int fd) const noexcept {
    return fd_state(fd) != FdState::unused && resets_[index_of(fd)];
  }

  // Fds currently open or closing.
  std::size_t fds_in_use() const noexcept {
    return static_cast<std::size_t>(
        std::count_if(fds_.begin(), fds_.end(), [](FdState s) { return s != FdState::unused; }));
  }

  // --- IoPort --------------------------------------------------------------------------------

  void submit_recv(OpTag tag, int fd, RecvMode mode, std::uint32_t max_bytes) override {
    Request request{tag, fd, mode, max_bytes, {}, false, false, 0};
    if (mode == RecvMode::discard && max_bytes == 0) note("discarding recv of 0 bytes");
    if (mode == RecvMode::deliver && max_bytes != 0) note("delivering recv with a byte limit");
    add(request);
  }

  void submit_send(OpTag tag, int fd, std::span<const std::byte> bytes, bool /*more*/) override {
    if (bytes.empty()) note("send of 0 bytes");
    add(Request{tag, fd, RecvMode::deliver, 0, bytes, false, false, 0});
  }

  // The engine fuzzer does not queue file sends; a call here is a rule breach.
  void submit_send_file(OpTag tag, int fd, int, std::uint64_t, std::uint32_t) override {
    note("file send in a run that queued none");
    add(Request{tag, fd, RecvMode::deliver, 0, {}, false, false, 0});
  }

  void submit_shutdown(OpTag tag, int fd) override {
    add(Request{tag, fd, RecvMode::deliver, 0, {}, false, false, 0});
  }

  void submit_cancel(OpTag tag, int fd) override {
    add(Request{tag, fd, RecvMode::deliver, 0, {}, false, false, 0});
  }

  void submit_close(OpTag tag, int fd) override {
    add(Request{tag, fd, RecvMode::deliver, 0, {}, false, false, 0});
  }

  // Checked as any close; the kernel runs it at once and no completion is ever due.
  bool submit_close_unreported(OpTag tag, int fd) override {
    if (!closes_unreported) return false;
    add(Request{tag, fd, RecvMode::deliver, 0, {}, false, true, 0});
    if (!outstanding_.empty() && outstanding_.back().tag == tag) take(outstanding_.size() - 1);
    ++unreported_closes_;
    return true;
  }

  int shutdown_now(int fd) override {
    ++shutdown_calls_;
    if (fd_state(fd) != FdState::open)
      note("shutdown_now(" + std::to_string(fd) + ") on an fd not open");
    const int result = shutdown_result ? shutdown_result(fd) : 0;
    if (observer != nullptr) observer->on_shutdown_now(fd, result);
    return result;
  }

  PeerAcks peer_acks(int fd, std::chrono::steady_clock::time_point now) override {
    ++peer_acks_calls_;
    if (fd_state(fd) != FdState::open) note("peer_acks(" + std::to_string(fd) + ") on an fd not open");
    return peer_acks_result ? peer_acks_result(fd, now) : PeerAcks{};
  }

  void set_reset_on_close(int fd) override {
    ++reset_calls_;
    if (fd_state(fd) != FdState::open) {
      note("set_reset_on_close(" + std::to_string(fd) + ") on an fd not open");
    } else {
      resets_[index_of(fd)] = true;
    }
    if (observer != nullptr) observer->on_set_reset_on_close(fd);
  }

  void limit_orphan_time(int fd, std::uint32_t milliseconds) override {
    if (fd_state(fd) != FdState::open) {
      note("limit_orphan_time(" + std::to_string(fd) + ") on an fd not open");
    }
    if (observer != nullptr) observer->on_limit_orphan_time(fd, milliseconds);
  }

  // --- outstanding requests ------------------------------------------------------------------

  const std::vector<Request>& outstanding() const noexcept { return outstanding_; }

  // Removes the request at `index` (its completion is about to be handed to the engine). For a
  // close this is also when the kernel runs it, unless release_fd() already did. The last
  // request moves into `index`.
  Request take(std::size_t index) {
    Request request = outstanding_.at(index);
    outstanding_[index] = outstanding_.back();
    outstanding_.pop_back();
    Slot& slot = slots_[request.tag.slot];
    slot.ops = static_cast<std::uint8_t>(slot.ops & ~bit(request.tag.op));
    if (!request.fd_released) --fd_requests_[index_of(request.fd)];
    if (request.tag.op == Op::close && !request.fd_released) release(request.fd);
    return request;
  }

  // A part of the discarding recv at `index` (Completion::more): `bytes` of what it may still
  // take, the request staying outstanding. The last bytes of its allowance end it, so a part
  // leaves at least one: its final completion is a take().
  void take_part(std::size_t index, std::uint32_t bytes) {
    Request& request = outstanding_.at(index);
    if (request.tag.op != Op::recv || request.mode != RecvMode::discard) {
      return note("take_part: " + describe(request) + " is not a discarding recv");
    }
    if (bytes == 0 || bytes >= request.max_bytes) {
      return note("take_part: " + std::to_string(bytes) + " bytes of " + describe(request) +
                  " (a part takes 1 or more, and less than what is left)");
    }
    request.max_bytes -= bytes;
  }

  // The kernel runs the close at `index` now; its completion stays outstanding. The fd number can
  // be handed out again before the engine hears of it, as with the real kernel.
  void release_fd(std::size_t index) {
    Request& request = outstanding_.at(index);
    if (request.tag.op != Op::close || request.fd_released) return note("release_fd: not a close");
    request.fd_released = true;
    --fd_requests_[index_of(request.fd)];
    release(request.fd);
  }

  // One bit per Op (bit = 1 << op) outstanding for `slot`, whatever the generation.
  std::uint8_t outstanding_ops(std::uint32_t slot) const noexcept {
    return slot < slots_.size() ? slots_[slot].ops : std::uint8_t{0};
  }

  // The generation of the requests outstanding for `slot` (meaningful when any are).
  std::uint32_t outstanding_generation(std::uint32_t slot) const noexcept {
    return slot < slots_.size() ? slots_[slot].generation : 0;
  }

  std::uint64_t submissions() const noexcept { return serial_; }
  std::uint64_t shutdown_calls() const noexcept { return shutdown_calls_; }
  std::uint64_t peer_acks_calls() const noexcept { return peer_acks_calls_; }
  std::uint64_t reset_calls() const noexcept { return reset_calls_; }
  std::uint64_t unreported_closes() const noexcept { return unreported_closes_; }

  // Breaches of the IoPort rules seen so far.
  const std::vector<std::string>& violations() const noexcept { return violations_; }
  void clear_violations() { violations_.clear(); }

  static constexpr std::uint8_t bit(Op op) noexcept {
    return static_cast<std::uint8_t>(1u << static_cast<unsigned>(op));
  }

 private:
  struct Slot {
    std::uint8_t ops = 0;
    std::uint32_t generation = 0;
    int fd = -1;
  };

  static std::size_t index_of(int fd) noexcept { return static_cast<std::size_t>(fd - kFirstFd); }

  void note(std::string what) { violations_.push_back(std::move(what)); }

  void add(Request request) {
    request.serial = ++serial_;
    const OpTag tag = request.tag;
    if (tag.slot >= slots_.size()) slots_.resize(tag.slot + 1);
    Slot& slot = slots_[tag.slot];
    if (request.fd < kFirstFd || index_of(request.fd) >= fds_.size()) {
      note(describe(request) + " on an fd never opened");
      return;  // cannot be tracked
    }
    if (fd_state(request.fd) != FdState::open) {
      note(describe(request) + " on an fd that is not open (its close was submitted or ran)");
    }
    if (slot.ops != 0 && slot.fd != request.fd) {
      note(describe(request) + " while the slot has requests outstanding on fd " +
           std::to_string(slot.fd));
    }
    if (slot.ops != 0 && slot.generation != tag.generation) {
      note(describe(request) + " while requests of generation " + std::to_string(slot.generation) +
           " are outstanding for the slot");
    }
    if ((slot.ops & bit(Op::close)) != 0) {
      note(describe(request) + " after the slot's close was submitted");
    }
    if ((slot.ops & bit(tag.op)) != 0) note(describe(request) + ": one already outstanding");
    if (tag.op == Op::close) {
      if ((slot.ops & ~bit(Op::close)) != 0) {
        note(describe(request) + " with other requests outstanding (ops mask " +
             std::to_string(slot.ops) + ")");
      }
      if (fd_requests_[index_of(request.fd)] != 0) {
        note(describe(request) + " while " + std::to_string(fd_requests_[index_of(request.fd)]) +
             " other requests are outstanding on the fd");
      }
      fds_[index_of(request.fd)] = FdState::closing;
    }
    ++fd_requests_[index_of(request.fd)];
    slot.ops = static_cast<std::uint8_t>(slot.ops | bit(tag.op));
    slot.generation = tag.generation;
    slot.fd = request.fd;
    outstanding_.push_back(request);
    if (observer != nullptr) observer->on_submit(request);
  }

  void release(int fd) {
    if (fd_state(fd) != FdState::closing) {
      return note("close of fd " + std::to_string(fd) + " ran but it was not closing");
    }
    fds_[index_of(fd)] = FdState::unused;
    resets_[index_of(fd)] = false;
    lowest_unused_ = std::min(lowest_unused_, index_of(fd));
  }

  std::vector<Request> outstanding_;
  std::vector<Slot> slots_;
  std::vector<FdState> fds_;
  std::vector<bool> resets_;
  std::vector<std::uint32_t> fd_requests_;  // outstanding requests per fd (a run close excluded)
  std::size_t lowest_unused_ = 0;           // no unused fd below this index
  std::vector<std::string> violations_;
  std::uint64_t serial_ = 0;
  std::uint64_t shutdown_calls_ = 0;
  std::uint64_t peer_acks_calls_ = 0;
  std::uint64_t reset_calls_ = 0;
  std::uint64_t unreported_closes_ = 0;
};

}  // namespace ringlinger::fake
