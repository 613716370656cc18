// Fused attention backward in one pass (Variant::resident), for T <= 16·KT: one CTA per (b, h) holds the whole
// K and V in shared memory, warp w owns keys 16w..16w+15 (dK, dV in its registers for the whole kernel), and
// the queries stream through in blocks of 32 (Q, dO double-buffered with cp.async). Per query block each warp
// computes, for its 16 keys,
//     Sᵀ = K Qᵀ,  Pᵀ = exp(scale·Sᵀ − lse),  dV += Pᵀ dO,  dPᵀ = V dOᵀ,  dSᵀ = Pᵀ ⊙ (dPᵀ − D),  dK += dSᵀ Q,
// and parks dSᵀ (bf16, as already rounded for the dK product) in shared memory. Because the CTA holds every
// key, dQ = dS K of the block is complete inside the CTA: it is computed after the next barrier, in units of
// (16 queries × 32 head columns) over all keys, and written straight to dqkv in bf16. That is 5 tile products
// per (query, key) pair instead of the two-pass kernels' 7, no fp32 dQ accumulator, no atomics, deterministic.
//
// One barrier per query block: at step i the block i copies have landed, dSᵀ of block i−1 is complete (its
// dQ is done in step i), and buffers of block i−1 are free for the prefetch of block i+1. dSᵀ is
// double-buffered because step i writes block i's while other warps still read block i−1's.
//
// D = rowsum(dO ⊙ O) and lse (pre-multiplied by log2 e) for all T queries are computed into shared memory in
// the prologue, while K and V are in flight; queries past T get lse = +inf, so P = 0 there with no branch.
// Keys past T are masked explicitly (their Sᵀ row is 0, and exp(−lse) alone could overflow).
//
// With bias_part (the qkv linear's bias gradient fused in): the CTA also sums the dQ, dK, dV values it stores
// (bf16, as the weight-gradient GEMM reads them) over its T rows, per column: each warp folds its rows with
// shuffles into its own shared-memory row at the end, and the warps' rows are added in warp order into row b
// of bias_part (B rows of 3·H·D), which a finishing kernel sums over b. Deterministic like the rest.
//
// Attention dropout (kDropout, separate instantiations; mask Z, keep scale s): each n-block's keep masks are
// drawn next to its Pᵀ; dV += (Pᵀ ⊙ Z) dO uses the bf16 Pᵀ fragments with the dropped halves cleared (scaled by
// s once at the end), and dSᵀ = Pᵀ ⊙ (Z s dPᵀ − D) with D from the dropped O.
#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

template <int D, int KT>
struct ResBwdCfg {
  static constexpr int kThreads = 32 * KT;  // one warp per 16-key tile
  static constexpr int kMaxT = 16 * KT;
  static constexpr int kBM = 32;             // queries per step
  static constexpr int kP = D + kPad;        // pitch of the K, V, Q, dO tiles
  static constexpr int kPS = kBM + kPad;     // pitch of the dSᵀ tile (80 bytes: ldmatrix conflict-free)
  static constexpr int kStatRows = (kMaxT + kBM - 1) / kBM * kBM;
  // 16-column groups per dQ unit. One, not two: a 32-query block then has 2·D/16 units (8 at d = 64) instead
  // of 4, so the dQ work of a step (which every warp waits for at the next barrier) is spread over twice the
  // warps, each carrying half the extra MMAs on top of its dK/dV work (at T = 197, d = 64 the busiest warp's
  // step drops from 64 + 52 to 64 + 26 MMAs), and the unit's accumulator shrinks from 16 to 8 registers.
  static constexpr int kDG = 1;
  static constexpr int kUnitsM = kBM / 16;
  static constexpr int kUnits = kUnitsM * (D / 16 / kDG);
  static constexpr int kMinBlocks = KT <= 8 ? 2 : 1;
  // sK, sV (kMaxT rows) + sQ, sdO (2 buffers of kBM rows) + sdS (2 buffers of kMaxT rows) + lse2, D + the
  // bias sums (dQ per lane, q/k/v per warp)
  static constexpr int kQs = 4 * kDG;  // dQ bias sums per lane (2·kDG tiles × 2 columns)
  static constexpr int kSmem = (2 * kMaxT + 4 * kBM) * kP * (int)sizeof(bf16) +
                               2 * kMaxT * kPS * (int)sizeof(bf16) + 2 * kStatRows * (int)sizeof(float) +
                               KT * 32 * kQs * (int)sizeof(float) + KT * 3 * D * (int)sizeof(float);
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
};

