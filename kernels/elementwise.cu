// CUDA elementwise ops (see elementwise.h). Memory-bound: 8 elements (16 bytes of bf16) per thread when
// every pointer is 16-byte aligned (and, for per-column or per-sample ops, the row length is a multiple
// of 8), scalar otherwise. Dropout masks come from the counter RNG keyed by the element (or sample)
// index, exactly as the CPU reference, so the two produce the same mask.
#include <algorithm>

#include "engine/rng.h"
#include "kernels/cuda_vec.cuh"
#include "kernels/elementwise.h"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr int kRowLanes = 8;  // layer scale backward: row lanes (warps) per block

// ---------------------------------------------------------------- add
template <int V>
__global__ void __launch_bounds__(kThreads) add_kernel(bf16* out, const bf16* a, const bf16* b, i64 n) {
  // No __restrict__: out may alias a or b (each element is read before it is written, by the same thread).
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float x[V], y[V];
    load_bf16<V>(a + it * V, x);
    load_bf16<V>(b + it * V, y);
#pragma unroll
    for (int j = 0; j < V; ++j) x[j] += y[j];
    store_bf16<V>(out + it * V, x);
  }
  const i64 t = items * V + tid;
  if (t < n) out[t] = __float2bfloat16(__bfloat162float(a[t]) + __bfloat162float(b[t]));
}

// ---------------------------------------------------------------- layer scale
// V = 8 needs C % 8 == 0, so a vector never straddles two rows.
template <int V>
__global__ void __launch_bounds__(kThreads)
    layer_scale_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ x, const bf16* __restrict__ gamma,
                               i64 n, int C) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  for (i64 it = tid; it < n / V; it += stride) {
    float v[V], g[V];
    load_bf16<V>(x + it * V, v);
    load_bf16<V>(gamma + (it * V) % C, g);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] *= g[j];
    store_bf16<V>(out + it * V, v);
  }
}

// Block (32 column vectors, kRowLanes row lanes) handles columns [blockIdx.x · 32V, +32V) of the rows of
// part blockIdx.y: writes dx and one row of dgamma partial sums (partial[part][C]).
template <int V>
__global__ void __launch_bounds__(32 * kRowLanes)
    layer_scale_backward_kernel(bf16* __restrict__ dx, float* __restrict__ partial, const bf16* __restrict__ dout,
                                const bf16* __restrict__ x, const bf16* __restrict__ gamma, i64 rows, int C,
                                i64 rows_per_part) {
  __shared__ float red[kRowLanes][32 * V + 1];
  const int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
  const i64 r0 = (i64)blockIdx.y * rows_per_part, r1 = min(rows, r0 + rows_per_part);
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  if (c0 < C) {
    float g[V];
    load_bf16<V>(gamma + c0, g);
    for (i64 r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      float d[V], v[V], o[V];
      load_bf16<V>(dout + r * C + c0, d);
      load_bf16<V>(x + r * C + c0, v);
#pragma unroll
      for (int j = 0; j < V; ++j) {
        o[j] = d[j] * g[j];
        acc[j] += d[j] * v[j];
      }
      store_bf16<V>(dx + r * C + c0, o);
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) red[threadIdx.y][threadIdx.x * V + j] = acc[j];
  __syncthreads();
  // Row lanes summed in a fixed order; then one coalesced row of partials.
  for (int i = threadIdx.y * 32 + threadIdx.x; i < 32 * V; i += 32 * kRowLanes) {
    const int c = blockIdx.x * 32 * V + i;
    if (c < C) {
      float s = 0.f;
      for (int k = 0; k < kRowLanes; ++k) s += red[k][i];
      partial[(i64)blockIdx.y * C + c] = s;
    }
  }
}

// ---------------------------------------------------------------- dropout and drop path
// out = keep ? in · scale : 0, keep = uniform(seed, site, element index) >= p.
template <int V>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(bf16* __restrict__ out, const bf16* __restrict__ in, i64 n, float p, float scale, uint64_t seed,
                   uint64_t site) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V];
    load_bf16<V>(in + it * V, v);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = rng::uniform(seed, site, (uint64_t)(it * V + j)) >= p ? v[j] * scale : 0.f;
    store_bf16<V>(out + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n)
    out[t] = __float2bfloat16(rng::uniform(seed, site, (uint64_t)t) >= p ? __bfloat162float(in[t]) * scale : 0.f);
}

