// CUDA GELU (see gelu.h): bf16 in and out, fp32 math, 8 elements (16 bytes) per thread when the pointers
// are 16-byte aligned, scalar otherwise; the n % 8 tail is handled by the first threads.
#include <algorithm>

#include "kernels/cuda_vec.cuh"
#include "kernels/gelu.h"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

__device__ __forceinline__ float gelu(float x, bool tanh_approx) {
  if (tanh_approx) return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.f + erff(x * kInvSqrt2));
}
__device__ __forceinline__ float gelu_grad(float x, bool tanh_approx) {
  if (tanh_approx) {
    const float t = tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x));
    return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * kSqrt2OverPi * (1.f + 0.134145f * x * x);
  }
  return 0.5f * (1.f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * __expf(-0.5f * x * x);
}

template <int V>
__global__ void __launch_bounds__(kThreads) gelu_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ x,
                                                                i64 n, bool tanh_approx) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V];
    load_bf16<V>(x + it * V, v);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = gelu(v[j], tanh_approx);
    store_bf16<V>(out + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n) out[t] = __float2bfloat16(gelu(__bfloat162float(x[t]), tanh_approx));
}

template <int V>
__global__ void __launch_bounds__(kThreads) gelu_backward_kernel(bf16* __restrict__ dx, const bf16* __restrict__ dout,
                                                                 const bf16* __restrict__ x, i64 n, bool tanh_approx) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V], g[V];
    load_bf16<V>(x + it * V, v);
    load_bf16<V>(dout + it * V, g);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = g[j] * gelu_grad(v[j], tanh_approx);
    store_bf16<V>(dx + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n) dx[t] = __float2bfloat16(__bfloat162float(dout[t]) * gelu_grad(__bfloat162float(x[t]), tanh_approx));
}

// ---- GELU backward + bias gradient (see gelu.h) ----
// Block (32, 8): 32 column lanes × 8 columns each (one 16-byte load of dout and of x per row) = 256 columns,
// 8 row lanes; block (bx, by) covers rows [by·chunk, (by+1)·chunk). The 8 row lanes' column sums are combined
// in a fixed order, so the result depends on the shape only.
constexpr int kBColLanes = 32, kBRowLanes = 8, kBCols = 8, kBColsPerBlock = kBColLanes * kBCols;

template <bool kVec>
__global__ void __launch_bounds__(kBColLanes* kBRowLanes)
    gelu_backward_bias_kernel(bf16* __restrict__ dx, float* __restrict__ out, bool accumulate,
                              const bf16* __restrict__ dout, const bf16* __restrict__ x, i64 rows, int cols,
                              i64 rows_per_chunk, bool tanh_approx) {
  __shared__ float red[kBRowLanes][kBColsPerBlock];
  const int c0 = blockIdx.x * kBColsPerBlock + threadIdx.x * kBCols;
  const i64 r0 = blockIdx.y * rows_per_chunk, r1 = min(rows, r0 + rows_per_chunk);
  float acc[kBCols];
#pragma unroll
  for (int j = 0; j < kBCols; ++j) acc[j] = 0.f;
  if (c0 < cols) {
#pragma unroll 4  // several rows' loads in flight per thread
    for (i64 r = r0 + threadIdx.y; r < r1; r += kBRowLanes) {
      const i64 o = r * cols + c0;
      float v[kBCols], g[kBCols];
      if constexpr (kVec) {  // cols % 8 == 0 and aligned rows: all 8 columns inside
        load_bf16<kBCols>(x + o, v);
        load_bf16<kBCols>(dout + o, g);
#pragma unroll
        for (int j = 0; j < kBCols; ++j) {
          const bf16 d = __float2bfloat16(g[j] * gelu_grad(v[j], tanh_approx));
          v[j] = __bfloat162float(d);
          acc[j] += v[j];
        }
        store_bf16<kBCols>(dx + o, v);
      } else {
#pragma unroll
        for (int j = 0; j < kBCols; ++j)
          if (c0 + j < cols) {
            const float xv = __bfloat162float(x[o + j]);
            const bf16 d = __float2bfloat16(__bfloat162float(dout[o + j]) * gelu_grad(xv, tanh_approx));
            dx[o + j] = d;
            acc[j] += __bfloat162float(d);
          }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < kBCols; ++j) red[threadIdx.y][threadIdx.x * kBCols + j] = acc[j];
  __syncthreads();
  const int t = threadIdx.y * kBColLanes + threadIdx.x;  // 256 threads, 256 columns
  const int c = blockIdx.x * kBColsPerBlock + t;
  if (c < cols) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kBRowLanes; ++k) s += red[k][t];
    if (accumulate)
      out[c] += s;
    else
      out[(i64)blockIdx.y * cols + c] = s;
  }
}

struct BiasGrid {
  int col_blocks;
  i64 chunks, rows_per_chunk;
};
BiasGrid bias_grid(i64 rows, int cols) {
  const int col_blocks = (cols + kBColsPerBlock - 1) / kBColsPerBlock;
  const detail::RowChunks rc = detail::row_chunks(rows, col_blocks, detail::kMaxParts);
  return {col_blocks, rc.chunks, rc.rows_per_chunk};
}

}  // namespace

i64 gelu_backward_bias_scratch_floats(i64 rows, int cols) {
  const BiasGrid g = bias_grid(std::max<i64>(rows, 1), std::max(cols, 1));
  return g.chunks > 1 ? g.chunks * cols : 0;
}

void gelu_backward_bias(bf16* dx, float* dbias, const bf16* dout, const bf16* x, i64 rows, int cols, bool tanh_approx,
                        float* scratch, cudaStream_t stream) {
  VIT_ASSERT(rows >= 0 && cols > 0, "gelu_backward_bias: bad shape ", rows, "x", cols);
  if (rows == 0) return;
  const BiasGrid g = bias_grid(rows, cols);
  VIT_ASSERT(g.chunks == 1 || scratch, "gelu_backward_bias: needs scratch for ", rows, "x", cols);
  const bool vec = cols % kBCols == 0 && aligned16(dx) && aligned16(dout) && aligned16(x);
  const dim3 grid(g.col_blocks, (unsigned)g.chunks), block(kBColLanes, kBRowLanes);
  float* out = g.chunks == 1 ? dbias : scratch;
  if (vec)
    gelu_backward_bias_kernel<true><<<grid, block, 0, stream>>>(dx, out, g.chunks == 1, dout, x, rows, cols,
                                                                g.rows_per_chunk, tanh_approx);
  else
    gelu_backward_bias_kernel<false><<<grid, block, 0, stream>>>(dx, out, g.chunks == 1, dout, x, rows, cols,
                                                                 g.rows_per_chunk, tanh_approx);
  CUDA_CHECK_LAUNCH();
  if (g.chunks > 1) detail::finish_partial_sums(dbias, nullptr, scratch, (int)g.chunks, cols, cols, stream);
}

void gelu_forward(bf16* out, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(out) && aligned16(x))
    gelu_forward_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, x, n, tanh_approx);
  else
    gelu_forward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n, tanh_approx);
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(bf16* dx, const bf16* dout, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(dx) && aligned16(dout) && aligned16(x))
    gelu_backward_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(dx, dout, x, n, tanh_approx);
  else
    gelu_backward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, x, n, tanh_approx);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