// One query block for one warp (16 keys): everything but dQ; dSᵀ goes to sdSw (the warp's 16 rows).
// kFull: all kBM queries exist (the per-tile guards compile away). kDropout: the mask of tile mt (rows: the
// warp's keys, columns: the block's queries).
template <int D, int BM, int PS, bool kFull, bool kDropout>
__device__ __forceinline__ void res_dkv_block(const bf16* sKw, const bf16* sVw, const bf16* sQb, const bf16* sdOb,
                                              const float* lse2b, const float* Db, int q_valid, float sl2,
                                              const bool (&kok)[2], const LaneOffsets& lo, int g, int t,
                                              float (&dk)[D / 8][4], float (&dv)[D / 8][4], bf16* sdSw,
                                              const MaskTile& mt) {
  constexpr int P = D + kPad;
  // Sᵀ = K Qᵀ: (16 keys, BM queries); n-block n holds queries 8n..8n+7 of the block.
  float s[BM / 8][4];
#pragma unroll
  for (int n = 0; n < BM / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t ka[4];
    ldsm_x4(ka, smem_addr(sKw + lo.a_row * P + kk * 16 + lo.a_col));
#pragma unroll
    for (int np = 0; np < BM / 16; ++np) {
      if (kFull || np * 16 < q_valid) {
        uint32_t qb[4];
        ldsm_x4(qb, smem_addr(sQb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
        mma_16816(s[2 * np], ka, qb[0], qb[1]);
        mma_16816(s[2 * np + 1], ka, qb[2], qb[3]);
      }
    }
  }
  // Pᵀ = exp(scale·Sᵀ − lse[query]): queries past T have lse2 = +inf (P = 0), keys past T are masked. Kept only
  // as the bf16 A fragments of dV += Pᵀ dO (half the registers of fp32, which keeps d = 64 within 128 with
  // dK and dV resident); dS below uses the same rounded P.
  uint32_t pa[BM / 16][4];
  [[maybe_unused]] uint32_t kbits = 0;  // keep masks of the block's n-blocks (pack_keep)
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) {
    float p[2][4];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = 2 * kk + h;
      if (kFull || n * 8 < q_valid) {
        const float2 l2 = *reinterpret_cast<const float2*>(lse2b + n * 8 + 2 * t);
        p[h][0] = kok[0] ? fast_exp2(fmaf(s[n][0], sl2, -l2.x)) : 0.f;
        p[h][1] = kok[0] ? fast_exp2(fmaf(s[n][1], sl2, -l2.y)) : 0.f;
        p[h][2] = kok[1] ? fast_exp2(fmaf(s[n][2], sl2, -l2.x)) : 0.f;
        p[h][3] = kok[1] ? fast_exp2(fmaf(s[n][3], sl2, -l2.y)) : 0.f;
        if constexpr (kDropout) {
          uint32_t m[2];
          keep_masks<true>(m, mt.mk, mt.bh, mt.row0, mt.col0 + n * 8, g, t);
          kbits |= pack_keep(m, n);
        }
      } else {
        p[h][0] = p[h][1] = p[h][2] = p[h][3] = 0.f;
      }
    }
    c_pair_to_a(pa[kk], p[0], p[1]);
  }
  // dV += Pᵀ dO: k runs over queries; dO is read transposed.
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) {
    if (kFull || kk * 16 < q_valid) {
      [[maybe_unused]] uint32_t pz[4];  // P ⊙ Z: the dropped bf16 halves cleared
      if constexpr (kDropout) {
#pragma unroll
        for (int x = 0; x < 4; ++x) pz[x] = pa[kk][x] & unpack_keep(kbits, 2 * kk + (x >> 1), x & 1);
      }
      const uint32_t(&pv)[4] = kDropout ? pz : pa[kk];
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t gb[4];
        ldsm_x4_trans(gb, smem_addr(sdOb + (kk * 16 + lo.bk_row) * P + dd * 16 + lo.bk_col));
        mma_16816(dv[2 * dd], pv, gb[0], gb[1]);
        mma_16816(dv[2 * dd + 1], pv, gb[2], gb[3]);
      }
    }
  }
  // dPᵀ = V dOᵀ: (16 keys, BM queries).
  float dpt[BM / 8][4];
