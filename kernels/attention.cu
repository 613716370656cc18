// Attention entry points (attention.h): argument checks, the choice of implementation, and the simple
// variant (one warp per query or key row, fp32 on CUDA cores) that is both the readable baseline the fused
// kernels are tested against and the fallback for head dims the fused kernels are not built for.
// The fused kernels live in attention_fwd*.cu and attention_bwd*.cu.
// Attention dropout: the simple kernels draw the mask one (query, key) entry at a time (attention_dropout.h),
// in instantiations of their own (kDropout), so the p = 0 kernels are the plain ones.
#include <cstdint>
#include <cstdlib>

#include "engine/cuda_check.h"
#include "kernels/attention.h"
#include "kernels/attention_bwd_wg.h"
#include "kernels/attention_fwd_m32.h"
#include "kernels/attention_fwd_wg.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/column_sums.h"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {
namespace attn {
namespace {

constexpr int kSimpleMaxD = 128;  // 4 elements per lane
constexpr int kSimpleWarps = 4;   // warps (rows) per block

__device__ __forceinline__ float ld(const bf16* p) { return __bfloat162float(*p); }

// Row w of the (B, H, T) grid of rows, t fastest.
struct RowId {
  int b, h, t;
  __device__ RowId(i64 w, int Tn, int H) : b((int)(w / Tn / H)), h((int)(w / Tn % H)), t((int)(w % Tn)) {}
};

// Keep decision of attention dropout for query i, key j of head bh.
__device__ __forceinline__ bool keep1(const MaskParams& mk, i64 bh, int i, int j) {
  return attn_mask::uniform16(mk.seed, mk.site, bh, i, j) >= mk.thr;
}

// out[b,i,h,:] and lse[b,h,i] for one query row per warp, by the online softmax over keys j.
template <bool kDropout>
__global__ void simple_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv,
                                  int B, int Tn, int H, int d, float scale, MaskParams mk) {
  const i64 w = (i64)blockIdx.x * kSimpleWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= (i64)B * H * Tn) return;  // whole warps leave together
  const RowId id(w, Tn, H);
  const i64 ld3 = 3LL * H * d;  // elements between tokens in qkv
  const bf16* base = qkv + (i64)id.b * Tn * ld3 + (i64)id.h * d;
  float q[4], o[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int c = lane + 32 * r;
    q[r] = c < d ? ld(base + id.t * ld3 + c) : 0.f;
    o[r] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j < Tn; ++j) {
    const bf16* k = base + j * ld3 + (i64)H * d;
    const bf16* v = k + (i64)H * d;
    float part = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r)
      if (lane + 32 * r < d) part += q[r] * ld(k + lane + 32 * r);
    const float s = warp_sum(part) * scale;
    const float mn = fmaxf(m, s);
    const float corr = __expf(m - mn);  // 0 on the first key (m = -inf)
    const float p = __expf(s - mn);
    l = l * corr + p;
    float po = p;  // what enters O: the dropped P (scaled once at the end)
    if constexpr (kDropout) po = keep1(mk, w / Tn, id.t, j) ? p : 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) o[r] = o[r] * corr + (lane + 32 * r < d ? po * ld(v + lane + 32 * r) : 0.f);
    m = mn;
  }
  bf16* orow = out + (((i64)id.b * Tn + id.t) * H + id.h) * d;
  const float l_out = kDropout ? l / mk.scale : l;  // the keep scale joins 1 / l; lse keeps the plain l
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) orow[lane + 32 * r] = __float2bfloat16(o[r] / l_out);
  if (lane == 0) lse[w] = m + logf(l);  // w is the (B, H, T) index
}

// D[b,h,i] = dO_i · O_i.
__global__ void simple_rowdot_kernel(float* __restrict__ Dws, const bf16* __restrict__ dout,
                                     const bf16* __restrict__ out, int B, int Tn, int H, int d) {
  const i64 w = (i64)blockIdx.x * kSimpleWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= (i64)B * H * Tn) return;
  const RowId id(w, Tn, H);
  const i64 off = (((i64)id.b * Tn + id.t) * H + id.h) * d;
  float part = 0.f;
  for (int c = lane; c < d; c += 32) part += ld(dout + off + c) * ld(out + off + c);
  part = warp_sum(part);
  if (lane == 0) Dws[w] = part;
}

