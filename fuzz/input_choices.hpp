// InputChoices: the engine model's decisions (choices.hpp) read from a libFuzzer input, front to
// back. Each decision takes as few bytes as its range needs (one for up to 256 outcomes), so a
// mutated byte changes one decision and coverage can tell which inputs reach new code.
//
// When the input runs out, decisions continue from a PRNG seeded with the input's hash: the run
// still has to drive every connection to its close (the model's finish()), and an input must
// always replay the same way.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>

#include "choices.hpp"

namespace ringlinger::fuzz {

class InputChoices final : public fake::Choices {
 public:
  InputChoices(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {
    std::uint64_t hash = 0xcbf29ce484222325;  // FNV-1a
    for (std::size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 0x100000001b3;
    state_ = hash;
  }

  std::uint64_t below(std::uint64_t n) override {
    if (n <= 1) return 0;  // no decision to make: no byte spent on it
    if (exhausted()) return next_random() % n;
    const int bytes = (std::bit_width(n - 1) + 7) / 8;
    std::uint64_t value = 0;
    for (int i = 0; i < bytes && position_ < size_; ++i) value = (value << 8) | data_[position_++];
    return value % n;
  }

  // Payload bytes cost no input: a counter modulo a prime (251) makes every send's bytes differ
  // from its neighbours', which is all the model's checks need.
  void fill(std::string& bytes) override {
    for (char& c : bytes) c = static_cast<char>(payload_++ % 251);
  }

  bool exhausted() const override { return position_ == size_; }

 private:
  std::uint64_t next_random() noexcept {  // splitmix64
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }

  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t position_ = 0;
  std::uint64_t state_;
  std::uint64_t payload_ = 0;
};

}  // namespace ringlinger::fuzz
