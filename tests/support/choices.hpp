// Choices: where a fuzzing driver's decisions come from. The engine model (engine_model.hpp)
// asks for every decision here (which event, which connection, which request completes, with
// which result, how far time jumps), so the same driver, model and checks run under two sources:
//   - SeededChoices: a seeded PRNG, for the gtest fuzzer (tests/unit/engine_fuzz_test.cpp);
//   - the libFuzzer target's input bytes (fuzz/engine_fuzzer.cpp), so coverage guides them.
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace ringlinger::fake {

class Choices {
 public:
  virtual ~Choices() = default;

  // A value in [0, n), n > 0.
  virtual std::uint64_t below(std::uint64_t n) = 0;
  // Overwrites `bytes` with payload: only telling one send's bytes from another's matters.
  virtual void fill(std::string& bytes) = 0;
  // No more decisions of the source's own: a driver that runs "as long as there is input"
  // stops here and finishes with what below() still returns.
  virtual bool exhausted() const { return false; }
};

// A seeded std::mt19937_64: the same seed makes the same decisions, on every machine.
class SeededChoices final : public Choices {
 public:
  explicit SeededChoices(std::uint64_t seed) : rng_(seed) {}

  std::uint64_t below(std::uint64_t n) override { return rng_() % n; }

  void fill(std::string& bytes) override {
    for (char& c : bytes) c = static_cast<char>('a' + rng_() % 26);
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace ringlinger::fake