// dq_i = scale Σ_j P_ij (dO_i·v_j − D_i) k_j, one query row per warp. With dropout dO_i·v_j becomes
// Z_ij s dO_i·v_j (the gradient of P_ij; see attention_ref.cpp).
template <bool kDropout>
__global__ void simple_dq_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                                 const float* __restrict__ lse, const float* __restrict__ Dws, int B, int Tn, int H,
                                 int d, float scale, MaskParams mk) {
  const i64 w = (i64)blockIdx.x * kSimpleWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= (i64)B * H * Tn) return;
  const RowId id(w, Tn, H);
  const i64 ld3 = 3LL * H * d;
  const bf16* base = qkv + (i64)id.b * Tn * ld3 + (i64)id.h * d;
  const bf16* go = dout + (((i64)id.b * Tn + id.t) * H + id.h) * d;
  float q[4], g[4], acc[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int c = lane + 32 * r;
    q[r] = c < d ? ld(base + id.t * ld3 + c) : 0.f;
    g[r] = c < d ? ld(go + c) : 0.f;
    acc[r] = 0.f;
  }
  const float li = lse[w], Di = Dws[w];
  for (int j = 0; j < Tn; ++j) {
    const bf16* k = base + j * ld3 + (i64)H * d;
    const bf16* v = k + (i64)H * d;
    float kr[4], sp = 0.f, dp = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int c = lane + 32 * r;
      kr[r] = c < d ? ld(k + c) : 0.f;
      sp += q[r] * kr[r];
      dp += c < d ? g[r] * ld(v + c) : 0.f;
    }
    const float p = __expf(warp_sum(sp) * scale - li);
    float gp = warp_sum(dp);  // ∂L/∂P_ij
    if constexpr (kDropout) gp = keep1(mk, w / Tn, id.t, j) ? gp * mk.scale : 0.f;
    const float ds = p * (gp - Di);
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[r] += ds * kr[r];
  }
  bf16* dq = dqkv + (((i64)id.b * Tn + id.t) * 3 + 0) * H * d + (i64)id.h * d;
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) dq[lane + 32 * r] = __float2bfloat16(scale * acc[r]);
}

// dk_j = scale Σ_i dS_ij q_i and dv_j = Σ_i P_ij dO_i, one key row per warp (with dropout P_ij Z_ij s in dv).
template <bool kDropout>
__global__ void simple_dkv_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout,
                                  const bf16* __restrict__ qkv, const float* __restrict__ lse,
                                  const float* __restrict__ Dws, int B, int Tn, int H, int d, float scale,
                                  MaskParams mk) {
  const i64 w = (i64)blockIdx.x * kSimpleWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (w >= (i64)B * H * Tn) return;
  const RowId id(w, Tn, H);  // id.t is the key index j
  const i64 ld3 = 3LL * H * d;
  const bf16* base = qkv + (i64)id.b * Tn * ld3 + (i64)id.h * d;
  const i64 stat0 = ((i64)id.b * H + id.h) * Tn;  // (b, h, 0) in lse and D
  float k[4], v[4], dk[4], dv[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int c = lane + 32 * r;
    k[r] = c < d ? ld(base + id.t * ld3 + H * d + c) : 0.f;
    v[r] = c < d ? ld(base + id.t * ld3 + 2 * H * d + c) : 0.f;
    dk[r] = dv[r] = 0.f;
  }
  for (int i = 0; i < Tn; ++i) {
    const bf16* q = base + i * ld3;
    const bf16* go = dout + (((i64)id.b * Tn + i) * H + id.h) * d;
    float qr[4], gr[4], sp = 0.f, dp = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int c = lane + 32 * r;
      qr[r] = c < d ? ld(q + c) : 0.f;
      gr[r] = c < d ? ld(go + c) : 0.f;
      sp += qr[r] * k[r];
      dp += gr[r] * v[r];
    }
    const float p = __expf(warp_sum(sp) * scale - lse[stat0 + i]);
    float gp = warp_sum(dp), pv = p;  // ∂L/∂P_ij and what multiplies dO_i in dv
    if constexpr (kDropout) {
      const bool kept = keep1(mk, w / Tn, i, id.t);
      gp = kept ? gp * mk.scale : 0.f;
      pv = kept ? p * mk.scale : 0.f;
    }
    const float ds = p * (gp - Dws[stat0 + i]);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      dk[r] += ds * qr[r];
      dv[r] += pv * gr[r];
    }
  }
  bf16* dkr = dqkv + (((i64)id.b * Tn + id.t) * 3 + 1) * H * d + (i64)id.h * d;
  bf16* dvr = dkr + (i64)H * d;
