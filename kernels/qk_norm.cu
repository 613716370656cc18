// CUDA qk_norm (see qk_norm.h): bf16 in and out, fp32 statistics and accumulation.
//
// The qkv tensor is BT·3H rows of hd. A group of G lanes owns one row (q, k or v), each lane NV vectors of
// VEC bf16 at columns (lane_in_group + G·k)·VEC, held in registers, so every element is read once.
// Fast path (hd % 8 == 0, 16-byte aligned pointers): VEC = 8, NV = 1, G = the power of two ≥ hd/8 (4 for
// hd = 32, 8 for 64, 16 for 128), i.e. 32/G rows per warp and 16-byte accesses only. General path (any
// hd ≤ 128, any alignment): VEC = 1, NV = 4, G = 32, a warp per row with scalar accesses.
// v rows take the same kernels as plain copies, so one launch writes the whole output tensor.
// Both kernels walk rows with a warp-uniform grid stride (the group sums shuffle across the whole warp, so
// no lane may leave early). Backward keeps the per-lane q and k parameter partials in registers; a warp
// butterfly and then the block's warps in a fixed order reduce them into one row of scratch per block, and
// finish_partial_sums adds the rows into the fp32 gradients (deterministic two-stage reduction, as in
// layernorm.cu).
#include <algorithm>
#include <cstdint>

#include "kernels/cuda_vec.cuh"
#include "kernels/partial_sums.cuh"
#include "kernels/qk_norm.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kMaxHd = 128;

// Sum over the G lanes of a group (G a power of two dividing 32); every lane of the group gets the same bits.
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row r of the BT·3H rows: part 0/1/2 = q/k/v, and the index of its statistics (q and k rows only).
struct RowInfo {
  int part;
  i64 stat;
};
__device__ __forceinline__ RowInfo row_info(i64 r, i64 BT, int H) {
  // 32-bit division when r fits (always, at training shapes): 64-bit division is a long software sequence.
  const i64 bt = r <= 0xffffffffLL ? (i64)((uint32_t)r / (uint32_t)(3 * H)) : r / (3 * H);
  const int j = (int)(r - bt * 3 * H);
  const int part = j / H;
  return {part, part * BT * H + bt * H + (j - part * H)};
}

template <int VEC>
__device__ __forceinline__ void load_or_zero(const bf16* p, bool ok, float* f) {
  if (ok) {
    load_bf16<VEC>(p, f);
  } else {
#pragma unroll
    for (int e = 0; e < VEC; ++e) f[e] = 0.f;
  }
}

template <int G, int VEC, int NV>
__global__ void __launch_bounds__(kThreads)
    qk_norm_forward_kernel(bf16* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                           const bf16* __restrict__ qkv, const bf16* __restrict__ qw, const bf16* __restrict__ qb,
                           const bf16* __restrict__ kw, const bf16* __restrict__ kb, i64 BT, int H, int hd,
                           float inv_hd, float eps) {
  constexpr int kRowsPerWarp = 32 / G;
  const int lane = threadIdx.x & 31, lg = lane % G;
  const i64 rows = BT * 3 * H;
  const i64 wstride = (i64)gridDim.x * kWarpsPerBlock;
  for (i64 wr = (i64)blockIdx.x * kWarpsPerBlock + (threadIdx.x >> 5); wr * kRowsPerWarp < rows; wr += wstride) {
    const i64 row = wr * kRowsPerWarp + lane / G;
    const bool valid = row < rows;
    const i64 base = valid ? row * hd : 0;
    float v[NV][VEC];
    bool in[NV];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int c = (lg + G * k) * VEC;
      in[k] = valid && c < hd;
      load_or_zero<VEC>(qkv + base + c, in[k], v[k]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) s += v[k][e];
    }
    const float mu = group_sum<G>(s) * inv_hd;
    float q = 0.f;  // two-pass variance from registers: no E[x²] − E[x]² cancellation
#pragma unroll
    for (int k = 0; k < NV; ++k)
      if (in[k])
#pragma unroll
        for (int e = 0; e < VEC; ++e) q += (v[k][e] - mu) * (v[k][e] - mu);
    const float rs = rsqrtf(group_sum<G>(q) * inv_hd + eps);
    if (!valid) continue;
    const RowInfo ri = row_info(row, BT, H);
    if (ri.part == 2) {  // v: bf16 → float → bf16 is exact, so this is a copy
#pragma unroll
      for (int k = 0; k < NV; ++k)
        if (in[k]) store_bf16<VEC>(out + base + (lg + G * k) * VEC, v[k]);
      continue;
    }
    const bf16* w = ri.part == 0 ? qw : kw;
    const bf16* b = ri.part == 0 ? qb : kb;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      if (!in[k]) continue;
      const int c = (lg + G * k) * VEC;
      float wv[VEC], bv[VEC], o[VEC];
      load_bf16<VEC>(w + c, wv);
      load_bf16<VEC>(b + c, bv);
#pragma unroll
      for (int e = 0; e < VEC; ++e) o[e] = (v[k][e] - mu) * rs * wv[e] + bv[e];
      store_bf16<VEC>(out + base + c, o);
    }
    if (lg == 0) {
      mean[ri.stat] = mu;
      rstd[ri.stat] = rs;
    }
  }
}

