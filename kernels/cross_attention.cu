// CUDA cross attention of latent queries over tokens (see cross_attention.h). fp32 on CUDA cores: the op
// runs once per image (L is 1 in timm's default), so clarity beats speed. Every sum runs in a fixed order and
// every output element has one writer: results are deterministic, with no atomics and no workspace.
//   forward  one block per score row (b, h, l): each warp runs an online softmax over its share of the keys
//            (lanes over channels), then the warps' (max, sum, output) partials are merged in warp order.
//   dq       one block per latent row, the same split of keys, partials added in warp order.
//   dk, dv   one warp per key row (b, h, j), looping over the L latent rows in order.
#include <cmath>

#include "engine/cuda_check.h"
#include "kernels/cross_attention.h"
#include "kernels/cuda_vec.cuh"

namespace vit::gpu {
namespace {
using detail::warp_sum;

constexpr int kMaxD = 128;    // 4 channels per lane
constexpr int kRowWarps = 8;  // warps splitting the keys of one latent row (forward, dq)
constexpr int kKeyWarps = 4;  // key rows per block (dk, dv)

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }

// Loads channels lane + 32 r of a row (0 past d).
__device__ __forceinline__ void load_row(const bf16* row, int d, int lane, float (&x)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) x[r] = lane + 32 * r < d ? ld(row + lane + 32 * r) : 0.f;
}

// Offsets of the rows named in cross_attention.h.
struct Layout {
  int L, Tn, H, d;
  __device__ i64 q(int b, int l, int h) const { return (((i64)b * L + l) * H + h) * d; }  // also out, dout, dq
  __device__ i64 kv(int b, int j, int part, int h) const {
    return (((i64)b * Tn + j) * 2 + part) * H * d + (i64)h * d;
  }
};

// Block (b, h, l) with l fastest: blockIdx.x is also the (B, H, L) index of lse.
__global__ void __launch_bounds__(32 * kRowWarps)
    xattn_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ q,
                     const bf16* __restrict__ kv, int L, int Tn, int H, int d, float scale) {
  __shared__ float s_m[kRowWarps], s_z[kRowWarps], s_o[kRowWarps][kMaxD];
  const Layout X{L, Tn, H, d};
  const i64 row = blockIdx.x;
  const int l = (int)(row % L), h = (int)(row / L % H), b = (int)(row / L / H);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qr[4], o[4] = {0.f, 0.f, 0.f, 0.f};
  load_row(q + X.q(b, l, h), d, lane, qr);
  float m = -INFINITY, z = 0.f;  // this warp's running max and sum of exp(s − m)
  for (int j = warp; j < Tn; j += kRowWarps) {
    float k[4], v[4];
    load_row(kv + X.kv(b, j, 0, h), d, lane, k);
    load_row(kv + X.kv(b, j, 1, h), d, lane, v);
    float part = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) part += qr[r] * k[r];
    const float s = warp_sum(part) * scale;
    const float mn = fmaxf(m, s);
    const float corr = expf(m - mn);  // 0 on this warp's first key (m = −inf)
    const float p = expf(s - mn);
    z = z * corr + p;
#pragma unroll
    for (int r = 0; r < 4; ++r) o[r] = o[r] * corr + p * v[r];
    m = mn;
  }
  if (lane == 0) s_m[warp] = m, s_z[warp] = z;
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) s_o[warp][lane + 32 * r] = o[r];
  __syncthreads();
  // Merge in warp order. T >= 1 makes M finite; warps that saw no key (T < kRowWarps) have m = −inf,
  // so their weight exp(m − M) is exactly 0.
  float M = -INFINITY;
  for (int w = 0; w < kRowWarps; ++w) M = fmaxf(M, s_m[w]);
  float Z = 0.f;
  for (int w = 0; w < kRowWarps; ++w) Z += s_z[w] * expf(s_m[w] - M);
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float acc = 0.f;
    for (int w = 0; w < kRowWarps; ++w) acc += s_o[w][c] * expf(s_m[w] - M);
    out[X.q(b, l, h) + c] = __float2bfloat16(acc / Z);
  }
  if (threadIdx.x == 0) lse[row] = M + logf(Z);
}

// dq_l = scale Σ_j P_lj (dO_l · v_j − D_l) k_j with D_l = dO_l · O_l; block per latent row as in forward.
__global__ void __launch_bounds__(32 * kRowWarps)
    xattn_dq_kernel(bf16* __restrict__ dq, const bf16* __restrict__ dout, const bf16* __restrict__ q,
                    const bf16* __restrict__ kv, const bf16* __restrict__ out, const float* __restrict__ lse, int L,
                    int Tn, int H, int d, float scale) {
  __shared__ float s_acc[kRowWarps][kMaxD];
  const Layout X{L, Tn, H, d};
  const i64 row = blockIdx.x;
  const int l = (int)(row % L), h = (int)(row / L % H), b = (int)(row / L / H);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qr[4], g[4], o[4], acc[4] = {0.f, 0.f, 0.f, 0.f};
  load_row(q + X.q(b, l, h), d, lane, qr);
  load_row(dout + X.q(b, l, h), d, lane, g);
  load_row(out + X.q(b, l, h), d, lane, o);
  float part = 0.f;
#pragma unroll
  for (int r = 0; r < 4; ++r) part += g[r] * o[r];
  const float D = warp_sum(part);  // every warp computes the same value in the same order
  const float ll = lse[row];
  for (int j = warp; j < Tn; j += kRowWarps) {
    float k[4], v[4];
    load_row(kv + X.kv(b, j, 0, h), d, lane, k);
    load_row(kv + X.kv(b, j, 1, h), d, lane, v);
    float sp = 0.f, dp = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) sp += qr[r] * k[r], dp += g[r] * v[r];
    const float p = expf(warp_sum(sp) * scale - ll);
    const float ds = p * (warp_sum(dp) - D);
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[r] += ds * k[r];
  }
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) s_acc[warp][lane + 32 * r] = acc[r];
  __syncthreads();
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float s = 0.f;
    for (int w = 0; w < kRowWarps; ++w) s += s_acc[w][c];
    dq[X.q(b, l, h) + c] = __float2bfloat16(scale * s);
  }
}