#pragma unroll
  for (int r = 0; r < 4; ++r)
    if (lane + 32 * r < d) {
      dkr[lane + 32 * r] = __float2bfloat16(scale * dk[r]);
      dvr[lane + 32 * r] = __float2bfloat16(dv[r]);
    }
}

unsigned simple_blocks(int B, int Tn, int H) {
  const i64 rows = (i64)B * H * Tn;
  const i64 blocks = (rows + kSimpleWarps - 1) / kSimpleWarps;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H·T = ", rows, " rows is too large for one launch");
  return (unsigned)blocks;
}

void check_args(int B, int Tn, int H, int d, float scale) {
  VIT_REQUIRE(B >= 1 && Tn >= 1 && H >= 1, "attention: need B, T, H >= 1 (got B=", B, " T=", Tn, " H=", H, ")");
  VIT_REQUIRE(d >= 1 && d <= kSimpleMaxD, "attention: head dim ", d, " is outside 1..", kSimpleMaxD,
              " supported by the CUDA kernels");
  VIT_REQUIRE(scale > 0.f, "attention: the softmax scale must be positive (got ", scale, ")");
}

bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15) == 0; }

}  // namespace

MaskParams mask_params(const AttnDropout& drop) {
  MaskParams mk;
  if (!drop.active()) return mk;
  mk.seed = drop.seed;
  mk.site = drop.site;
  mk.thr = attn_mask::threshold(drop.p);
  mk.thr2 = mk.thr | (mk.thr << 16);
  mk.scale = (float)attn_mask::keep_scale(mk.thr);
  mk.on = true;
  return mk;
}

void simple_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                    const MaskParams& mk, cudaStream_t stream) {
  auto kernel = mk.on ? simple_fwd_kernel<true> : simple_fwd_kernel<false>;
  kernel<<<simple_blocks(B, Tn, H), 32 * kSimpleWarps, 0, stream>>>(out, lse, qkv, B, Tn, H, d, scale, mk);
  CUDA_CHECK_LAUNCH();
}

void simple_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                     int H, int d, float scale, const MaskParams& mk, float* Dws, cudaStream_t stream) {
  const unsigned blocks = simple_blocks(B, Tn, H);
  simple_rowdot_kernel<<<blocks, 32 * kSimpleWarps, 0, stream>>>(Dws, dout, out, B, Tn, H, d);
  CUDA_CHECK_LAUNCH();
  auto dq_kernel = mk.on ? simple_dq_kernel<true> : simple_dq_kernel<false>;
  dq_kernel<<<blocks, 32 * kSimpleWarps, 0, stream>>>(dqkv, dout, qkv, lse, Dws, B, Tn, H, d, scale, mk);
  CUDA_CHECK_LAUNCH();
  auto dkv_kernel = mk.on ? simple_dkv_kernel<true> : simple_dkv_kernel<false>;
  dkv_kernel<<<blocks, 32 * kSimpleWarps, 0, stream>>>(dqkv, dout, qkv, lse, Dws, B, Tn, H, d, scale, mk);
  CUDA_CHECK_LAUNCH();
}