// partial: two regions of gridDim.x rows of 2·hd floats: [dqw | dqb] rows, then [dkw | dkb] rows.
// Three resident blocks per SM cap registers at 85 per thread (the 4·NV·VEC partials live there).
template <int G, int VEC, int NV>
__global__ void __launch_bounds__(kThreads, 3)
    qk_norm_backward_kernel(bf16* __restrict__ dqkv, float* __restrict__ partial, const bf16* __restrict__ dout,
                            const bf16* __restrict__ qkv, const bf16* __restrict__ qw, const bf16* __restrict__ kw,
                            const float* __restrict__ mean, const float* __restrict__ rstd, i64 BT, int H, int hd,
                            float inv_hd) {
  constexpr int kRowsPerWarp = 32 / G;
  constexpr int kSpan = G * VEC * NV;  // padded row width, ≥ hd
  __shared__ float red[kWarpsPerBlock][4][kSpan];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, lg = lane % G;
  const i64 rows = BT * 3 * H;
  float acc[4][NV][VEC];  // this lane's columns of dqw, dqb, dkw, dkb
  bool col[NV];
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    col[k] = (lg + G * k) * VEC < hd;
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[0][k][e] = acc[1][k][e] = acc[2][k][e] = acc[3][k][e] = 0.f;
  }
  const i64 wstride = (i64)gridDim.x * kWarpsPerBlock;
  for (i64 wr = (i64)blockIdx.x * kWarpsPerBlock + warp; wr * kRowsPerWarp < rows; wr += wstride) {
    const i64 row = wr * kRowsPerWarp + lane / G;
    const bool valid = row < rows;
    const i64 base = valid ? row * hd : 0;
    const RowInfo ri = valid ? row_info(row, BT, H) : RowInfo{2, 0};
    const bool norm = valid && ri.part < 2;
    const bf16* w = ri.part == 1 ? kw : qw;
    float x[NV][VEC], g[NV][VEC], wv[NV][VEC];
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      const int c = (lg + G * k) * VEC;
      load_or_zero<VEC>(dout + base + c, valid && col[k], g[k]);
      load_or_zero<VEC>(qkv + base + c, norm && col[k], x[k]);
      load_or_zero<VEC>(w + c, norm && col[k], wv[k]);
    }
    const float mu = norm ? mean[ri.stat] : 0.f, rs = norm ? rstd[ri.stat] : 0.f;
    // Row sums of g·w and g·w·x̂ (zero on v rows, whose w is zero here), and the parameter partials.
    float sg = 0.f, sgx = 0.f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float xh = (x[k][e] - mu) * rs, gw = g[k][e] * wv[k][e];
        sg += gw;
        sgx += gw * xh;
        if (norm && ri.part == 0) {  // constant indices only: acc must stay in registers
          acc[0][k][e] += g[k][e] * xh;
          acc[1][k][e] += g[k][e];
        } else if (norm) {
          acc[2][k][e] += g[k][e] * xh;
          acc[3][k][e] += g[k][e];
        }
      }
    const float mg = group_sum<G>(sg) * inv_hd, mgx = group_sum<G>(sgx) * inv_hd;
    if (!valid) continue;
