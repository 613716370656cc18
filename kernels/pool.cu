// CUDA global pooling (see pool.h). Forward: one block per (sample, column tile); its token lanes sum a
// strided share of the tokens in fp32, then the lanes are added in a fixed order (deterministic).
// Backward: elementwise over the whole dx (B, T, D), zeros where the pool did not read.
#include "kernels/cuda_vec.cuh"
#include "kernels/pool.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr int kTokenLanes = 8;

template <int V>
__global__ void __launch_bounds__(32 * kTokenLanes)
    pool_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, int Tn, int D, int t0, int t1) {
  __shared__ float red[kTokenLanes][32 * V + 1];
  const int b = blockIdx.y;
  const int d0 = (blockIdx.x * 32 + threadIdx.x) * V;
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  if (d0 < D)
    for (int t = t0 + threadIdx.y; t < t1; t += kTokenLanes) {
      float v[V];
      load_bf16<V>(x + ((i64)b * Tn + t) * D + d0, v);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] += v[j];
    }
#pragma unroll
  for (int j = 0; j < V; ++j) red[threadIdx.y][threadIdx.x * V + j] = acc[j];
  __syncthreads();
  const float inv = 1.f / (float)(t1 - t0);
  for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * V; i += 32 * kTokenLanes) {
    const int d = blockIdx.x * 32 * V + i;
    if (d < D) {
      float s = 0.f;
      for (int k = 0; k < kTokenLanes; ++k) s += red[k][i];
      out[(i64)b * D + d] = __float2bfloat16(s * inv);
    }
  }
}

template <int V>
__global__ void __launch_bounds__(kThreads)
    pool_backward_kernel(bf16* __restrict__ dx, const bf16* __restrict__ dout, int B, int Tn, int D, int t0, int t1) {
  const i64 n = (i64)B * Tn * D;
  const float inv = 1.f / (float)(t1 - t0);
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  for (i64 it = tid; it < n / V; it += stride) {
    const i64 i0 = it * V;
    const int d = (int)(i0 % D);
    const i64 bt = i0 / D;
    const int t = (int)(bt % Tn);
    float v[V];
    if (t >= t0 && t < t1) {
      load_bf16<V>(dout + (bt / Tn) * D + d, v);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] *= inv;
    } else {
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] = 0.f;
    }
    store_bf16<V>(dx + i0, v);
  }
}

// Tokens [t0, t1) that the pool reads.
void token_range(PoolMode mode, int Tn, int n_prefix, int& t0, int& t1) {
  VIT_ASSERT(mode == PoolMode::token ? Tn >= 1 : n_prefix >= 0 && n_prefix < Tn, "pool: T=", Tn, " n_prefix=", n_prefix);
  t0 = mode == PoolMode::token ? 0 : n_prefix;
  t1 = mode == PoolMode::token ? 1 : Tn;
}

}  // namespace

void pool_forward(bf16* out, const bf16* x, int B, int Tn, int D, PoolMode mode, int n_prefix, cudaStream_t stream) {
  int t0 = 0, t1 = 0;
  token_range(mode, Tn, n_prefix, t0, t1);
  VIT_ASSERT(B <= 65535, "pool_forward: batch ", B, " exceeds the grid");
  if (B <= 0 || D <= 0) return;
  const bool vec = D % 8 == 0 && aligned16(out) && aligned16(x);
  const int tile = 32 * (vec ? 8 : 1);
  const dim3 grid((D + tile - 1) / tile, B), block(32, kTokenLanes);
  if (vec) pool_forward_kernel<8><<<grid, block, 0, stream>>>(out, x, Tn, D, t0, t1);
  else pool_forward_kernel<1><<<grid, block, 0, stream>>>(out, x, Tn, D, t0, t1);
  CUDA_CHECK_LAUNCH();
}

void pool_backward(bf16* dx, const bf16* dout, int B, int Tn, int D, PoolMode mode, int n_prefix, cudaStream_t stream) {
  int t0 = 0, t1 = 0;
  token_range(mode, Tn, n_prefix, t0, t1);
  const i64 n = (i64)B * Tn * D;
  if (n <= 0) return;
  if (D % 8 == 0 && aligned16(dx) && aligned16(dout))
    pool_backward_kernel<8><<<grid_for(n / 8, kThreads), kThreads, 0, stream>>>(dx, dout, B, Tn, D, t0, t1);
  else
    pool_backward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, B, Tn, D, t0, t1);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
