// CUDA token assembly (see embed.h). Forward: one thread per 8 (or 1) elements of x (B, T, D), the value
// (token source + pos) summed in fp32 and rounded once to bf16. Backward: one block per (token, column
// tile); its row lanes split the batch, copy dx into dpatch on the way, and sum the batch in a fixed
// order (per-lane sums, then the lanes in order) into the fp32 parameter gradients: no atomics, so each
// parameter element is written by exactly one thread and the result is deterministic.
#include "kernels/cuda_vec.cuh"
#include "kernels/embed.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr int kBatchLanes = 8;  // backward: row lanes per block, each a strided share of the batch

// Everything a thread needs to locate token t's sources (a plain struct passed by value).
struct Layout {
  int B, Np, D, Tn, P, c0, pos_first;  // pos covers tokens [pos_first, Tn): row t - pos_first
  bool has_pos;
};

Layout layout(const EmbedShape& s, bool has_pos) {
  return Layout{s.B, s.Np, s.D, s.tokens(), s.prefix(), s.cls ? 1 : 0, s.no_embed_class ? s.prefix() : 0, has_pos};
}

template <int V>
__global__ void __launch_bounds__(kThreads)
    embed_forward_kernel(bf16* __restrict__ x, const bf16* __restrict__ patch, const bf16* __restrict__ cls,
                         const bf16* __restrict__ reg, const bf16* __restrict__ pos, Layout L) {
  const i64 n = (i64)L.B * L.Tn * L.D;
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  for (i64 it = tid; it < n / V; it += stride) {
    const i64 i0 = it * V;
    const int d = (int)(i0 % L.D);
    const i64 bt = i0 / L.D;
    const int t = (int)(bt % L.Tn);
    const i64 b = bt / L.Tn;
    const bf16* src = t < L.c0 ? cls + d
                      : t < L.P ? reg + (i64)(t - L.c0) * L.D + d
                                : patch + (b * L.Np + (t - L.P)) * L.D + d;
    float v[V];
    load_bf16<V>(src, v);
    if (L.has_pos && t >= L.pos_first) {
      float q[V];
      load_bf16<V>(pos + (i64)(t - L.pos_first) * L.D + d, q);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] += q[j];
    }
    store_bf16<V>(x + i0, v);
  }
}

// Block (32 column vectors, kBatchLanes batch lanes) for token blockIdx.y and columns [blockIdx.x · 32V, +32V).
template <int V>
__global__ void __launch_bounds__(32 * kBatchLanes)
    embed_backward_kernel(bf16* __restrict__ dpatch, float* __restrict__ dcls, float* __restrict__ dreg,
                          float* __restrict__ dpos, const bf16* __restrict__ dx, Layout L) {
  __shared__ float red[kBatchLanes][32 * V + 1];
  const int t = blockIdx.y;
  const int d0 = (blockIdx.x * 32 + threadIdx.x) * V;
  float* prefix_grad = t < L.c0 ? dcls : (t < L.P && dreg) ? dreg + (i64)(t - L.c0) * L.D : nullptr;
  float* pos_grad = dpos && t >= L.pos_first ? dpos + (i64)(t - L.pos_first) * L.D : nullptr;
  const bool reduce = prefix_grad || pos_grad;  // the same for the whole block
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  if (d0 < L.D) {
    for (int b = threadIdx.y; b < L.B; b += kBatchLanes) {
      const bf16* src = dx + ((i64)b * L.Tn + t) * L.D + d0;
      if (t >= L.P) {  // patch token: dpatch gets the bits of dx unchanged
        bf16* dst = dpatch + ((i64)b * L.Np + (t - L.P)) * L.D + d0;
        if constexpr (V == 8) *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
        else *dst = *src;
      }
      if (reduce) {
        float v[V];
        load_bf16<V>(src, v);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v[j];
      }
    }
  }
  if (!reduce) return;
#pragma unroll
  for (int j = 0; j < V; ++j) red[threadIdx.y][threadIdx.x * V + j] = acc[j];
  __syncthreads();
  for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * V; i += 32 * kBatchLanes) {
    const int d = blockIdx.x * 32 * V + i;
    if (d < L.D) {
      float s = 0.f;
      for (int k = 0; k < kBatchLanes; ++k) s += red[k][i];
      if (prefix_grad) prefix_grad[d] += s;
      if (pos_grad) pos_grad[d] += s;
    }
  }
}

}  // namespace

void embed_forward(bf16* x, const bf16* patch_tokens, const bf16* cls, const bf16* reg, const bf16* pos,
                   const EmbedShape& s, cudaStream_t stream) {
  VIT_ASSERT(s.B >= 0 && s.Np >= 0 && s.D > 0 && s.R >= 0, "embed_forward: bad shape");
  VIT_ASSERT((!s.cls || cls) && (s.R == 0 || reg), "embed_forward: cls/reg tokens missing");
  const i64 n = (i64)s.B * s.tokens() * s.D;
  if (n == 0) return;
  const Layout L = layout(s, pos != nullptr);
  const bool vec = s.D % 8 == 0 && aligned16(x) && aligned16(patch_tokens) && (!cls || aligned16(cls)) &&
                   (!reg || aligned16(reg)) && (!pos || aligned16(pos));
  if (vec)
    embed_forward_kernel<8><<<grid_for(n / 8, kThreads), kThreads, 0, stream>>>(x, patch_tokens, cls, reg, pos, L);
  else
    embed_forward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(x, patch_tokens, cls, reg, pos, L);
  CUDA_CHECK_LAUNCH();
}

void embed_backward(bf16* dpatch, float* dcls, float* dreg, float* dpos, const bf16* dx, const EmbedShape& s,
                    cudaStream_t stream) {
  VIT_ASSERT(s.B >= 0 && s.Np >= 0 && s.D > 0 && s.R >= 0, "embed_backward: bad shape");
  VIT_ASSERT(s.tokens() <= 65535, "embed_backward: ", s.tokens(), " tokens exceed the grid");
  if (s.B == 0 || s.tokens() == 0) return;
  const Layout L = layout(s, dpos != nullptr);
  const bool vec = s.D % 8 == 0 && aligned16(dpatch) && aligned16(dx);
  const int V = vec ? 8 : 1;
  const dim3 grid((s.D + 32 * V - 1) / (32 * V), s.tokens()), block(32, kBatchLanes);
  if (vec)
    embed_backward_kernel<8><<<grid, block, 0, stream>>>(dpatch, s.cls ? dcls : nullptr, s.R ? dreg : nullptr, dpos, dx, L);
  else
    embed_backward_kernel<1><<<grid, block, 0, stream>>>(dpatch, s.cls ? dcls : nullptr, s.R ? dreg : nullptr, dpos, dx, L);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