// The flash/simple backwards' D (B·H·T floats), then the qkv bias gradient's partials (B rows of 3·H·d).
i64 d_region_bytes(int B, int Tn, int H) { return ((i64)B * H * Tn * (i64)sizeof(float) + 255) / 256 * 256; }
i64 workspace_bytes(int B, int Tn, int H, int d) {
  return d_region_bytes(B, Tn, H) + (i64)B * 3 * H * d * (i64)sizeof(float);
}

const char* variant_name(Variant v) {
  switch (v) {
    case Variant::simple: return "simple";
    case Variant::flash: return "flash";
    case Variant::flash_wide: return "flash_wide";
    case Variant::resident: return "resident";
    case Variant::fast: return "fast";
    case Variant::m32: return "m32";
    case Variant::wg: return "wg";
  }
  return "?";
}

Variant default_variant(int d) {
  Variant v = Variant::resident;  // the measured pairing, see attention_forward below
  if (const char* env = std::getenv("VIT_ATTN_VARIANT"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long k = std::strtol(env, &end, 10);
    VIT_REQUIRE(*end == '\0' && k >= 0 && k < kVariantCount, "VIT_ATTN_VARIANT must be 0..", kVariantCount - 1,
                " (simple, flash, flash_wide, resident, fast, m32, wg), not '", env, "'");
    v = static_cast<Variant>(k);
  }
  return flash_supports(d) ? v : Variant::simple;
}

// With dropout the resident, fast and m32 forwards give way to flash (their kernels have no mask); every backward
// and the simple, flash and wg forwards take it.
void forward(Variant v, bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
             cudaStream_t stream, const AttnDropout& drop) {
  check_args(B, Tn, H, d, scale);
  attn_mask::check(drop, B, Tn, H);
  const MaskParams mk = mask_params(drop);
  if (v != Variant::simple) {
    VIT_REQUIRE(flash_supports(d), "attention: the fused kernels are built for head dims 32, 64, 80, 96, 128, not ", d);
    VIT_REQUIRE(aligned16(qkv) && aligned16(out), "attention: qkv and out must be 16-byte aligned");
    if (v == Variant::resident && !mk.on && resident_forward_supports(Tn, d))
      resident_forward(out, lse, qkv, B, Tn, H, d, scale, stream);
    else if (v == Variant::fast && !mk.on)
      fast_forward(out, lse, qkv, B, Tn, H, d, scale, stream);
    else if (v == Variant::wg && wg_forward_supports(Tn, d))
      wg_forward(out, lse, qkv, B, Tn, H, d, scale, stream, mk);
    else if ((v == Variant::m32 || v == Variant::wg) && !mk.on)
      m32_forward(out, lse, qkv, B, Tn, H, d, scale, m32_config(Tn, d), stream);
    else
      flash_forward(out, lse, qkv, B, Tn, H, d, scale, mk, stream);
  } else {
    simple_forward(out, lse, qkv, B, Tn, H, d, scale, mk, stream);
  }
}

void backward(Variant v, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
              int Tn, int H, int d, float scale, void* workspace, cudaStream_t stream, const AttnDropout& drop,
              float* dbias) {
  check_args(B, Tn, H, d, scale);
  attn_mask::check(drop, B, Tn, H);
  const MaskParams mk = mask_params(drop);
  VIT_REQUIRE(workspace != nullptr, "attention: backward needs attention_backward_workspace_bytes() of workspace");
  VIT_REQUIRE((reinterpret_cast<std::uintptr_t>(workspace) & 3) == 0, "attention: workspace must be 4-byte aligned");
  float* Dws = static_cast<float*>(workspace);
  float* bias_part = reinterpret_cast<float*>(static_cast<char*>(workspace) + d_region_bytes(B, Tn, H));
  const int ncol = 3 * H * d;
  bool bias_done = false;
  if (v != Variant::simple) {
    VIT_REQUIRE(flash_supports(d), "attention: the fused kernels are built for head dims 32, 64, 80, 96, 128, not ", d);
    VIT_REQUIRE(aligned16(dqkv) && aligned16(dout) && aligned16(qkv) && aligned16(out),
                "attention: qkv, out, dout and dqkv must be 16-byte aligned");
    if (v == Variant::wg && wg_backward_supports(Tn, d, mk.on) && wg_backward_enabled()) {
      wg_backward(dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, mk, stream, dbias ? bias_part : nullptr);
      if (dbias) detail::finish_partial_sums(dbias, nullptr, bias_part, B, ncol, ncol, stream);
      bias_done = true;
    } else if ((v == Variant::resident || v == Variant::fast || v == Variant::m32 || v == Variant::wg) &&
               resident_backward_supports(Tn, d)) {
      // The D region is not needed here; the bias partials (one row per sample) are.
      resident_backward(dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, mk, stream, dbias ? bias_part : nullptr);
      if (dbias) detail::finish_partial_sums(dbias, nullptr, bias_part, B, ncol, ncol, stream);
      bias_done = true;
    } else {
      flash_backward(v, dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, mk, Dws, stream);
    }
  } else {
    simple_backward(dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, mk, Dws, stream);
  }
  if (dbias && !bias_done) column_sums(dbias, dqkv, (i64)B * Tn, ncol, bias_part, (i64)B * ncol, stream);
}

}  // namespace attn

