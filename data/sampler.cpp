#include "data/sampler.h"

#include "engine/check.h"
#include "engine/rng.h"

namespace vit::data {

Sampler::Sampler(int64_t n, int rank, int world, int batch, Split split, uint64_t seed)
    : n_(n), rank_(rank), world_(world), batch_(batch), split_(split), seed_(seed) {
  VIT_REQUIRE(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " of world ", world, ": bad rank");
  VIT_REQUIRE(batch >= 1, "batch size ", batch, ": must be at least 1");
  VIT_REQUIRE(n >= 1, "empty dataset");
  const int64_t g = global_batch();
  steps_ = split == Split::train ? n / g : (n + g - 1) / g;
  VIT_REQUIRE(steps_ > 0, "the training set has ", n, " images, fewer than one global batch of ", g, " (", world,
              " rank(s) × batch ", batch, "): use a smaller batch or more data");
  // Smallest even bit width 2h with 2^(2h) >= n (at least 2 bits so the halves are not empty).
  half_bits_ = 1;
  while (half_bits_ < 31 && (uint64_t(1) << (2 * half_bits_)) < (uint64_t)n) ++half_bits_;
}

uint64_t Sampler::feistel(uint64_t x, uint64_t key) const {
  const uint64_t mask = (uint64_t(1) << half_bits_) - 1;
  uint64_t l = x >> half_bits_, r = x & mask;
  for (uint64_t round = 0; round < 6; ++round) {
    const uint64_t f = rng::mix64(r ^ rng::mix64(key + round)) & mask;
    const uint64_t nl = r;
    r = l ^ f;
    l = nl;
  }
  return (l << half_bits_) | r;
}

int64_t Sampler::at(int64_t epoch, int64_t pos) const {
  VIT_ASSERT(pos >= 0 && pos < n_, "position ", pos, " of ", n_);
  if (split_ == Split::val) return pos;
  // A bijection on [0, 4^h) restricted to [0, n) by cycle walking: still a bijection, and since
  // 4^h < 4n the expected walk is under 4 steps.
  const uint64_t key = rng::mix64(seed_ ^ rng::mix64((uint64_t)epoch + 0x5a3b1ee7ULL));
  uint64_t x = (uint64_t)pos;
  do x = feistel(x, key);
  while (x >= (uint64_t)n_);
  return (int64_t)x;
}

}  // namespace vit::data
