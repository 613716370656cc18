#include "engine/cuda_check.h"
#include "engine/rng.h"
#include "kernels/patch_drop.h"

namespace vit::gpu {
namespace {
// One block per sample: the rank of each patch's key among the sample's keys (O(Np^2), Np is a few hundred).
__global__ void keep_kernel(int* idx, int Np, int keep, uint64_t seed, uint64_t site) {
  const int b = blockIdx.x;
  for (int i = threadIdx.x; i < Np; i += blockDim.x) {
    const float ki = rng::uniform(seed, site, (uint64_t)b * Np + i);
    int rank = 0;
    for (int j = 0; j < Np; ++j) {
      const float kj = rng::uniform(seed, site, (uint64_t)b * Np + j);
      rank += kj < ki || (kj == ki && j < i);
    }
    if (rank < keep) idx[(i64)b * keep + rank] = i;
  }
}
// One block per output row (b, t): copy D values.
__global__ void gather_kernel(bf16* out, const bf16* x, const int* idx, int prefix, int Np, int keep, int D) {
  const int b = blockIdx.y, t = blockIdx.x;
  const int src = t < prefix ? t : prefix + idx[(i64)b * keep + (t - prefix)];
  const bf16* s = x + ((i64)b * (prefix + Np) + src) * D;
  bf16* o = out + ((i64)b * (prefix + keep) + t) * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) o[c] = s[c];
}
__global__ void scatter_kernel(bf16* dx, const bf16* dout, const int* idx, int prefix, int Np, int keep, int D) {
  const int b = blockIdx.y, t = blockIdx.x;
  const int dst = t < prefix ? t : prefix + idx[(i64)b * keep + (t - prefix)];
  const bf16* s = dout + ((i64)b * (prefix + keep) + t) * D;
  bf16* o = dx + ((i64)b * (prefix + Np) + dst) * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) o[c] = s[c];
}
}  // namespace

void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site, cudaStream_t stream) {
  keep_kernel<<<B, 256, 0, stream>>>(idx, Np, keep, seed, site);
  CUDA_CHECK_LAUNCH();
}

void patch_drop_forward(bf16* out, const bf16* x, const int* idx, int B, int prefix, int Np, int keep, int D,
                        cudaStream_t stream) {
  gather_kernel<<<dim3(prefix + keep, B), 128, 0, stream>>>(out, x, idx, prefix, Np, keep, D);
  CUDA_CHECK_LAUNCH();
}

void patch_drop_backward(bf16* dx, const bf16* dout, const int* idx, int B, int prefix, int Np, int keep, int D,
                         cudaStream_t stream) {
  CUDA_CHECK(cudaMemsetAsync(dx, 0, sizeof(bf16) * (size_t)B * (prefix + Np) * D, stream));
  scatter_kernel<<<dim3(prefix + keep, B), 128, 0, stream>>>(dx, dout, idx, prefix, Np, keep, D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