// dk_j = scale Σ_l dS_lj q_l and dv_j = Σ_l P_lj dO_l, one key row (b, h, j) per warp, j fastest.
__global__ void __launch_bounds__(32 * kKeyWarps)
    xattn_dkv_kernel(bf16* __restrict__ dkv, const bf16* __restrict__ dout, const bf16* __restrict__ q,
                     const bf16* __restrict__ kv, const bf16* __restrict__ out, const float* __restrict__ lse, int B,
                     int L, int Tn, int H, int d, float scale) {
  const Layout X{L, Tn, H, d};
  const i64 w = (i64)blockIdx.x * kKeyWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= (i64)B * H * Tn) return;  // whole warps leave together
  const int j = (int)(w % Tn), h = (int)(w / Tn % H), b = (int)(w / Tn / H);
  float k[4], v[4], dk[4] = {0.f, 0.f, 0.f, 0.f}, dv[4] = {0.f, 0.f, 0.f, 0.f};
  load_row(kv + X.kv(b, j, 0, h), d, lane, k);
  load_row(kv + X.kv(b, j, 1, h), d, lane, v);
  const float* lse_bh = lse + ((i64)b * H + h) * L;
  for (int l = 0; l < L; ++l) {
    float qr[4], g[4], o[4];
    load_row(q + X.q(b, l, h), d, lane, qr);
    load_row(dout + X.q(b, l, h), d, lane, g);
    load_row(out + X.q(b, l, h), d, lane, o);
    float sp = 0.f, dp = 0.f, Dp = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) sp += qr[r] * k[r], dp += g[r] * v[r], Dp += g[r] * o[r];
    const float p = expf(warp_sum(sp) * scale - lse_bh[l]);
    const float ds = p * (warp_sum(dp) - warp_sum(Dp));  // D_l recomputed here: L·d extra work per key
#pragma unroll
    for (int r = 0; r < 4; ++r) dk[r] += ds * qr[r], dv[r] += p * g[r];
  }
  bf16* dkr = dkv + X.kv(b, j, 0, h);
  bf16* dvr = dkv + X.kv(b, j, 1, h);
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) {
      dkr[lane + 32 * r] = __float2bfloat16(scale * dk[r]);
      dvr[lane + 32 * r] = __float2bfloat16(dv[r]);
    }
}

void check_args(int B, int L, int Tn, int H, int d, float scale) {
  VIT_REQUIRE(B >= 1 && L >= 1 && Tn >= 1 && H >= 1, "cross_attention: need B, L, T, H >= 1 (got B=", B, " L=", L,
              " T=", Tn, " H=", H, ")");
  VIT_REQUIRE(d >= 1 && d <= kMaxD, "cross_attention: head dim ", d, " is outside 1..", kMaxD,
              " supported by the CUDA kernels");
  VIT_REQUIRE(scale > 0.f, "cross_attention: the softmax scale must be positive (got ", scale, ")");
  VIT_REQUIRE((i64)B * H * L < (1LL << 31) && (i64)B * H * Tn / kKeyWarps < (1LL << 31),
              "cross_attention: B=", B, " H=", H, " L=", L, " T=", Tn, " is too large for one launch");
}

}  // namespace

void cross_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* kv, int B, int L, int Tn, int H, int d,
                             float scale, cudaStream_t stream) {
  check_args(B, L, Tn, H, d, scale);
  xattn_fwd_kernel<<<(unsigned)((i64)B * H * L), 32 * kRowWarps, 0, stream>>>(out, lse, q, kv, L, Tn, H, d, scale);
  CUDA_CHECK_LAUNCH();
}

void cross_attention_backward(bf16* dq, bf16* dkv, const bf16* dout, const bf16* q, const bf16* kv, const bf16* out,
                              const float* lse, int B, int L, int Tn, int H, int d, float scale, cudaStream_t stream) {
  check_args(B, L, Tn, H, d, scale);
  xattn_dq_kernel<<<(unsigned)((i64)B * H * L), 32 * kRowWarps, 0, stream>>>(dq, dout, q, kv, out, lse, L, Tn, H, d,
                                                                             scale);
  CUDA_CHECK_LAUNCH();
  const i64 key_rows = (i64)B * H * Tn;
  xattn_dkv_kernel<<<(unsigned)((key_rows + kKeyWarps - 1) / kKeyWarps), 32 * kKeyWarps, 0, stream>>>(
      dkv, dout, q, kv, out, lse, B, L, Tn, H, d, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
