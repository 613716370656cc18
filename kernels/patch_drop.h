// timm's PatchDropout (training only): every sample keeps `keep` = max(1, floor(Np·(1 − p))) of its Np patch
// tokens; prefix tokens (class, registers) are always kept. The kept patches are those with the smallest
// counter-RNG keys uniform(seed, site, b·Np + i) (ties by index), in key order, like timm's
// argsort(randn)[:keep]: a uniformly random subset in random order, reproducible from the seed.
//   x (B, prefix + Np, D)  ->  out (B, prefix + keep, D);  backward writes the whole dx (=), zero rows for
//   dropped patches.
#pragma once
#include "kernels/types.h"

namespace vit {
inline int patch_drop_keep(int Np, double p) {
  const int k = (int)((double)Np * (1.0 - p));
  return k < 1 ? 1 : k;
}
}  // namespace vit

namespace vit::ref {
void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site);  // idx (B, keep)
template <class T>
void patch_drop_forward(T* out, const T* x, const int* idx, int B, int prefix, int Np, int keep, int D);
template <class T>
void patch_drop_backward(T* dx, const T* dout, const int* idx, int B, int prefix, int Np, int keep, int D);
}  // namespace vit::ref

namespace vit::gpu {
void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site, cudaStream_t stream);
void patch_drop_forward(bf16* out, const bf16* x, const int* idx, int B, int prefix, int Np, int keep, int D,
                        cudaStream_t stream);
void patch_drop_backward(bf16* dx, const bf16* dout, const int* idx, int B, int prefix, int Np, int keep, int D,
                         cudaStream_t stream);
}  // namespace vit::gpu
