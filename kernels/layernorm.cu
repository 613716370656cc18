// CUDA layer norm (see layernorm.h): bf16 in and out, fp32 statistics and accumulation.
//
// Fast path (C % 8 == 0, C <= 1536, 16-byte aligned pointers): one warp per row, the row held in
// registers as 16-byte vectors (VPL vectors per lane), so x is read once in forward and x and dout once
// in backward. Backward is persistent: each warp walks rows with a grid stride and keeps its dweight and
// dbias partial sums in registers; each block sums its warps in a fixed order into one row of `scratch`
// and a finishing kernel adds the rows into dweight/dbias (deterministic two-stage reduction, as
// TransformerEngine does). General path (any C, any alignment): a warp per row for the row math with
// scalar accesses, and a column kernel for the parameter partial sums; the same finishing kernel.
#include <algorithm>

#include "kernels/cuda_vec.cuh"
#include "kernels/layernorm.h"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kWarps = 4;       // rows (warps) per block in the fast kernels
constexpr int kMaxVpl = 6;      // fast path up to C = 6 · 32 · 8 = 1536
constexpr int kGenWarps = 8;    // general path: warps (rows) per block
constexpr int kColLanes = 8;    // general path parameter kernel: row lanes per block (x 32 columns)

// ---------------------------------------------------------------- fast path: a row in registers
template <int VPL>
__global__ void __launch_bounds__(kWarps * 32)
    ln_forward_vec(bf16* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                   const bf16* __restrict__ x, const bf16* __restrict__ weight, const bf16* __restrict__ bias,
                   i64 rows, int C, float inv_c, float eps) {
  const int lane = threadIdx.x & 31;
  const i64 row = (i64)blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const int nv = C >> 3;  // 16-byte vectors per row; lane owns vectors lane, lane + 32, ...
  const uint4* xr = reinterpret_cast<const uint4*>(x + row * C);
  uint4 raw[VPL];
#pragma unroll
  for (int k = 0; k < VPL; ++k)
    if (lane + 32 * k < nv) raw[k] = xr[lane + 32 * k];  // all loads issued before any use
  float v[VPL][8];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < VPL; ++k) {
    if (lane + 32 * k < nv) {
      unpack8(raw[k], v[k]);
#pragma unroll
      for (int j = 0; j < 8; ++j) s += v[k][j];
    }
  }
  const float mu = warp_sum(s) * inv_c;
  float q = 0.f;  // two-pass variance from registers: no E[x²] − E[x]² cancellation
#pragma unroll
  for (int k = 0; k < VPL; ++k)
    if (lane + 32 * k < nv)
#pragma unroll
      for (int j = 0; j < 8; ++j) q += (v[k][j] - mu) * (v[k][j] - mu);
  const float rs = rsqrtf(warp_sum(q) * inv_c + eps);
  const uint4* wv = reinterpret_cast<const uint4*>(weight);
  const uint4* bv = reinterpret_cast<const uint4*>(bias);
  uint4* orow = reinterpret_cast<uint4*>(out + row * C);
#pragma unroll
  for (int k = 0; k < VPL; ++k) {
    const int vi = lane + 32 * k;
    if (vi < nv) {
      float w[8], b[8], o[8];
      unpack8(__ldg(wv + vi), w);
      unpack8(__ldg(bv + vi), b);
#pragma unroll
      for (int j = 0; j < 8; ++j) o[j] = (v[k][j] - mu) * rs * w[j] + b[j];
      orow[vi] = pack8(o);
    }
  }
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

// Resident blocks per SM the backward asks the compiler for (caps registers at 65536 / (128 · n)): enough
// warps in flight to cover memory latency without spilling the per-lane dweight/dbias partials.
constexpr int bwd_min_blocks(int vpl) { return vpl <= 3 ? 4 : vpl == 4 ? 3 : 2; }