#pragma unroll
  for (int n = 0; n < BM / 8; ++n) dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t va[4];
    ldsm_x4(va, smem_addr(sVw + lo.a_row * P + kk * 16 + lo.a_col));
#pragma unroll
    for (int np = 0; np < BM / 16; ++np) {
      if (kFull || np * 16 < q_valid) {
        uint32_t gb[4];
        ldsm_x4(gb, smem_addr(sdOb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
        mma_16816(dpt[2 * np], va, gb[0], gb[1]);
        mma_16816(dpt[2 * np + 1], va, gb[2], gb[3]);
      }
    }
  }
  // dSᵀ = Pᵀ ⊙ (dPᵀ − D[query]) (0 wherever P is), rounded to bf16 once: the A operand of dK += dSᵀ Q here
  // and, through sdSw, of dQ = dS K after the next barrier.
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) {
    if (kFull || kk * 16 < q_valid) {
      const float2 d0 = *reinterpret_cast<const float2*>(Db + kk * 16 + 2 * t);
      const float2 d1 = *reinterpret_cast<const float2*>(Db + kk * 16 + 8 + 2 * t);
      float(&e0)[4] = dpt[2 * kk];
      float(&e1)[4] = dpt[2 * kk + 1];
      if constexpr (kDropout) {  // dPᵀ of the dropped entries is 0, of the kept s·dPᵀ
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          e0[e] = keep_or_zero(e0[e] * mt.mk.scale, unpack_keep(kbits, 2 * kk, e >> 1), e & 1);
          e1[e] = keep_or_zero(e1[e] * mt.mk.scale, unpack_keep(kbits, 2 * kk + 1, e >> 1), e & 1);
        }
      }
      const float2 p0 = unpack_bf16(pa[kk][0]), p1 = unpack_bf16(pa[kk][1]);
      const float2 p2 = unpack_bf16(pa[kk][2]), p3 = unpack_bf16(pa[kk][3]);
      uint32_t da[4];
      da[0] = pack_bf16(p0.x * (e0[0] - d0.x), p0.y * (e0[1] - d0.y));  // (key g,   queries 2t, 2t+1)
      da[1] = pack_bf16(p1.x * (e0[2] - d0.x), p1.y * (e0[3] - d0.y));  // (key g+8, queries 2t, 2t+1)
      da[2] = pack_bf16(p2.x * (e1[0] - d1.x), p2.y * (e1[1] - d1.y));  // (key g,   queries 8+2t, ...)
      da[3] = pack_bf16(p3.x * (e1[2] - d1.x), p3.y * (e1[3] - d1.y));  // (key g+8, queries 8+2t, ...)
      *reinterpret_cast<uint32_t*>(sdSw + g * PS + kk * 16 + 2 * t) = da[0];
      *reinterpret_cast<uint32_t*>(sdSw + (g + 8) * PS + kk * 16 + 2 * t) = da[1];
      *reinterpret_cast<uint32_t*>(sdSw + g * PS + kk * 16 + 8 + 2 * t) = da[2];
      *reinterpret_cast<uint32_t*>(sdSw + (g + 8) * PS + kk * 16 + 8 + 2 * t) = da[3];
      // dK += dSᵀ Q: k runs over queries; Q is read transposed.
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t qb[4];
        ldsm_x4_trans(qb, smem_addr(sQb + (kk * 16 + lo.bk_row) * P + dd * 16 + lo.bk_col));
        mma_16816(dk[2 * dd], da, qb[0], qb[1]);
        mma_16816(dk[2 * dd + 1], da, qb[2], qb[3]);
      }
    }
  }
}

