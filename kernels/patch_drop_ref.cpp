#include <cstring>

#include "engine/rng.h"
#include "kernels/patch_drop.h"

namespace vit::ref {

void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site) {
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Np; ++i) {
      // rank of patch i among the sample's keys (ties broken by index): the GPU computes the same ranks
      const float ki = rng::uniform(seed, site, (uint64_t)b * Np + i);
      int rank = 0;
      for (int j = 0; j < Np; ++j) {
        const float kj = rng::uniform(seed, site, (uint64_t)b * Np + j);
        rank += kj < ki || (kj == ki && j < i);
      }
      if (rank < keep) idx[(i64)b * keep + rank] = i;
    }
}

template <class T>
void patch_drop_forward(T* out, const T* x, const int* idx, int B, int prefix, int Np, int keep, int D) {
  const i64 Tin = prefix + Np, Tout = prefix + keep;
  for (int b = 0; b < B; ++b) {
    std::memcpy(out + b * Tout * D, x + b * Tin * D, sizeof(T) * prefix * D);
    for (int j = 0; j < keep; ++j)
      std::memcpy(out + (b * Tout + prefix + j) * D, x + (b * Tin + prefix + idx[(i64)b * keep + j]) * D, sizeof(T) * D);
  }
}

template <class T>
void patch_drop_backward(T* dx, const T* dout, const int* idx, int B, int prefix, int Np, int keep, int D) {
  const i64 Tin = prefix + Np, Tout = prefix + keep;
  std::memset(dx, 0, sizeof(T) * B * Tin * D);
  for (int b = 0; b < B; ++b) {
    std::memcpy(dx + b * Tin * D, dout + b * Tout * D, sizeof(T) * prefix * D);
    for (int j = 0; j < keep; ++j)
      std::memcpy(dx + (b * Tin + prefix + idx[(i64)b * keep + j]) * D, dout + (b * Tout + prefix + j) * D, sizeof(T) * D);
  }
}

template void patch_drop_forward<float>(float*, const float*, const int*, int, int, int, int, int);
template void patch_drop_forward<double>(double*, const double*, const int*, int, int, int, int, int);
template void patch_drop_backward<float>(float*, const float*, const int*, int, int, int, int, int);
template void patch_drop_backward<double>(double*, const double*, const int*, int, int, int, int, int);

}  // namespace vit::ref