// partial: gridDim.x rows of 2C floats (dweight partials, then dbias partials), then with SUM gridDim.x rows
// of C floats (dsum partials: column sums of the stored dx). ACC: dx += instead of =. Both are template
// parameters so the plain kernel holds no registers for the old dx or the extra sums.
template <int VPL, bool ACC, bool SUM>
__global__ void __launch_bounds__(kWarps * 32, bwd_min_blocks(VPL))
    ln_backward_vec(bf16* __restrict__ dx, float* __restrict__ partial, const bf16* __restrict__ dout,
                    const bf16* __restrict__ x, const bf16* __restrict__ weight, const float* __restrict__ mean,
                    const float* __restrict__ rstd, i64 rows, int C, float inv_c) {
  __shared__ float red[2 * VPL * 256];
  // dsum partials per warp in shared memory, not registers (the row and the dweight/dbias partials already
  // fill the register budget; the extra 8·VPL accumulators made the compiler spill).
  __shared__ float wsum[SUM ? kWarps * VPL * 256 : 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nv = C >> 3;
  uint4 wraw[VPL];  // weight kept packed (bf16) in registers: 4 registers per vector instead of 8
  float dw[VPL][8], db[VPL][8];
#pragma unroll
  for (int k = 0; k < VPL; ++k) {
    wraw[k] = lane + 32 * k < nv ? __ldg(reinterpret_cast<const uint4*>(weight) + lane + 32 * k) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int j = 0; j < 8; ++j) dw[k][j] = db[k][j] = 0.f;
  }
  float* my_sum = wsum + (SUM ? warp * C : 0);  // this warp's C partial column sums of dx
  if constexpr (SUM)
    for (int c = lane; c < C; c += 32) my_sum[c] = 0.f;
  const i64 stride = (i64)gridDim.x * kWarps;
  for (i64 row = (i64)blockIdx.x * kWarps + warp; row < rows; row += stride) {
    const uint4* xr = reinterpret_cast<const uint4*>(x + row * C);
    const uint4* gr = reinterpret_cast<const uint4*>(dout + row * C);
    uint4* dr = reinterpret_cast<uint4*>(dx + row * C);
    uint4 xraw[VPL], graw[VPL], draw[ACC ? VPL : 1];
#pragma unroll
    for (int k = 0; k < VPL; ++k) {
      const int vi = lane + 32 * k;
      if (vi < nv) {
        xraw[k] = xr[vi];
        graw[k] = gr[vi];
        if constexpr (ACC) draw[k] = dr[vi];
      }
    }
    const float mu = __ldg(mean + row), rs = __ldg(rstd + row);
    // Pass 1: row sums of g = dout·w and g·x̂, and the per-lane parameter partials.
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int k = 0; k < VPL; ++k) {
      if (lane + 32 * k < nv) {
        float xv[8], gv[8], wv[8];
        unpack8(xraw[k], xv);
        unpack8(graw[k], gv);
        unpack8(wraw[k], wv);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float xh = (xv[j] - mu) * rs;
          const float g = gv[j] * wv[j];
          sg += g;
          sgx += g * xh;
          dw[k][j] += gv[j] * xh;
          db[k][j] += gv[j];
        }
      }
    }
    const float mg = warp_sum(sg) * inv_c, mgx = warp_sum(sgx) * inv_c;
    // Pass 2: dx = rstd · (g − mean(g) − x̂ · mean(g·x̂)), recomputed from the packed registers.
