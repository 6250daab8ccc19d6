// random.h - a small, seedable, serialisable random generator (xoshiro256**).
//
// Every source of randomness in anybit (initialisation, dropout, data shuffling, augmentation,
// block swapping) draws from a Generator that the caller owns, so a run is reproducible from its
// seed and its generators can be saved in a checkpoint and restored exactly.
#pragma once
#include <array>
#include <cstdint>

namespace anybit {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_(seed); }
  void seed_(uint64_t seed);
  uint64_t next_u64();
  double uniform();                    // [0, 1)
  double normal();                     // N(0, 1), Box-Muller
  uint64_t below(uint64_t n);          // uniform in [0, n)
  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_{};
};

}  // namespace anybit