// grid.y walks samples (with a stride, for B > 65535); a dropped sample is written as zeros unread.
template <int V>
__global__ void __launch_bounds__(kThreads)
    drop_path_kernel(bf16* __restrict__ out, const bf16* __restrict__ in, int B, i64 per_sample, float p, float scale,
                     uint64_t seed, uint64_t site) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  for (int b = blockIdx.y; b < B; b += gridDim.y) {
    const bool keep = rng::uniform(seed, site, (uint64_t)b) >= p;
    const bf16* src = in + (i64)b * per_sample;
    bf16* dst = out + (i64)b * per_sample;
    for (i64 it = tid; it < per_sample / V; it += stride) {
      float v[V];
      if (keep) {
        load_bf16<V>(src + it * V, v);
#pragma unroll
        for (int j = 0; j < V; ++j) v[j] *= scale;
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) v[j] = 0.f;
      }
      store_bf16<V>(dst + it * V, v);
    }
  }
}

// ---------------------------------------------------------------- casts
template <int V>
__global__ void __launch_bounds__(kThreads) cast_f32_to_bf16_kernel(bf16* __restrict__ out, const float* __restrict__ x,
                                                                    i64 n) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V];
    if constexpr (V == 8) {
      const float4 a = reinterpret_cast<const float4*>(x)[2 * it], b = reinterpret_cast<const float4*>(x)[2 * it + 1];
      v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
      v[0] = x[it];
    }
    store_bf16<V>(out + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n) out[t] = __float2bfloat16(x[t]);
}

// kAdd: out += x (the bf16 gradient wire format landing in fp32 gradient shards); else out = x.
template <int V, bool kAdd>
__global__ void __launch_bounds__(kThreads) cast_bf16_to_f32_kernel(float* __restrict__ out, const bf16* __restrict__ x,
                                                                    i64 n) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V];
    load_bf16<V>(x + it * V, v);
    if constexpr (V == 8) {
      float4* o = reinterpret_cast<float4*>(out) + 2 * it;
      if constexpr (kAdd) {
        const float4 a = o[0], b = o[1];
        v[0] += a.x, v[1] += a.y, v[2] += a.z, v[3] += a.w, v[4] += b.x, v[5] += b.y, v[6] += b.z, v[7] += b.w;
      }
      o[0] = make_float4(v[0], v[1], v[2], v[3]);
      o[1] = make_float4(v[4], v[5], v[6], v[7]);
    } else {
      out[it] = kAdd ? out[it] + v[0] : v[0];
    }
  }
  const i64 t = items * V + tid;
  if (t < n) out[t] = kAdd ? out[t] + __bfloat162float(x[t]) : __bfloat162float(x[t]);
}

template <bool kAdd>
void widen_bf16(float* out, const bf16* x, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(out) && aligned16(x))
    cast_bf16_to_f32_kernel<8, kAdd><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, x, n);
  else
    cast_bf16_to_f32_kernel<1, kAdd><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n);
  CUDA_CHECK_LAUNCH();
}

// 1/(1-p), or 0 for p >= 1 (nothing is kept: no inf · 0).
float keep_scale(float p) { return p < 1.f ? 1.f / (1.f - p) : 0.f; }

void copy_if_distinct(bf16* out, const bf16* x, i64 n, cudaStream_t stream) {
  if (out != x) CUDA_CHECK(cudaMemcpyAsync(out, x, (size_t)n * sizeof(bf16), cudaMemcpyDeviceToDevice, stream));
}

void dropout(bf16* out, const bf16* x, i64 n, float p, uint64_t seed, uint64_t site, cudaStream_t stream) {
  if (n <= 0) return;
  if (p <= 0.f) return copy_if_distinct(out, x, n, stream);  // p = 0: an exact copy, no RNG
  if (aligned16(out) && aligned16(x))
    dropout_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, x, n, p, keep_scale(p), seed, site);
  else
    dropout_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n, p, keep_scale(p), seed, site);
  CUDA_CHECK_LAUNCH();
}

