// CUDA softmax cross-entropy (see softmax_xent.h): one block per row, any K. Pass 1 reads the row once for
// an online max / Σexp (fp32) and Σz; pass 2 reads it again and writes dlogits. The probabilities are
// never stored. Rows are read as 16-byte vectors when K % 8 == 0 and the logits are 16-byte aligned.
#include <cmath>

#include "kernels/cuda_vec.cuh"
#include "kernels/softmax_xent.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kMaxThreads = 1024;

// Merge two (max, Σexp(z - max)) pairs. Symmetric in its arguments, so a butterfly leaves every lane with
// the same bits. Both empty (max = -inf) stays empty instead of producing NaN.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float nm = fmaxf(m, m2);
  s = nm == -INFINITY ? 0.f : s * expf(m - nm) + s2 * expf(m2 - nm);
  m = nm;
}

// Block-wide (max, Σexp, Σz); every thread gets the result. Fixed order: deterministic for a block size.
__device__ void block_stats(float& m, float& s, float& sz) {
  __shared__ float sm_m[32], sm_s[32], sm_z[32];
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(~0u, m, o), __shfl_xor_sync(~0u, s, o));
  sz = warp_sum(sz);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) sm_m[warp] = m, sm_s[warp] = s, sm_z[warp] = sz;
  __syncthreads();
  m = lane < warps ? sm_m[lane] : -INFINITY;
  s = lane < warps ? sm_s[lane] : 0.f;
  sz = lane < warps ? sm_z[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(~0u, m, o), __shfl_xor_sync(~0u, s, o));
  sz = warp_sum(sz);
}

template <int V>
__global__ void __launch_bounds__(kMaxThreads)
    softmax_xent_kernel(float* __restrict__ losses, bf16* __restrict__ dlogits, const bf16* __restrict__ logits,
                        const int* __restrict__ labels, int K, float smoothing, float dscale) {
  const i64 row = blockIdx.x;
  const bf16* z = logits + row * K;
  const int y = labels[row];
  const bool label_ok = y >= 0 && y < K;  // a bad label is a bug upstream: NaN loss, no out-of-bounds read
  float m = -INFINITY, s = 0.f, sz = 0.f;
  for (int i = threadIdx.x * V; i < K; i += blockDim.x * V) {
    float f[V];
    load_bf16<V>(z + i, f);
    float lm = f[0];
#pragma unroll
    for (int j = 1; j < V; ++j) lm = fmaxf(lm, f[j]);
    if (lm > m) {
      s *= expf(m - lm);
      m = lm;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) {
      s += expf(f[j] - m);
      sz += f[j];
    }
  }
  block_stats(m, s, sz);
  const float lse = m + logf(s), uniform = smoothing / (float)K;
  if (threadIdx.x == 0) losses[row] = label_ok ? lse - (1.f - smoothing) * __bfloat162float(z[y]) - uniform * sz : NAN;
  if (!dlogits) return;
  bf16* d = dlogits + row * K;
  for (int i = threadIdx.x * V; i < K; i += blockDim.x * V) {
    float f[V];
    load_bf16<V>(z + i, f);
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = dscale * (__expf(f[j] - lse) - uniform - (i + j == y ? 1.f - smoothing : 0.f));
    store_bf16<V>(d + i, f);
  }
}

template <int V>
__global__ void __launch_bounds__(kMaxThreads)
    topk_kernel(int* __restrict__ correct, const bf16* __restrict__ logits, const int* __restrict__ labels, int K) {
  __shared__ int sm[32];
  const i64 row = blockIdx.x;
  const bf16* z = logits + row * K;
  const int y = labels[row];
  if (y < 0 || y >= K) return;  // counted as wrong
  const float zy = __bfloat162float(z[y]);
  // The label's rank: other classes scoring at least as high (a tie counts against the label).
  int ahead = 0;
  for (int i = threadIdx.x * V; i < K; i += blockDim.x * V) {
    float f[V];
    load_bf16<V>(z + i, f);
#pragma unroll
    for (int j = 0; j < V; ++j) ahead += (i + j != y && f[j] >= zy);
  }
  ahead = __reduce_add_sync(~0u, ahead);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  if (lane == 0) sm[warp] = ahead;
  __syncthreads();
  if (warp == 0) {
    ahead = __reduce_add_sync(~0u, lane < warps ? sm[lane] : 0);
    if (lane == 0) {
      if (ahead < 1) atomicAdd(correct, 1);  // integer atomics: exact, order does not matter
      if (ahead < 5) atomicAdd(correct + 1, 1);
    }
  }
}

// Threads for a row of `items` vectors: one vector per thread up to 1024 threads, at least one warp.
int threads_for(int items) {
  int t = 32;
  while (t < items && t < kMaxThreads) t *= 2;
  return t;
}

}  // namespace

void softmax_xent(float* losses, bf16* dlogits, const bf16* logits, const int* labels, int B, int K, float smoothing,
                  float dscale, cudaStream_t stream) {
  VIT_ASSERT(K > 0 && B >= 0, "softmax_xent: B=", B, " K=", K);
  if (B == 0) return;
  if (K % 8 == 0 && aligned16(logits) && (!dlogits || aligned16(dlogits)))
    softmax_xent_kernel<8><<<B, threads_for(K / 8), 0, stream>>>(losses, dlogits, logits, labels, K, smoothing, dscale);
  else
    softmax_xent_kernel<1><<<B, threads_for(K), 0, stream>>>(losses, dlogits, logits, labels, K, smoothing, dscale);
  CUDA_CHECK_LAUNCH();
}

void topk_correct(int* correct, const bf16* logits, const int* labels, int B, int K, cudaStream_t stream) {
  VIT_ASSERT(K > 0 && B >= 0, "topk_correct: B=", B, " K=", K);
  if (B == 0) return;
  if (K % 8 == 0 && aligned16(logits))
    topk_kernel<8><<<B, threads_for(K / 8), 0, stream>>>(correct, logits, labels, K);
  else
    topk_kernel<1><<<B, threads_for(K), 0, stream>>>(correct, logits, labels, K);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