#pragma unroll
    for (int k = 0; k < VPL; ++k) {
      const int vi = lane + 32 * k;
      if (vi < nv) {
        float xv[8], gv[8], wv[8], o[8];
        unpack8(xraw[k], xv);
        unpack8(graw[k], gv);
        unpack8(wraw[k], wv);
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = rs * (gv[j] * wv[j] - mg - (xv[j] - mu) * rs * mgx);
        if constexpr (ACC) {
          float old[8];
          unpack8(draw[k], old);
#pragma unroll
          for (int j = 0; j < 8; ++j) o[j] += old[j];
        }
        const uint4 packed = pack8(o);
        dr[vi] = packed;
        if constexpr (SUM) {  // the bf16 values stored, as the weight-gradient GEMM sees them
          float st[8];
          unpack8(packed, st);
          float4* s4 = reinterpret_cast<float4*>(my_sum + vi * 8);
          float4 a = s4[0], b = s4[1];
          a.x += st[0], a.y += st[1], a.z += st[2], a.w += st[3];
          b.x += st[4], b.y += st[5], b.z += st[6], b.w += st[7];
          s4[0] = a, s4[1] = b;
        }
      }
    }
  }
  // Block stage: warps add their partials into shared memory one after another (fixed order).
  for (int w = 0; w < kWarps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int k = 0; k < VPL; ++k) {
        const int vi = lane + 32 * k;
        if (vi < nv)
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const int c = vi * 8 + j;
            red[c] = (w == 0 ? 0.f : red[c]) + dw[k][j];
            red[C + c] = (w == 0 ? 0.f : red[C + c]) + db[k][j];
          }
      }
    }
    __syncthreads();
  }
  float* dst = partial + (i64)blockIdx.x * 2 * C;
  for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) dst[i] = red[i];
  if constexpr (SUM) {  // the warps' column sums, added in warp order (every warp's stores are behind the barriers)
    float* sdst = partial + (i64)gridDim.x * 2 * C + (i64)blockIdx.x * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
      float t = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) t += wsum[w * C + i];
      sdst[i] = t;
    }
  }
}

// ---------------------------------------------------------------- general path: any C, any alignment
__global__ void __launch_bounds__(kGenWarps * 32)
    ln_forward_generic(bf16* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                       const bf16* __restrict__ x, const bf16* __restrict__ weight, const bf16* __restrict__ bias,
                       i64 rows, int C, float inv_c, float eps) {
  const int lane = threadIdx.x & 31;
  const i64 row = (i64)blockIdx.x * kGenWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const bf16* xr = x + row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s += __bfloat162float(xr[c]);
  const float mu = warp_sum(s) * inv_c;
  float q = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float d = __bfloat162float(xr[c]) - mu;
    q += d * d;
  }
  const float rs = rsqrtf(warp_sum(q) * inv_c + eps);
  bf16* o = out + row * C;
  for (int c = lane; c < C; c += 32)
    o[c] = __float2bfloat16((__bfloat162float(xr[c]) - mu) * rs * __bfloat162float(weight[c]) +
                            __bfloat162float(bias[c]));
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = rs;
  }
}

__global__ void __launch_bounds__(kGenWarps * 32)
    ln_backward_dx_generic(bf16* __restrict__ dx, const bf16* __restrict__ dout, const bf16* __restrict__ x,
                           const bf16* __restrict__ weight, const float* __restrict__ mean,
                           const float* __restrict__ rstd, i64 rows, int C, float inv_c, bool dx_accumulate) {
  const int lane = threadIdx.x & 31;
  const i64 row = (i64)blockIdx.x * kGenWarps + (threadIdx.x >> 5);
  if (row >= rows) return;
  const bf16* xr = x + row * C;
  const bf16* gr = dout + row * C;
  const float mu = mean[row], rs = rstd[row];
  float sg = 0.f, sgx = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float g = __bfloat162float(gr[c]) * __bfloat162float(weight[c]);
    sg += g;
    sgx += g * (__bfloat162float(xr[c]) - mu) * rs;
  }
  const float mg = warp_sum(sg) * inv_c, mgx = warp_sum(sgx) * inv_c;
  bf16* d = dx + row * C;
  for (int c = lane; c < C; c += 32) {
    const float g = __bfloat162float(gr[c]) * __bfloat162float(weight[c]);
    float v = rs * (g - mg - (__bfloat162float(xr[c]) - mu) * rs * mgx);
    if (dx_accumulate) v += __bfloat162float(d[c]);
    d[c] = __float2bfloat16(v);
  }
}

