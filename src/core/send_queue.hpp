// The bytes queued for one connection, in order. Each piece is either owned (a std::string moved
// in), borrowed (the caller keeps it alive) or a range of a file (sent with sendfile). Pieces live in heap nodes that never move (recycled through a per-thread free list), so the
// pointer handed to an in-flight send stays valid whatever is queued behind it.
//
// One case takes no node: a borrowed piece pushed into an empty queue (a server's response from a
// buffer it keeps, as serve's) is held inline, in the two words that otherwise point at the
// first and last node, until it is sent or another piece is pushed behind it (then it moves into
// a node, pointing at the same bytes, so an in-flight send's pointer stays valid). A node taken
// and given back cost 33 instructions per close (bench/callgrind.sh).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "core/assert.hpp"

namespace ringlinger::detail {

class SendQueue {
 public:
  // Appends owned bytes (moved, not copied). Empty input is ignored.
  void push(std::string bytes) {
    if (bytes.empty()) return;
    Node* node = new_piece();
    node->owned = std::move(bytes);
    node->data = reinterpret_cast<const std::byte*>(node->owned.data());
    node->size = node->owned.size();
    append(node);
  }

  // Appends borrowed bytes. Empty input is ignored.
  void push_view(std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (first_ == 0) {  // the only piece: held inline
      RL_ASSERT(bytes.size() <= kMaxInlineBytes);
      first_ = reinterpret_cast<std::uintptr_t>(bytes.data());
      second_ = (std::uintptr_t{bytes.size()} << 1) | kInlineTag;
      return;
    }
    Node* node = new_piece();
    node->data = bytes.data();
    node->size = bytes.size();
    append(node);
  }

  // Appends `length` bytes of the file `file_fd` from `offset` (the caller keeps the file open).
  // Empty input is ignored.
  void push_file(int file_fd, std::uint64_t offset, std::uint64_t length) {
    if (length == 0) return;
    Node* node = new_piece();
    node->file_fd = file_fd;
    node->file_offset = offset;
    node->size = length;
    append(node);
  }

  // Whether nothing is left to send.
  bool empty() const noexcept { return first_ == 0; }

  // Whether another piece follows the first.
  bool more_after_front() const noexcept {
    return !is_inline() && first_ != 0 && head()->next != nullptr;
  }

  // Whether the first piece is a file range (then front_file() describes it, front() is empty).
  bool front_is_file() const noexcept {
    return !is_inline() && first_ != 0 && head()->file_fd >= 0;
  }

  // The unsent part of the first piece when it is a file range.
  struct FileRange {
    int fd;
    std::uint64_t offset;
    std::uint64_t length;
  };
  FileRange front_file() const noexcept {
    RL_ASSERT(front_is_file());
    const Node* node = head();
    return {node->file_fd, node->file_offset + node->sent, node->size - node->sent};
  }

  // The unsent part of the first piece (empty when the queue is empty).
  std::span<const std::byte> front() const noexcept {
    if (first_ == 0) return {};
    if (is_inline()) return {inline_bytes(), inline_left()};
    const Node* node = head();
    if (node->file_fd >= 0) return {};
    return {node->data + node->sent, node->size - node->sent};
  }

  // Marks `count` bytes of the front piece as sent; drops the piece when it is done.
  void consume(std::size_t count) noexcept {
    if (!consume_if_inline(count)) consume_in_node(count);
  }
  // consume() when the front piece is held inline (no call, nothing freed); false, and nothing
  // done, when the queue is in node form.
  bool consume_if_inline(std::size_t count) noexcept {
    if (!is_inline()) return false;
    const std::size_t left = inline_left();
    RL_ASSERT(count <= left);
    if (count == left) {
      first_ = second_ = 0;
    } else {
      first_ += count;
      second_ = (std::uintptr_t{left - count} << 1) | kInlineTag;
    }
    return true;
  }

  // Bytes still to send (walks the pieces: for tests and diagnostics, not the hot path; not
  // keeping a running total saves 8 bytes in every connection slot).
  std::uint64_t queued_bytes() const noexcept {
    if (is_inline()) return inline_left();
    std::uint64_t total = 0;
    for (const Node* node = head(); node != nullptr; node = node->next) {
      total += node->size - node->sent;
    }
    return total;
  }

  // Drops everything (after the connection is closed). Inline, one test, for the empty queue of
  // most closes; the pieces out of line, so that a caller (the engine's release of a slot) saves
  // no registers for the loop.
  void clear() noexcept {
    if (first_ != 0) [[unlikely]] clear_pieces();
  }

  ~SendQueue() { clear(); }
  SendQueue() = default;
  // Moving leaves the source empty.
  SendQueue(SendQueue&& other) noexcept : first_(other.first_), second_(other.second_) {
    other.first_ = other.second_ = 0;
  }
  SendQueue& operator=(SendQueue&& other) noexcept {
    if (this != &other) {
      clear();
      first_ = other.first_;
      second_ = other.second_;
      other.first_ = other.second_ = 0;
    }
    return *this;
  }
  SendQueue(const SendQueue&) = delete;
  SendQueue& operator=(const SendQueue&) = delete;

 private:
  struct Node {
    Node* next = nullptr;
    std::string owned;                // empty for a borrowed piece
    const std::byte* data = nullptr;  // owned.data() or the borrowed bytes
    std::size_t size = 0;
    std::size_t sent = 0;
    int file_fd = -1;                 // >= 0 for a file range
    std::uint64_t file_offset = 0;
  };