void drop_path(bf16* out, const bf16* x, int B, i64 per_sample, float p, uint64_t seed, uint64_t site,
               cudaStream_t stream) {
  if (B <= 0 || per_sample <= 0) return;
  if (p <= 0.f) return copy_if_distinct(out, x, (i64)B * per_sample, stream);
  const dim3 grid_v(grid_for(per_sample / 8, kThreads), (unsigned)std::min(B, 65535));
  const dim3 grid_s(grid_for(per_sample, kThreads), (unsigned)std::min(B, 65535));
  if (per_sample % 8 == 0 && aligned16(out) && aligned16(x))
    drop_path_kernel<8><<<grid_v, kThreads, 0, stream>>>(out, x, B, per_sample, p, keep_scale(p), seed, site);
  else
    drop_path_kernel<1><<<grid_s, kThreads, 0, stream>>>(out, x, B, per_sample, p, keep_scale(p), seed, site);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void add(bf16* out, const bf16* a, const bf16* b, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(out) && aligned16(a) && aligned16(b))
    add_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  else
    add_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void layer_scale_forward(bf16* out, const bf16* x, const bf16* gamma, i64 rows, int C, cudaStream_t stream) {
  const i64 n = rows * C;
  if (n <= 0) return;
  if (C % 8 == 0 && aligned16(out) && aligned16(x) && aligned16(gamma))
    layer_scale_forward_kernel<8><<<grid_for(n / 8, kThreads), kThreads, 0, stream>>>(out, x, gamma, n, C);
  else
    layer_scale_forward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, gamma, n, C);
  CUDA_CHECK_LAUNCH();
}

i64 layer_scale_backward_scratch_floats(i64 rows, int C) {
  return (i64)C * std::min<i64>(std::max<i64>(rows, 1), kMaxParts);
}

void layer_scale_backward(bf16* dx, float* dgamma, const bf16* dout, const bf16* x, const bf16* gamma, i64 rows, int C,
                          float* scratch, cudaStream_t stream) {
  VIT_ASSERT(C > 0 && rows >= 0, "layer_scale_backward: rows=", rows, " C=", C);
  if (rows == 0) return;
  const bool vec = C % 8 == 0 && aligned16(dx) && aligned16(dout) && aligned16(x) && aligned16(gamma);
  const int tile = 32 * (vec ? 8 : 1);
  const int col_tiles = (C + tile - 1) / tile;
  // One wave of resident blocks over (column tiles x parts), each part at least 16 rows, at most kMaxParts.
  int per_sm = 0;
  if (vec)
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, layer_scale_backward_kernel<8>, 32 * kRowLanes, 0));
  else
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, layer_scale_backward_kernel<1>, 32 * kRowLanes, 0));
  i64 parts = std::clamp<i64>((i64)std::max(per_sm, 1) * sm_count() / col_tiles, 1, kMaxParts);
  parts = std::min(parts, (rows + 15) / 16);
  const i64 rows_per_part = (rows + parts - 1) / parts;
  parts = (rows + rows_per_part - 1) / rows_per_part;
  const dim3 grid(col_tiles, (unsigned)parts), block(32, kRowLanes);
  if (vec)
    layer_scale_backward_kernel<8><<<grid, block, 0, stream>>>(dx, scratch, dout, x, gamma, rows, C, rows_per_part);
  else
    layer_scale_backward_kernel<1><<<grid, block, 0, stream>>>(dx, scratch, dout, x, gamma, rows, C, rows_per_part);
  CUDA_CHECK_LAUNCH();
  finish_partial_sums(dgamma, nullptr, scratch, (int)parts, C, C, stream);
}

void dropout_forward(bf16* out, const bf16* x, i64 n, float p, uint64_t seed, uint64_t site, cudaStream_t stream) {
  dropout(out, x, n, p, seed, site, stream);
}
void dropout_backward(bf16* dx, const bf16* dout, i64 n, float p, uint64_t seed, uint64_t site, cudaStream_t stream) {
  dropout(dx, dout, n, p, seed, site, stream);
}
void drop_path_forward(bf16* out, const bf16* x, int B, i64 per_sample, float p, uint64_t seed, uint64_t site,
                       cudaStream_t stream) {
  drop_path(out, x, B, per_sample, p, seed, site, stream);
}
void drop_path_backward(bf16* dx, const bf16* dout, int B, i64 per_sample, float p, uint64_t seed, uint64_t site,
                        cudaStream_t stream) {
  drop_path(dx, dout, B, per_sample, p, seed, site, stream);
}

void cast_f32_to_bf16(bf16* out, const float* x, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(out) && aligned16(x))
    cast_f32_to_bf16_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, x, n);
  else
    cast_f32_to_bf16_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n);
  CUDA_CHECK_LAUNCH();
}

void cast_bf16_to_f32(float* out, const bf16* x, i64 n, cudaStream_t stream) { widen_bf16<false>(out, x, n, stream); }
void add_bf16_to_f32(float* out, const bf16* x, i64 n, cudaStream_t stream) { widen_bf16<true>(out, x, n, stream); }

}  // namespace vit::gpu