// dQ of one query block: unit u = (16-query tile, kDG 16-column groups), summed over all n_kt key tiles from
// dSᵀ (stored [key][query], so read as A with ldmatrix.trans) and K (stored [key][d]: B [k][n], .trans).
// qsum (with the bias): the lane's running sums of the stored dQ values, per tile n and column 2t + j, in
// shared memory (registers are at the 128 cap here; four more live across the loop made ptxas spill).
template <int D, int KT>
__device__ __forceinline__ void res_dq_block(bf16* __restrict__ dq_rows, i64 ld, const bf16* sK, const bf16* sdS,
                                             int q_valid, int n_kt, int first_unit, float scale,
                                             const LaneOffsets& lo, int g, int t, float* qsum) {
  using C = ResBwdCfg<D, KT>;
  constexpr int P = C::kP, PS = C::kPS, DG = C::kDG;
  static_assert(C::kUnits <= KT, "one dQ unit per warp at most");
  {
    const int u = first_unit;
    if (u < 0 || u >= C::kUnits) return;
    const int mt = u % C::kUnitsM, c0 = (u / C::kUnitsM) * DG * 16;
    if (mt * 16 >= q_valid) return;
    float acc[2 * DG][4];
#pragma unroll
    for (int n = 0; n < 2 * DG; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll 1  // (unrolling only adds registers: the loop is ldmatrix-bound)
    for (int kt = 0; kt < n_kt; ++kt) {
      uint32_t a[4];
      ldsm_x4_trans(a, smem_addr(sdS + (kt * 16 + lo.bn_row) * PS + mt * 16 + lo.bn_col));
#pragma unroll
      for (int dd = 0; dd < DG; ++dd) {
        uint32_t kb[4];
        ldsm_x4_trans(kb, smem_addr(sK + (kt * 16 + lo.bk_row) * P + c0 + dd * 16 + lo.bk_col));
        mma_16816(acc[2 * dd], a, kb[0], kb[1]);
        mma_16816(acc[2 * dd + 1], a, kb[2], kb[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = mt * 16 + g + 8 * r;
      if (row < q_valid) {
        bf16* dst = dq_rows + row * ld + c0 + 2 * t;
#pragma unroll
        for (int n = 0; n < 2 * DG; ++n) {
          const uint32_t v = pack_bf16(acc[n][2 * r] * scale, acc[n][2 * r + 1] * scale);
          *reinterpret_cast<uint32_t*>(dst + n * 8) = v;
          if (qsum) {
            const float2 f = unpack_bf16(v);
            qsum[2 * n] += f.x;
            qsum[2 * n + 1] += f.y;
          }
        }
      }
    }
  }
}

// grid: B · H CTAs, one per (b, h); block: 32 · KT threads.
template <int D, int KT, bool kDropout>
__global__ void __launch_bounds__(ResBwdCfg<D, KT>::kThreads, ResBwdCfg<D, KT>::kMinBlocks)
    resident_bwd_kernel(bf16* __restrict__ dqkv, const bf16* __restrict__ dout, const bf16* __restrict__ qkv,
                        const bf16* __restrict__ out, const float* __restrict__ lse, int Tn, int H, float scale,
                        MaskParams mk, float* __restrict__ bias_part) {
  using C = ResBwdCfg<D, KT>;
  constexpr int P = C::kP, PS = C::kPS, BM = C::kBM, NT = C::kThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);                      // (kMaxT, P)
  bf16* sV = sK + C::kMaxT * P;                                  // (kMaxT, P)
  bf16* sQ = sV + C::kMaxT * P;                                  // (2, BM, P)
  bf16* sdO = sQ + 2 * BM * P;                                   // (2, BM, P)
  bf16* sdS = sdO + 2 * BM * P;                                  // (2, kMaxT, PS)
  float* sLse2 = reinterpret_cast<float*>(sdS + 2 * C::kMaxT * PS);  // (kStatRows)
  float* sD = sLse2 + C::kStatRows;                                  // (kStatRows)
  float* sQsum = sD + C::kStatRows;                                  // (KT · 32, kQs): dQ bias sums
  float* sBias = sQsum + KT * 32 * C::kQs;                           // (KT, 3·D): per-warp q, k, v sums

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets lo(lane);
  const int bh = blockIdx.x;
  const int b = bh / H, h = bh % H;
  const i64 ld = 3LL * H * D;  // token stride of qkv / dqkv (B, T, 3, H, D)
  const i64 ldo = (i64)H * D;  // token stride of out / dout (B, T, H, D)
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;
  const bf16* kg = qg + (i64)H * D;
  const bf16* vg = qg + 2LL * H * D;
  const bf16* og = out + (i64)b * Tn * ldo + (i64)h * D;
  const bf16* gg = dout + (i64)b * Tn * ldo + (i64)h * D;
  const int n_kt = (Tn + 15) / 16;         // key tiles holding a real key (<= KT)
  const int n_qb = (Tn + BM - 1) / BM;     // query blocks
  const int key0 = warp * 16;              // this warp's keys
  const bool kactive = key0 < Tn;
  const bool kok[2] = {key0 + g < Tn, key0 + g + 8 < Tn};

  auto load_query_block = [&](int i0, int buf) {
    load_rows_rt<D>(sQ + buf * BM * P, qg + (i64)i0 * ld, ld, BM, Tn - i0, tid, NT);
    load_rows_rt<D>(sdO + buf * BM * P, gg + (i64)i0 * ldo, ldo, BM, Tn - i0, tid, NT);
  };
  load_rows_rt<D>(sK, kg, ld, n_kt * 16, Tn, tid, NT);
  load_rows_rt<D>(sV, vg, ld, n_kt * 16, Tn, tid, NT);
  load_query_block(0, 0);
  cp_async_commit();

  // While those fly: D = dO·O and lse·log2 e of every query (one thread per row; +inf / 0 past T).
  for (int r = tid; r < n_qb * BM; r += NT) {
    float dsum = 0.f, l2 = INFINITY;
    if (r < Tn) {
      const uint4* o4 = reinterpret_cast<const uint4*>(og + r * ldo);
      const uint4* g4 = reinterpret_cast<const uint4*>(gg + r * ldo);
#pragma unroll
      for (int c = 0; c < D / 8; ++c) {
        const uint4 ov = o4[c], gv = g4[c];
        const uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w}, gw[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 of = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ow[e]));
          const float2 gf = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&gw[e]));
          dsum = fmaf(of.x, gf.x, fmaf(of.y, gf.y, dsum));
        }
      }
      l2 = lse[(i64)bh * Tn + r] * kLog2e;
    }
    sD[r] = dsum;
    sLse2[r] = l2;
  }

  const float sl2 = scale * kLog2e;
  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  // dQ units go to the highest warps first: they are the ones without keys when T < 16·KT.
  const int first_unit = KT - 1 - warp;
  const bool with_bias = bias_part != nullptr;
  if (with_bias)
