// The random numbers of one sample's augmentation: every draw is rng::bits keyed by (seed, a stream made
// of (epoch, dataset index, replacement hop), draw number), so a sample's augmentation does not depend on
// which thread or rank processes it, nor on the order samples are processed in.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/rng.h"

namespace vit::data {

class SampleRng {
 public:
  SampleRng(uint64_t seed, int64_t epoch, int64_t index, int64_t hop = 0)
      : seed_(seed), stream_(rng::mix64(rng::mix64((uint64_t)epoch * 0x9e3779b97f4a7c15ULL + (uint64_t)hop) ^
                                        (uint64_t)index)) {}
  // Uniform in [0, 1) with 53 bits.
  double uniform(uint64_t draw) const { return (double)(rng::bits(seed_, stream_, draw) >> 11) * 0x1.0p-53; }
  double uniform(uint64_t draw, double lo, double hi) const { return lo + (hi - lo) * uniform(draw); }
  // Integer in [lo, hi] (both inclusive, as Python's random.randint).
  int64_t randint(uint64_t draw, int64_t lo, int64_t hi) const {
    return lo + (int64_t)std::floor(uniform(draw) * (double)(hi - lo + 1));
  }

 private:
  uint64_t seed_, stream_;
};

// Draw numbers of each augmentation (fixed slots, so one op's draw count never shifts another's).
namespace draw {
inline constexpr uint64_t rrc = 0;        // 10 attempts × 4 draws
inline constexpr uint64_t hflip = 40;
inline constexpr uint64_t vflip = 41;
inline constexpr uint64_t jitter = 42;    // 2 (order) + 3 (factors)
inline constexpr uint64_t erasing = 50;   // 1 (apply?) + 10 attempts × 4 draws
}  // namespace draw

}  // namespace vit::data