// Block (32 columns, kColLanes row lanes) sums rows [r0, r1) of part blockIdx.y for its 32 columns.
__global__ void __launch_bounds__(32 * kColLanes)
    ln_backward_param_generic(float* __restrict__ partial, const bf16* __restrict__ dout,
                              const bf16* __restrict__ x, const float* __restrict__ mean,
                              const float* __restrict__ rstd, i64 rows, int C, i64 rows_per_part) {
  __shared__ float red_w[kColLanes][33], red_b[kColLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const i64 r0 = (i64)blockIdx.y * rows_per_part, r1 = min(rows, r0 + rows_per_part);
  float sw = 0.f, sb = 0.f;
  if (c < C)
    for (i64 r = r0 + threadIdx.y; r < r1; r += kColLanes) {
      const float g = __bfloat162float(dout[r * C + c]);
      sw += g * (__bfloat162float(x[r * C + c]) - mean[r]) * rstd[r];
      sb += g;
    }
  red_w[threadIdx.y][threadIdx.x] = sw;
  red_b[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float tw = 0.f, tb = 0.f;
    for (int k = 0; k < kColLanes; ++k) {
      tw += red_w[k][threadIdx.x];
      tb += red_b[k][threadIdx.x];
    }
    float* dst = partial + (i64)blockIdx.y * 2 * C;
    dst[c] = tw;
    dst[C + c] = tb;
  }
}

// General path's dsum: block (32 columns, kColLanes row lanes) sums rows [r0, r1) of dx for its columns into
// row blockIdx.y of partial (C floats per row).
__global__ void __launch_bounds__(32 * kColLanes)
    column_sums_generic(float* __restrict__ partial, const bf16* __restrict__ dx, i64 rows, int C,
                        i64 rows_per_part) {
  __shared__ float red[kColLanes][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  const i64 r0 = (i64)blockIdx.y * rows_per_part, r1 = min(rows, r0 + rows_per_part);
  float s = 0.f;
  if (c < C)
    for (i64 r = r0 + threadIdx.y; r < r1; r += kColLanes) s += __bfloat162float(dx[r * C + c]);
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.f;
    for (int k = 0; k < kColLanes; ++k) t += red[k][threadIdx.x];
    partial[(i64)blockIdx.y * C + c] = t;
  }
}

// Vectors per lane of the fast path for C, or 0 when C needs the general path.
int fast_vpl(int C) {
  if (C % 8 != 0 || C > kMaxVpl * 256) return 0;
  return (C / 8 + 31) / 32;
}

template <int VPL>
void launch_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* w, const bf16* b, i64 rows,
                    int C, float eps, cudaStream_t stream) {
  ln_forward_vec<VPL><<<(unsigned)((rows + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(out, mean, rstd, x, w, b,
                                                                                            rows, C, 1.f / C, eps);
  CUDA_CHECK_LAUNCH();
}

template <int VPL, bool ACC, bool SUM>
int launch_backward_impl(bf16* dx, float* partial, const bf16* dout, const bf16* x, const bf16* w, const float* mean,
                         const float* rstd, i64 rows, int C, cudaStream_t stream) {
  // One wave of resident blocks: every warp then walks about the same number of rows.
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ln_backward_vec<VPL, ACC, SUM>, kWarps * 32, 0));
  const i64 want = (i64)std::max(per_sm, 1) * sm_count();
  const int parts = (int)std::min<i64>({want, (rows + kWarps - 1) / kWarps, (i64)kMaxParts});
  ln_backward_vec<VPL, ACC, SUM>
      <<<parts, kWarps * 32, 0, stream>>>(dx, partial, dout, x, w, mean, rstd, rows, C, 1.f / C);
  CUDA_CHECK_LAUNCH();
  return parts;
}

template <int VPL>
int launch_backward(bf16* dx, float* partial, const bf16* dout, const bf16* x, const bf16* w, const float* mean,
                    const float* rstd, i64 rows, int C, bool acc, bool sum, cudaStream_t stream) {
  if (sum)
    return acc ? launch_backward_impl<VPL, true, true>(dx, partial, dout, x, w, mean, rstd, rows, C, stream)
               : launch_backward_impl<VPL, false, true>(dx, partial, dout, x, w, mean, rstd, rows, C, stream);
  return acc ? launch_backward_impl<VPL, true, false>(dx, partial, dout, x, w, mean, rstd, rows, C, stream)
             : launch_backward_impl<VPL, false, false>(dx, partial, dout, x, w, mean, rstd, rows, C, stream);
}