#pragma unroll
    for (int e = 0; e < C::kQs; ++e) sQsum[tid * C::kQs + e] = 0.f;

  for (int i = 0; i <= n_qb; ++i) {  // step i: the dK, dV work of block i and the dQ of block i−1
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_qb) {
      load_query_block((i + 1) * BM, (i + 1) & 1);
      cp_async_commit();
    }
    if (i >= 1) {
      const int i0 = (i - 1) * BM;
      res_dq_block<D, KT>(dqkv + ((i64)b * Tn + i0) * ld + (i64)h * D, ld, sK, sdS + ((i - 1) & 1) * C::kMaxT * PS,
                          min(BM, Tn - i0), n_kt, first_unit, scale, lo, g, t,
                          bias_part ? sQsum + tid * C::kQs : nullptr);
    }
    if (i < n_qb && kactive) {
      const int buf = i & 1, i0 = i * BM;
      const int q_valid = min(BM, Tn - i0);
      const bf16* sKw = sK + key0 * P;
      const bf16* sVw = sV + key0 * P;
      bf16* sdSw = sdS + buf * C::kMaxT * PS + key0 * PS;
      const MaskTile mt{mk, bh, key0, i0};
      if (q_valid == BM)
        res_dkv_block<D, BM, PS, true, kDropout>(sKw, sVw, sQ + buf * BM * P, sdO + buf * BM * P, sLse2 + i0,
                                                 sD + i0, q_valid, sl2, kok, lo, g, t, dk, dv, sdSw, mt);
      else
        res_dkv_block<D, BM, PS, false, kDropout>(sKw, sVw, sQ + buf * BM * P, sdO + buf * BM * P, sLse2 + i0,
                                                  sD + i0, q_valid, sl2, kok, lo, g, t, dk, dv, sdSw, mt);
    }
  }

  if (kactive) {
    if constexpr (kDropout) {  // dV summed (Pᵀ ⊙ Z) dO: the keep scale once
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dv[n][e] *= mk.scale;
    }
    // Round to bf16 once: the values stored are the values summed for the bias.
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const uint32_t kv = pack_bf16(dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
        const uint32_t vv = pack_bf16(dv[n][2 * r], dv[n][2 * r + 1]);
        const float2 kf = unpack_bf16(kv), vf = unpack_bf16(vv);
        const bool ok = key0 + g + 8 * r < Tn;
        dk[n][2 * r] = ok ? kf.x : 0.f, dk[n][2 * r + 1] = ok ? kf.y : 0.f;
        dv[n][2 * r] = ok ? vf.x : 0.f, dv[n][2 * r + 1] = ok ? vf.y : 0.f;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = key0 + g + 8 * r;
      if (key < Tn) {
        bf16* dkr = dqkv + ((i64)b * Tn + key) * ld + (i64)H * D + (i64)h * D + 2 * t;
        bf16* dvr = dkr + (i64)H * D;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {  // exact: the values are bf16 already
          *reinterpret_cast<uint32_t*>(dkr + n * 8) = pack_bf16(dk[n][2 * r], dk[n][2 * r + 1]);
          *reinterpret_cast<uint32_t*>(dvr + n * 8) = pack_bf16(dv[n][2 * r], dv[n][2 * r + 1]);
        }
      }
    }
  }
  if (!with_bias) return;

  // The qkv bias gradient's share of this (b, h): per-warp column sums in the warp's own shared-memory row
  // (no barrier needed to start: with one CTA per SM, a barrier here would idle the SM while the slowest
  // warp finishes), then, after one barrier, the warps' rows added in order.
  float* mine = sBias + warp * 3 * D;
  for (int c = lane; c < 3 * D; c += 32) mine[c] = 0.f;
  __syncwarp();
  // Lanes with the same t hold the same columns for rows g and g + 8: fold over g (lane bits 2..4).
  auto fold = [](float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    v += __shfl_xor_sync(0xffffffffu, v, 8);
    return v + __shfl_xor_sync(0xffffffffu, v, 16);
  };
  if (first_unit >= 0 && first_unit < C::kUnits) {  // this warp's dQ unit: columns c0 + 8n + 2t + j
    const int c0 = (first_unit / C::kUnitsM) * C::kDG * 16;
#pragma unroll
    for (int n = 0; n < 2 * C::kDG; ++n)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float s = fold(sQsum[tid * C::kQs + 2 * n + j]);
        if (g == 0) mine[c0 + 8 * n + 2 * t + j] = s;
      }
  }
  if (kactive) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float sk = fold(dk[n][j] + dk[n][2 + j]), sv = fold(dv[n][j] + dv[n][2 + j]);
        if (g == 0) {
          mine[D + 8 * n + 2 * t + j] = sk;
          mine[2 * D + 8 * n + 2 * t + j] = sv;
        }
      }
  }
  __syncthreads();
  for (int c = tid; c < 3 * D; c += NT) {
    float s = 0.f;
    for (int w = 0; w < KT; ++w) s += sBias[w * 3 * D + c];
    const int part = c / D;  // 0 q, 1 k, 2 v: the qkv layout's (3, H, D) columns
    bias_part[(i64)b * 3 * H * D + ((i64)part * H + h) * D + c % D] = s;
  }
}

