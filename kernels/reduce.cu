// CUDA gradient-norm reductions (see reduce.h). sum_squares is deterministic: the grid depends only on n,
// every thread sums a fixed set of elements in a fixed order, blocks reduce in a fixed tree into one
// partial each, and a single finishing block adds the partials (fixed tree) into *out.
#include <algorithm>

#include "kernels/cuda_vec.cuh"
#include "kernels/reduce.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;   // = the finishing block's threads; enough to fill an H100 ~8 times
constexpr i64 kMinPerThread = 16;  // elements per thread before another block is worth it

// Σ over the block, result in thread 0 (fixed order).
template <int kBlock>
__device__ float block_sum(float v) {
  __shared__ float sm[kBlock / 32];
  v = warp_sum(v);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = v;
  __syncthreads();
  v = threadIdx.x < kBlock / 32 ? sm[threadIdx.x] : 0.f;
  if (threadIdx.x < 32) v = warp_sum(v);
  return v;
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    sum_squares_partial(float* __restrict__ partial, const float* __restrict__ x, i64 n) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  float s = 0.f;
  i64 done = 0;
  if constexpr (kVec) {
    const i64 n4 = n / 4;
    for (i64 i = tid; i < n4; i += stride) {
      const float4 v = reinterpret_cast<const float4*>(x)[i];
      s += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    done = n4 * 4;
  }
  for (i64 i = done + tid; i < n; i += stride) s += x[i] * x[i];
  s = block_sum<kThreads>(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void __launch_bounds__(kMaxBlocks)
    sum_squares_finish(float* __restrict__ out, const float* __restrict__ partial, int parts) {
  const float s = block_sum<kMaxBlocks>(threadIdx.x < parts ? partial[threadIdx.x] : 0.f);
  if (threadIdx.x == 0) *out += s;
}

__global__ void clip_scale_kernel(float* scale, float* norm, const float* sumsq, float max_norm) {
  const float nrm = sqrtf(*sumsq);
  if (norm) *norm = nrm;
  // As ref::clip_scale: clamp(max_norm / (norm + 1e-6), max=1), NaN stays NaN, max_norm <= 0 disables.
  const float c = max_norm / (nrm + 1e-6f);
  *scale = max_norm <= 0.f ? 1.f : (c > 1.f ? 1.f : c);
}

}  // namespace

i64 sum_squares_scratch_floats() { return kMaxBlocks; }

void sum_squares(float* out, const float* x, i64 n, float* scratch, cudaStream_t stream) {
  if (n <= 0) return;
  const i64 blocks = std::clamp<i64>((n + kThreads * kMinPerThread - 1) / (kThreads * kMinPerThread), 1, kMaxBlocks);
  if (aligned16(x))
    sum_squares_partial<true><<<(unsigned)blocks, kThreads, 0, stream>>>(scratch, x, n);
  else
    sum_squares_partial<false><<<(unsigned)blocks, kThreads, 0, stream>>>(scratch, x, n);
  CUDA_CHECK_LAUNCH();
  sum_squares_finish<<<1, kMaxBlocks, 0, stream>>>(out, scratch, (int)blocks);
  CUDA_CHECK_LAUNCH();
}

void clip_scale(float* scale, float* norm, const float* sumsq, float max_norm, cudaStream_t stream) {
  clip_scale_kernel<<<1, 1, 0, stream>>>(scale, norm, sumsq, max_norm);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