#pragma unroll
    for (int k = 0; k < NV; ++k) {
      if (!col[k]) continue;
      float o[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e)
        o[e] = norm ? rs * (g[k][e] * wv[k][e] - mg - (x[k][e] - mu) * rs * mgx) : g[k][e];  // v: identity
      store_bf16<VEC>(dqkv + base + (lg + G * k) * VEC, o);
    }
  }
  // Warp stage: a butterfly over the warp's groups (lanes with equal lg hold the same columns).
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int k = 0; k < NV; ++k)
#pragma unroll
      for (int e = 0; e < VEC; ++e)
#pragma unroll
        for (int o = G; o < 32; o <<= 1) acc[a][k][e] += __shfl_xor_sync(0xffffffffu, acc[a][k][e], o);
  if (lane < G)
#pragma unroll
    for (int a = 0; a < 4; ++a)
#pragma unroll
      for (int k = 0; k < NV; ++k)
#pragma unroll
        for (int e = 0; e < VEC; ++e) red[warp][a][(lg + G * k) * VEC + e] = acc[a][k][e];
  __syncthreads();
  // Block stage: the warps in a fixed order, into this block's row of each scratch region.
  const i64 region = (i64)gridDim.x * 2 * hd;
  for (int i = threadIdx.x; i < 4 * hd; i += kThreads) {
    const int a = i / hd, c = i - a * hd;
    float t = 0.f;
#pragma unroll
    for (int wi = 0; wi < kWarpsPerBlock; ++wi) t += red[wi][a][c];
    partial[(a >> 1) * region + (i64)blockIdx.x * 2 * hd + (a & 1) * hd + c] = t;
  }
}

// Fast path group width for hd (a power of two, 8 bf16 per lane), or 0 when hd needs the general path.
int fast_group(int hd) {
  if (hd % 8 != 0 || hd > kMaxHd) return 0;
  int g = 1;
  while (g * 8 < hd) g *= 2;
  return g;
}

bool all_aligned(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (!aligned16(p)) return false;
  return true;
}

// [a, a + na) and [b, b + nb) share no byte.
bool disjoint(const void* a, i64 na, const void* b, i64 nb) {
  const auto ua = reinterpret_cast<uintptr_t>(a), ub = reinterpret_cast<uintptr_t>(b);
  return ua + (uintptr_t)na <= ub || ub + (uintptr_t)nb <= ua;
}

// Blocks that give every group at least one row: rows / (32/G · warps per block), rounded up.
i64 blocks_for_rows(i64 rows, int G) { return std::max<i64>((rows + kThreads / G - 1) / (kThreads / G), 1); }

template <int G, int VEC, int NV>
void launch_forward(bf16* out, float* mean, float* rstd, const bf16* qkv, const bf16* qw, const bf16* qb,
                    const bf16* kw, const bf16* kb, i64 BT, int H, int hd, float eps, cudaStream_t stream) {
  const unsigned grid = (unsigned)std::min<i64>(blocks_for_rows(BT * 3 * H, G), 0x7fffffff);
  qk_norm_forward_kernel<G, VEC, NV><<<grid, kThreads, 0, stream>>>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd,
                                                                    1.f / hd, eps);
  CUDA_CHECK_LAUNCH();
}