// Public API: forward and backward pick separately, by measurement on the H100 (2026-11-25, ViT-B B256 H12
// T197 d64, docs/benchmarks.md runs 4, 14, 17, 31, 59): forward wg 173 us < m32 193 < flash 216 < resident 233 <
// fast 244 (and m32 is 10-30% faster than flash at T257 d80 and d128, where wg does not apply); backward
// wg 454-463 us < resident 619-646 < fast 637 < flash 834. Every variant reads and writes the same out / lse, so
// they pair freely.
// VIT_ATTN_VARIANT forces one variant for both; head dims without fused kernels use the simple ones.
// Attention dropout keeps this pairing: the wg forward and backward take the mask (the backward up to T = 192, past
// that the resident backward), flash where wg does not apply.
// public_forward is the forward run when VIT_ATTN_VARIANT is unset (dropout included, docs/benchmarks.md run 65): the
// wgmma forward with its copy-engine loads beats m32 at every measured d = 64 shape (T197 173 vs 194 us, T257
// 130 vs 164, T401 126 vs 171, T577 121 vs 156; docs/benchmarks.md runs 24-31); where it does not apply (other head
// dims, a build without sm_90a) Variant::wg runs m32.
constexpr attn::Variant public_forward() { return attn::Variant::wg; }
// public_backward likewise: the wgmma backward where it applies (d = 64, T <= 256, with dropout T <= 192;
// docs/benchmarks.md runs 49-65), otherwise Variant::wg's backward is the resident one (or flash past its limits).
constexpr attn::Variant public_backward() { return attn::Variant::wg; }

// The variant the public API runs for head dim d: the one VIT_ATTN_VARIANT forces, else `chosen` (the public
// pairing above) where the fused kernels apply (default_variant's simple fallback stays for other head dims).
namespace {
attn::Variant public_variant(int d, attn::Variant chosen) {
  const attn::Variant v = attn::default_variant(d);
  const char* env = std::getenv("VIT_ATTN_VARIANT");
  return v == attn::Variant::resident && (env == nullptr || *env == '\0') ? chosen : v;
}
}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                       cudaStream_t stream, const AttnDropout& drop) {
  attn::forward(public_variant(d, public_forward()), out, lse, qkv, B, Tn, H, d, scale, stream, drop);
}

i64 attention_backward_workspace_bytes(int B, int Tn, int H, int d) { return attn::workspace_bytes(B, Tn, H, d); }

void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                        int H, int d, float scale, void* workspace, cudaStream_t stream, const AttnDropout& drop,
                        float* dbias) {
  attn::backward(public_variant(d, public_backward()), dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, workspace, stream,
                 drop, dbias);
}

}  // namespace vit::gpu