template <int D, int KT>
void launch_resident_bwd(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                         int Tn, int H, float scale, const MaskParams& mk, float* bias_part, cudaStream_t stream) {
  using C = ResBwdCfg<D, KT>;
  const i64 blocks = (i64)B * H;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H = ", blocks, " is too large for one launch");
  auto kernel = mk.on ? resident_bwd_kernel<D, KT, true> : resident_bwd_kernel<D, KT, false>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  kernel<<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(dqkv, dout, qkv, out, lse, Tn, H, scale, mk, bias_part);
  CUDA_CHECK_LAUNCH();
}

// Key tiles (warps) of the instantiated kernels: 8 (T <= 128, 2 CTAs per SM), 13 (T <= 208, ViT at 224 px),
// 16 (T <= 256). Any of them leaves at most 128 registers a thread (13 warps put 4 on some SM sub-partition),
// and dK, dV take D of them: d <= 64 only (ptxas -v: d = 64 spills 24 bytes, d = 80 over 100).
constexpr int resident_bwd_max_tiles(int d) { return d <= 64 ? 16 : 0; }

template <int D>
void dispatch_resident_bwd(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                           int Tn, int H, float scale, const MaskParams& mk, float* bias_part, cudaStream_t stream) {
  const int tiles = (Tn + 15) / 16;
  if (tiles <= 8) return launch_resident_bwd<D, 8>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, bias_part, stream);
  if (tiles <= 13) return launch_resident_bwd<D, 13>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, bias_part, stream);
  if constexpr (resident_bwd_max_tiles(D) >= 16) {
    if (tiles <= 16) return launch_resident_bwd<D, 16>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, bias_part, stream);
  }
  VIT_ASSERT(false, "resident_backward: no kernel for T = ", Tn, ", d = ", D);
}

}  // namespace

bool resident_backward_supports(int Tn, int d) { return (Tn + 15) / 16 <= resident_bwd_max_tiles(d); }

void resident_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                       int Tn, int H, int d, float scale, const MaskParams& mk, cudaStream_t stream,
                       float* bias_part) {
  VIT_ASSERT(resident_backward_supports(Tn, d), "resident_backward: T = ", Tn, ", d = ", d, " not supported");
  switch (d) {
    case 32: return dispatch_resident_bwd<32>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, bias_part, stream);
    case 64: return dispatch_resident_bwd<64>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, bias_part, stream);
    default: break;
  }
  VIT_ASSERT(false, "resident_backward: no kernel for T = ", Tn, ", d = ", d);
}

}  // namespace vit::gpu::attn
