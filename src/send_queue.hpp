// The bytes queued for one connection, in order. Each piece is either owned (a std::string moved
// in), borrowed (the caller keeps it alive) or a range of a file (sent with sendfile). Pieces live in heap nodes that never move, so the
// pointer handed to an in-flight send stays valid whatever is queued behind it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "assert.hpp"

namespace ringlinger::detail {

class SendQueue {
 public:
  // Appends owned bytes (moved, not copied). Empty input is ignored.
  void push(std::string bytes) {
    if (bytes.empty()) return;
    auto node = std::make_unique<Node>();
    node->owned = std::move(bytes);
    node->data = reinterpret_cast<const std::byte*>(node->owned.data());
    node->size = node->owned.size();
    append(std::move(node));
  }

  // Appends borrowed bytes. Empty input is ignored.
  void push_view(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    auto node = std::make_unique<Node>();
    node->data = bytes.data();
    node->size = bytes.size();
    append(std::move(node));
  }

  // Appends `length` bytes of the file `file_fd` from `offset` (the caller keeps the file open).
  // Empty input is ignored.
  void push_file(int file_fd, std::uint64_t offset, std::uint64_t length) {
    if (length == 0) return;
    auto node = std::make_unique<Node>();
    node->file_fd = file_fd;
    node->file_offset = offset;
    node->size = length;
    append(std::move(node));
  }

  // Whether nothing is left to send.
  bool empty() const noexcept { return head_ == nullptr; }

  // Whether another piece follows the first.
  bool more_after_front() const noexcept { return head_ != nullptr && head_->next != nullptr; }

  // Whether the first piece is a file range (then front_file() describes it, front() is empty).
  bool front_is_file() const noexcept { return head_ != nullptr && head_->file_fd >= 0; }

  // The unsent part of the first piece when it is a file range.
  struct FileRange {
    int fd;
    std::uint64_t offset;
    std::uint64_t length;
  };
  FileRange front_file() const noexcept {
    RL_ASSERT(front_is_file());
    return {head_->file_fd, head_->file_offset + head_->sent, head_->size - head_->sent};
  }

  // The unsent part of the first piece (empty when the queue is empty).
  std::span<const std::byte> front() const noexcept {
    if (head_ == nullptr || head_->file_fd >= 0) return {};
    return {head_->data + head_->sent, head_->size - head_->sent};
  }

  // Marks `count` bytes of the front piece as sent; drops the piece when it is done.
  void consume(std::size_t count) noexcept {
    RL_ASSERT(head_ != nullptr && count <= head_->size - head_->sent);
    head_->sent += count;
    if (head_->sent == head_->size) {
      head_ = std::move(head_->next);
      if (head_ == nullptr) tail_ = nullptr;
    }
  }

  // Bytes still to send (walks the pieces: for tests and diagnostics, not the hot path; not
  // keeping a running total saves 8 bytes in every connection slot).
  std::uint64_t queued_bytes() const noexcept {
    std::uint64_t total = 0;
    for (const Node* node = head_.get(); node != nullptr; node = node->next.get()) {
      total += node->size - node->sent;
    }
    return total;
  }

  // Drops everything (after the connection is closed).
  void clear() noexcept {
    // Unlink iteratively: a long queue must not recurse through unique_ptr destructors.
    while (head_ != nullptr) head_ = std::move(head_->next);
    tail_ = nullptr;
  }

  ~SendQueue() { clear(); }
  SendQueue() = default;
  // Moving leaves the source empty (a defaulted move would leave it a dangling tail).
  SendQueue(SendQueue&& other) noexcept
      : head_(std::move(other.head_)), tail_(other.tail_) {
    other.tail_ = nullptr;
  }
  SendQueue& operator=(SendQueue&& other) noexcept {
    if (this != &other) {
      clear();
      head_ = std::move(other.head_);
      tail_ = other.tail_;
      other.tail_ = nullptr;
    }
    return *this;
  }
  SendQueue(const SendQueue&) = delete;
  SendQueue& operator=(const SendQueue&) = delete;

 private:
  struct Node {
    std::unique_ptr<Node> next;
    std::string owned;                // empty for a borrowed piece
    const std::byte* data = nullptr;  // owned.data() or the borrowed bytes
    std::size_t size = 0;
    std::size_t sent = 0;
    int file_fd = -1;                 // >= 0 for a file range
    std::uint64_t file_offset = 0;
  };

  void append(std::unique_ptr<Node> node) {
    Node* raw = node.get();
    if (tail_ == nullptr) {
      head_ = std::move(node);
    } else {
      tail_->next = std::move(node);
    }
    tail_ = raw;
  }

  std::unique_ptr<Node> head_;
  Node* tail_ = nullptr;
};

}  // namespace ringlinger::detail