template <int G, int VEC, int NV>
int launch_backward(bf16* dqkv, float* partial, const bf16* dout, const bf16* qkv, const bf16* qw, const bf16* kw,
                    const float* mean, const float* rstd, i64 BT, int H, int hd, cudaStream_t stream) {
  // One wave of resident blocks (every warp then walks about the same number of rows), bounded by the rows
  // and by the scratch's kMaxParts.
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, qk_norm_backward_kernel<G, VEC, NV>, kThreads, 0));
  const i64 want = (i64)std::max(per_sm, 1) * sm_count();
  const int parts = (int)std::min<i64>({want, blocks_for_rows(BT * 3 * H, G), (i64)kMaxParts});
  qk_norm_backward_kernel<G, VEC, NV><<<parts, kThreads, 0, stream>>>(dqkv, partial, dout, qkv, qw, kw, mean, rstd,
                                                                      BT, H, hd, 1.f / hd);
  CUDA_CHECK_LAUNCH();
  return parts;
}

void check_shape(const char* who, i64 BT, int H, int hd) {
  VIT_ASSERT(BT >= 0 && H > 0 && hd > 0 && hd <= kMaxHd, who, ": BT=", BT, " H=", H, " hd=", hd,
             " (hd must be in 1..", kMaxHd, ")");
}

}  // namespace

void qk_norm_forward(bf16* out, float* mean, float* rstd, const bf16* qkv, const bf16* qw, const bf16* qb,
                     const bf16* kw, const bf16* kb, i64 BT, int H, int hd, float eps, cudaStream_t stream) {
  check_shape("qk_norm_forward", BT, H, hd);
  if (BT == 0) return;
  const i64 bytes = BT * 3 * H * hd * (i64)sizeof(bf16);
  VIT_ASSERT(disjoint(out, bytes, qkv, bytes), "qk_norm_forward: out must not alias qkv");
  const int g = all_aligned({out, qkv, qw, qb, kw, kb}) ? fast_group(hd) : 0;
  switch (g) {
    case 1: return launch_forward<1, 8, 1>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
    case 2: return launch_forward<2, 8, 1>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
    case 4: return launch_forward<4, 8, 1>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
    case 8: return launch_forward<8, 8, 1>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
    case 16: return launch_forward<16, 8, 1>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
    default: return launch_forward<32, 1, kMaxHd / 32>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, eps, stream);
  }
}

i64 qk_norm_backward_scratch_floats(i64 BT, int H, int hd) {
  // Two regions (q, k) of parts rows of 2·hd floats; parts ≤ min(rows, kMaxParts).
  return 4 * (i64)hd * std::min<i64>(std::max<i64>(BT * 3 * H, 1), kMaxParts);
}

void qk_norm_backward(bf16* dqkv, float* dqw, float* dqb, float* dkw, float* dkb, const bf16* dout, const bf16* qkv,
                      const bf16* qw, const bf16* kw, const float* mean, const float* rstd, i64 BT, int H, int hd,
                      float* scratch, cudaStream_t stream) {
  check_shape("qk_norm_backward", BT, H, hd);
  if (BT == 0) return;
  const i64 bytes = BT * 3 * H * hd * (i64)sizeof(bf16);
  VIT_ASSERT(disjoint(dqkv, bytes, dout, bytes) && disjoint(dqkv, bytes, qkv, bytes),
             "qk_norm_backward: dqkv must not alias dout or qkv");
  const int g = all_aligned({dqkv, dout, qkv, qw, kw}) ? fast_group(hd) : 0;
  int parts = 0;
  switch (g) {
    case 1: parts = launch_backward<1, 8, 1>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream); break;
    case 2: parts = launch_backward<2, 8, 1>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream); break;
    case 4: parts = launch_backward<4, 8, 1>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream); break;
    case 8: parts = launch_backward<8, 8, 1>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream); break;
    case 16: parts = launch_backward<16, 8, 1>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream); break;
    default:
      parts = launch_backward<32, 1, kMaxHd / 32>(dqkv, scratch, dout, qkv, qw, kw, mean, rstd, BT, H, hd, stream);
  }
  finish_partial_sums(dqw, dqb, scratch, parts, hd, 2 * hd, stream);
  finish_partial_sums(dkw, dkb, scratch + (i64)parts * 2 * hd, parts, hd, 2 * hd, stream);
}

}  // namespace vit::gpu