bool all_aligned(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (!aligned16(p)) return false;
  return true;
}

}  // namespace

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* weight, const bf16* bias,
                       i64 rows, int C, float eps, cudaStream_t stream) {
  VIT_ASSERT(C > 0 && rows >= 0, "layernorm_forward: rows=", rows, " C=", C);
  if (rows == 0) return;
  const int vpl = all_aligned({out, x, weight, bias}) ? fast_vpl(C) : 0;
  switch (vpl) {
    case 1: return launch_forward<1>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    case 2: return launch_forward<2>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    case 3: return launch_forward<3>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    case 4: return launch_forward<4>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    case 5: return launch_forward<5>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    case 6: return launch_forward<6>(out, mean, rstd, x, weight, bias, rows, C, eps, stream);
    default:
      ln_forward_generic<<<(unsigned)((rows + kGenWarps - 1) / kGenWarps), kGenWarps * 32, 0, stream>>>(
          out, mean, rstd, x, weight, bias, rows, C, 1.f / C, eps);
      CUDA_CHECK_LAUNCH();
  }
}

// dweight, dbias and dsum partials: 3 C floats per part.
i64 layernorm_backward_scratch_floats(i64 rows, int C) {
  return 3 * (i64)C * std::min<i64>(std::max<i64>(rows, 1), kMaxParts);
}

void layernorm_backward(bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x, const bf16* weight,
                        const float* mean, const float* rstd, i64 rows, int C, bool dx_accumulate, float* scratch,
                        cudaStream_t stream, float* dsum) {
  VIT_ASSERT(C > 0 && rows >= 0, "layernorm_backward: rows=", rows, " C=", C);
  if (rows == 0) return;
  const int vpl = all_aligned({dx, dout, x, weight}) ? fast_vpl(C) : 0;
  int parts = 0;
  const bool acc = dx_accumulate, sum = dsum != nullptr;
  switch (vpl) {
    case 1: parts = launch_backward<1>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    case 2: parts = launch_backward<2>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    case 3: parts = launch_backward<3>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    case 4: parts = launch_backward<4>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    case 5: parts = launch_backward<5>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    case 6: parts = launch_backward<6>(dx, scratch, dout, x, weight, mean, rstd, rows, C, acc, sum, stream); break;
    default: {
      ln_backward_dx_generic<<<(unsigned)((rows + kGenWarps - 1) / kGenWarps), kGenWarps * 32, 0, stream>>>(
          dx, dout, x, weight, mean, rstd, rows, C, 1.f / C, dx_accumulate);
      CUDA_CHECK_LAUNCH();
      // At least 64 rows per part; as many parts as the scratch bound allows.
      parts = (int)std::min<i64>((rows + 63) / 64, kMaxParts);
      const i64 rows_per_part = (rows + parts - 1) / parts;
      parts = (int)((rows + rows_per_part - 1) / rows_per_part);
      ln_backward_param_generic<<<dim3((C + 31) / 32, parts), dim3(32, kColLanes), 0, stream>>>(
          scratch, dout, x, mean, rstd, rows, C, rows_per_part);
      CUDA_CHECK_LAUNCH();
      if (dsum) {
        column_sums_generic<<<dim3((C + 31) / 32, parts), dim3(32, kColLanes), 0, stream>>>(
            scratch + (i64)parts * 2 * C, dx, rows, C, rows_per_part);
        CUDA_CHECK_LAUNCH();
      }
    }
  }
  finish_partial_sums(dweight, dbias, scratch, parts, C, 2 * C, stream);
  if (dsum) finish_partial_sums(dsum, nullptr, scratch + (i64)parts * 2 * C, parts, C, C, stream);
}

}  // namespace vit::gpu