  // Nodes given back, kept per thread for the next piece: every response queues and drops at
  // least one, and a free list keeps malloc and free off that path (about 250 instructions per
  // close). Per thread because a manager runs on one thread at a time; bounded, so a burst of
  // long queues does not stay allocated.
  //
  // Constant-initialized and trivially destructible, so that with initial-exec (cache()) each
  // use is one %fs-relative access: a thread_local with a destructor gets a guard variable that
  // the tls_model attribute does not reach, and from a shared library every use then called
  // __tls_get_addr for it (measured with bench/callgrind.sh: 22 instructions per close). The
  // nodes are freed at thread exit by CacheCleanup, a second thread_local touched once per
  // thread, when the first node is cached.
  class NodeCache {
   public:
    static constexpr std::size_t kMaxNodes = 1024;
    Node* take() noexcept {
      Node* node = free_;
      if (node != nullptr) {
        free_ = node->next;
        --count_;
        node->next = nullptr;
      }
      return node;
    }
    bool give(Node* node) noexcept {
      if (count_ == kMaxNodes || !open()) return false;
      if (!node->owned.empty()) std::string().swap(node->owned);  // an owned piece's bytes go
      node->data = nullptr;
      node->size = node->sent = 0;
      node->file_fd = -1;
      node->file_offset = 0;
      node->next = free_;
      free_ = node;
      ++count_;
      return true;
    }
    // The thread exits: what is cached is freed, and nothing is cached from then on (a later
    // thread_local destructor may still drop a queue).
    void close() noexcept {
      while (Node* node = take()) delete node;
      state_ = State::closed;
    }

   private:
    enum class State : std::uint8_t { unregistered, open, closed };
    bool open() noexcept {
      if (state_ == State::open) return true;
      if (state_ == State::closed) return false;
      register_cleanup();
      state_ = State::open;
      return true;
    }

    Node* free_ = nullptr;
    std::size_t count_ = 0;
    State state_ = State::unregistered;
  };

  struct CacheCleanup {
    ~CacheCleanup() { cache().close(); }
  };

  [[gnu::noinline]] static void register_cleanup() noexcept {
    static thread_local CacheCleanup cleanup;  // passing here registers its destructor
    (void)cleanup;
  }

  static NodeCache& cache() noexcept {
    // initial-exec: one %fs-relative load instead of a __tls_get_addr call from the shared
    // library; the few bytes fit glibc's static TLS reserve even when the library is dlopen()ed.
    [[gnu::tls_model("initial-exec")]] static thread_local constinit NodeCache nodes;
    return nodes;
  }

  static Node* take_node() {
    Node* node = cache().take();
    return node != nullptr ? node : new Node;
  }

  // consume() in node form. Out of line: a caller makes no call for an inline piece (the
  // engine's send completion asks consume_if_inline() first, and calls this apart).
  [[gnu::noinline]] void consume_in_node(std::size_t count) noexcept {
    Node* node = head();
    RL_ASSERT(node != nullptr && count <= node->size - node->sent);
    node->sent += count;
    if (node->sent == node->size) pop_front();
  }

  [[gnu::noinline]] void clear_pieces() noexcept {
    if (is_inline()) {
      first_ = second_ = 0;
      return;
    }
    while (first_ != 0) pop_front();
  }

  // Node mode only.
  void pop_front() noexcept {
    Node* node = head();
    first_ = reinterpret_cast<std::uintptr_t>(node->next);
    if (first_ == 0) second_ = 0;
    if (!cache().give(node)) delete node;
  }

  // A node for a piece to append; an inline piece moves into a node of its own first.
  Node* new_piece() {
    if (is_inline()) move_inline_piece_to_node();
    return take_node();
  }

  // Node mode only (new_piece() made sure of it).
  void append(Node* node) noexcept {
    RL_ASSERT(!is_inline());
    if (first_ == 0) {
      first_ = reinterpret_cast<std::uintptr_t>(node);
    } else {
      tail()->next = node;
    }
    second_ = reinterpret_cast<std::uintptr_t>(node);
  }

  // The inline piece's unsent bytes become a node of their own: the same address, so a send in
  // flight from them is unaffected. May throw (allocation) with the queue unchanged.
  [[gnu::noinline]] void move_inline_piece_to_node() {
    Node* node = take_node();
    node->data = inline_bytes();
    node->size = inline_left();
    first_ = second_ = reinterpret_cast<std::uintptr_t>(node);
  }

  // The low bit of second_ says which of the two forms the queue has (a Node is at least 8-byte
  // aligned, so a tail pointer's low bit is 0).
  static constexpr std::uintptr_t kInlineTag = 1;
  static_assert(alignof(Node) > kInlineTag, "a node's address must leave the tag bit clear");
  static constexpr std::size_t kMaxInlineBytes = SIZE_MAX >> 1;
  bool is_inline() const noexcept { return (second_ & kInlineTag) != 0; }
  Node* head() const noexcept { return reinterpret_cast<Node*>(first_); }
  Node* tail() const noexcept { return reinterpret_cast<Node*>(second_); }
  const std::byte* inline_bytes() const noexcept {
    return reinterpret_cast<const std::byte*>(first_);
  }
  std::size_t inline_left() const noexcept { return static_cast<std::size_t>(second_ >> 1); }

  // Nodes: the first node and the last (0 when empty). Inline: the unsent bytes' address, and
  // their count shifted left by one with kInlineTag set.
  std::uintptr_t first_ = 0;
  std::uintptr_t second_ = 0;
};

}  // namespace ringlinger::detail
