// Which dataset sample each rank's batch slot gets.
//
// Each epoch is a permutation of [0, N) (train: a seeded pseudo-random permutation, a keyed Feistel
// network with cycle walking, O(1) memory and a pure function of (seed, epoch, position); val: identity).
// Step s of an epoch takes the global batch of positions [s·G, (s+1)·G), G = world × batch, and rank r
// the slice [s·G + r·batch, s·G + (r+1)·batch). So the global batch does not depend on how it is split
// over ranks.
// Policy when N does not divide by G:
//   train: steps_per_epoch = floor(N / G); the last incomplete global batch is dropped (a different
//          permutation every epoch, so no sample is always the one left out);
//   val:   steps_per_epoch = ceil(N / G); positions >= N are padding, marked invalid (index -1), so
//          every sample is evaluated exactly once and sums over ranks are exact.
#pragma once
#include <cstdint>

#include "data/transforms.h"

namespace vit::data {

class Sampler {
 public:
  Sampler(int64_t n, int rank, int world, int batch, Split split, uint64_t seed);
  int64_t size() const { return n_; }
  int64_t steps_per_epoch() const { return steps_; }
  int64_t global_batch() const { return (int64_t)world_ * batch_; }
  // Position in the epoch's permutation of slot j of this rank's batch at `step`.
  int64_t position(int64_t step, int j) const { return step * global_batch() + (int64_t)rank_ * batch_ + j; }
  // The dataset index at `pos` of the epoch's permutation (pos in [0, N)).
  int64_t at(int64_t epoch, int64_t pos) const;
  // Dataset index for slot j at (epoch, step), or -1 for a val padding slot.
  int64_t index(int64_t epoch, int64_t step, int j) const {
    const int64_t p = position(step, j);
    return p < n_ ? at(epoch, p) : -1;
  }

 private:
  uint64_t feistel(uint64_t x, uint64_t key) const;
  int64_t n_;
  int rank_, world_, batch_;
  Split split_;
  uint64_t seed_;
  int64_t steps_;
  int half_bits_;
};

}  // namespace vit::data
