// Fused attention backward, as two tensor-core passes that each reduce only inside registers, so there is no
// fp32 dQ accumulator, no atomics, no memset and no convert kernel, and the result is deterministic:
//
//   pass 1, dQ  (one CTA per (b, h, block of query rows), a warp per 16 query rows, keys streamed):
//       D_i = dO_i · O_i (also written to the workspace for pass 2),
//       S = Q Kᵀ, P = exp(scale·S − lse), dP = dO Vᵀ, dS = P ⊙ (dP − D), dQ += dS K;  dq = scale·dQ.
//   pass 2, dK dV (one CTA per (b, h, block of key rows), a warp per 16 key rows, queries streamed):
//       Sᵀ = K Qᵀ, Pᵀ = exp(scale·Sᵀ − lse), dV += Pᵀ dO, dPᵀ = V dOᵀ, dSᵀ = Pᵀ ⊙ (dPᵀ − D), dK += dSᵀ Q;
//       dk = scale·dK.
// Pass 1 recomputes S and dP that pass 2 computes again (7 tile products instead of 5), which costs less
// than the fp32 dQ accumulator's memory traffic at ViT sequence lengths. All of dqkv is written (=).
//
// Attention dropout (kDropout, separate instantiations; mask Z, keep scale s): D is that of the dropped O,
// dS = P ⊙ (Z s dP − D) in both passes and dV += (P ⊙ Z)ᵀ dO, scaled by s once at the end.
#include "engine/cuda_check.h"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

// ---------------------------------------------------------------------------------------------------------
// Pass 1: dQ (and D)
// ---------------------------------------------------------------------------------------------------------

// Tiling of both passes: BLK = rows of the streamed operand per step (keys in pass 1, queries in pass 2),
// MINB = CTAs per SM the registers are capped for (2: at most 128 registers a thread).
template <int D, int BLK, int MINB>
struct DqCfg {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBM = 16 * kWarps;  // query rows per CTA
  static constexpr int kBN = BLK;          // keys per step (S and dP: kBN/2 floats each per thread)
  static constexpr int kPitch = D + kPad;
  // sQ, sdO (kBM rows each) + sK, sV (2 buffers of kBN rows each)
  static constexpr int kSmem = (2 * kBM + 4 * kBN) * kPitch * (int)sizeof(bf16);
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
  static_assert(BLK % 16 == 0, "keys per step must be a multiple of 16");
};

// One key block of pass 1 for one warp (16 query rows): S and dP (16, BN), dS, dQ += dS K.
// sQw / sdOw point at the warp's 16 rows of Q and dO. kFull: all BN keys exist (guards compile away).
// kDropout: the mask of tile mt (rows: the warp's queries, columns: the block's keys).
template <int D, int BN, bool kFull, bool kDropout>
__device__ __forceinline__ void dq_block(const bf16* sQw, const bf16* sdOw, const bf16* sKb, const bf16* sVb,
                                         int kv_valid, float sl2, const float (&lse2)[2], const float (&Drow)[2],
                                         const LaneOffsets& lo, int t, float (&dq)[D / 8][4], const MaskTile& mt) {
  constexpr int P = D + kPad;
  // S = Q Kᵀ and dP = dO Vᵀ; n-block n holds keys 8n..8n+7 of the block.
  float s[BN / 8][4], dp[BN / 8][4];
#pragma unroll
  for (int n = 0; n < BN / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t qa[4], ga[4];
    ldsm_x4(qa, smem_addr(sQw + lo.a_row * P + kk * 16 + lo.a_col));
    ldsm_x4(ga, smem_addr(sdOw + lo.a_row * P + kk * 16 + lo.a_col));
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
      if (kFull || np * 16 < kv_valid) {
        uint32_t kb[4], vb[4];
        ldsm_x4(kb, smem_addr(sKb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
        mma_16816(s[2 * np], qa, kb[0], kb[1]);
        mma_16816(s[2 * np + 1], qa, kb[2], kb[3]);
        ldsm_x4(vb, smem_addr(sVb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
        mma_16816(dp[2 * np], ga, vb[0], vb[1]);
        mma_16816(dp[2 * np + 1], ga, vb[2], vb[3]);
      }
    }
  }
  // dS = P ⊙ (dP − D) with P = exp(scale·S − lse); keys past T get P = 0. Stored over s.
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    if (kFull || n * 8 < kv_valid) {
      if constexpr (kDropout) {  // dP of the dropped entries is 0, of the kept s·dP
        uint32_t m[2];
        keep_masks<false>(m, mt.mk, mt.bh, mt.row0, mt.col0 + n * 8, (threadIdx.x & 31) >> 2, t);
#pragma unroll
        for (int e = 0; e < 4; ++e) dp[n][e] = keep_or_zero(dp[n][e] * mt.mk.scale, m[e >> 1], e & 1);
      }
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool key_ok = kFull || n * 8 + 2 * t + (e & 1) < kv_valid;
        const float p = key_ok ? fast_exp2(fmaf(s[n][e], sl2, -lse2[e >> 1])) : 0.f;
        s[n][e] = p * (dp[n][e] - Drow[e >> 1]);
      }
    } else {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    }
  }
  // dQ += dS K: k runs over the block's keys; K is read transposed ([key][d] is B stored [k][n]).
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    if (kFull || kk * 16 < kv_valid) {
      uint32_t da[4];
      c_pair_to_a(da, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t kb[4];
        ldsm_x4_trans(kb, smem_addr(sKb + (kk * 16 + lo.bk_row) * P + dd * 16 + lo.bk_col));
        mma_16816(dq[2 * dd], da, kb[0], kb[1]);
        mma_16816(dq[2 * dd + 1], da, kb[2], kb[3]);
      }
    }
  }
}

template <int D, int BLK, int MINB, bool kDropout>
__global__ void __launch_bounds__(DqCfg<D, BLK, MINB>::kThreads, MINB)
    flash_bwd_dq_kernel(bf16* __restrict__ dqkv, float* __restrict__ Dws, const bf16* __restrict__ dout,
                        const bf16* __restrict__ qkv, const bf16* __restrict__ out, const float* __restrict__ lse,
                        int Tn, int H, int n_qblk, float scale, MaskParams mk) {
  using C = DqCfg<D, BLK, MINB>;
  constexpr int P = C::kPitch, BM = C::kBM, BN = C::kBN;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BM, P)
  bf16* sdO = sQ + BM * P;                   // (BM, P)
  bf16* sK = sdO + BM * P;                   // (2, BN, P)
  bf16* sV = sK + 2 * BN * P;                // (2, BN, P)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets lo(lane);
  const int bh = blockIdx.x / n_qblk;
  const int b = bh / H, h = bh % H;
  const int q0 = (blockIdx.x % n_qblk) * BM;
  const i64 ld = 3LL * H * D;  // token stride of qkv / dqkv (B, T, 3, H, D)
  const i64 ldo = (i64)H * D;  // token stride of out / dout (B, T, H, D)
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;
  const bf16* kg = qg + (i64)H * D;
  const bf16* vg = qg + 2LL * H * D;
  const bf16* og = out + (i64)b * Tn * ldo + (i64)h * D;    // O of token 0
  const bf16* gg = dout + (i64)b * Tn * ldo + (i64)h * D;   // dO of token 0
  const int n_kv = (Tn + BN - 1) / BN;
  const int row0 = q0 + warp * 16;
  const bool active = row0 < Tn;

  load_rows<BM, D, C::kThreads>(sQ, qg + (i64)q0 * ld, ld, Tn - q0, tid);
  load_rows<BM, D, C::kThreads>(sdO, gg + (i64)q0 * ldo, ldo, Tn - q0, tid);
  load_rows<BN, D, C::kThreads>(sK, kg, ld, Tn, tid);
  load_rows<BN, D, C::kThreads>(sV, vg, ld, Tn, tid);
  cp_async_commit();

  // While the copies fly: D and lse of this lane's rows g and g+8, straight from global memory.
  // Rows past T get D = 0 and lse = 0 (their Q and dO are zero, so dS = 0 there; they are never stored).
  float Drow[2] = {0.f, 0.f}, lse2[2] = {0.f, 0.f};
  if (active) {
#pragma unroll  // all 16 rows' loads in flight at once
    for (int rr = 0; rr < 16; ++rr) {
      const int row = row0 + rr;
      float acc = 0.f;
      if (row < Tn) {
#pragma unroll
        for (int c0 = 0; c0 < D; c0 += 64) {  // lane reads the element pair c0 + 2·lane
          const int c = c0 + 2 * lane;
          if (c < D) {
            const float2 ov = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(og + row * ldo + c));
            const float2 gv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(gg + row * ldo + c));
            acc = fmaf(ov.x, gv.x, fmaf(ov.y, gv.y, acc));
          }
        }
      }
      acc = warp_sum(acc);  // every lane holds D of row rr
      if (rr == g) Drow[0] = acc;
      if (rr == g + 8) Drow[1] = acc;
      if (lane == 0 && row < Tn) Dws[(i64)bh * Tn + row] = acc;
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = row0 + g + 8 * r;
      if (row < Tn) lse2[r] = lse[(i64)bh * Tn + row] * kLog2e;
    }
  }

  const float sl2 = scale * kLog2e;
  float dq[D / 8][4];  // dQ accumulator (16, D) per warp
#pragma unroll
  for (int n = 0; n < D / 8; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  // One barrier per step (as in flash_fwd_kernel): it publishes block j and frees buffer buf ^ 1 (block j-1)
  // for the prefetch of block j+1, which then overlaps step j's math.
  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BN;
      load_rows<BN, D, C::kThreads>(sK + (buf ^ 1) * BN * P, kg + (i64)k1 * ld, ld, Tn - k1, tid);
      load_rows<BN, D, C::kThreads>(sV + (buf ^ 1) * BN * P, vg + (i64)k1 * ld, ld, Tn - k1, tid);
      cp_async_commit();
    }

    if (active) {
      const bf16* sKb = sK + buf * BN * P;
      const bf16* sVb = sV + buf * BN * P;
      const bf16* sQw = sQ + warp * 16 * P;
      const bf16* sdOw = sdO + warp * 16 * P;
      const int kv_valid = min(BN, Tn - j * BN);  // keys of this block that exist (>= 1)
      const MaskTile mt{mk, bh, row0, j * BN};
      if (kv_valid == BN)
        dq_block<D, BN, true, kDropout>(sQw, sdOw, sKb, sVb, kv_valid, sl2, lse2, Drow, lo, t, dq, mt);
      else
        dq_block<D, BN, false, kDropout>(sQw, sdOw, sKb, sVb, kv_valid, sl2, lse2, Drow, lo, t, dq, mt);
    }
  }

  if (!active) return;
  // dq = scale · dQ into the q part of dqkv.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + g + 8 * r;
    if (row < Tn) {
      bf16* dst = dqkv + ((i64)b * Tn + row) * ld + (i64)h * D + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8) = pack_bf16(dq[n][2 * r] * scale, dq[n][2 * r + 1] * scale);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Pass 2: dK, dV
// ---------------------------------------------------------------------------------------------------------

template <int D, int BLK, int MINB>
struct DkvCfg {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBN = 16 * kWarps;  // key rows per CTA
  static constexpr int kBM = BLK;          // queries per step (Sᵀ and dPᵀ: kBM/2 floats each per thread)
  static constexpr int kPitch = D + kPad;
  // sK, sV (kBN rows each) + sQ, sdO (2 buffers of kBM rows each) + lse, D (2 buffers of kBM floats each)
  static constexpr int kSmem = (2 * kBN + 4 * kBM) * kPitch * (int)sizeof(bf16) + 4 * kBM * (int)sizeof(float);
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
  static_assert(BLK % 16 == 0, "queries per step must be a multiple of 16");
  static_assert(kThreads >= 2 * kBM, "lse and D are copied one float per thread");
};

// One query block of pass 2 for one warp (16 key rows): Sᵀ, Pᵀ, dV += Pᵀ dO, dPᵀ, dSᵀ, dK += dSᵀ Q.
// sKw / sVw point at the warp's 16 rows of K and V. kFull: all BM queries exist (guards compile away).
// kDropout: the mask of tile mt (rows: the warp's keys, columns: the block's queries); dV then sums (P ⊙ Z)ᵀ dO
// and the caller applies the keep scale.
template <int D, int BM, bool kFull, bool kDropout>
__device__ __forceinline__ void dkv_block(const bf16* sKw, const bf16* sVw, const bf16* sQb, const bf16* sdOb,
                                          const float* sLseb, const float* sDb, int q_valid, float sl2,
                                          const LaneOffsets& lo, int t, float (&dk)[D / 8][4],
                                          float (&dv)[D / 8][4], const MaskTile& mt) {
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
  // Pᵀ = exp(scale·Sᵀ − lse[query]); queries past T get 0.
  static_assert(!kDropout || BM <= 64, "pack_keep holds 8 n-blocks");
  [[maybe_unused]] uint32_t kbits = 0;  // keep masks of the block's n-blocks (pack_keep)
#pragma unroll
  for (int n = 0; n < BM / 8; ++n) {
    if (kFull || n * 8 < q_valid) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int q = n * 8 + 2 * t + (e & 1);
        s[n][e] = (kFull || q < q_valid) ? fast_exp2(fmaf(s[n][e], sl2, -sLseb[q] * kLog2e)) : 0.f;
      }
      if constexpr (kDropout) {
        uint32_t m[2];
        keep_masks<true>(m, mt.mk, mt.bh, mt.row0, mt.col0 + n * 8, (threadIdx.x & 31) >> 2, t);
        kbits |= pack_keep(m, n);
      }
    } else {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    }
  }
  // dV += Pᵀ dO: k runs over queries; dO is read transposed ([query][d] is B stored [k][n]).
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) {
    if (kFull || kk * 16 < q_valid) {
      uint32_t pa[4];
      c_pair_to_a(pa, s[2 * kk], s[2 * kk + 1]);
      if constexpr (kDropout) {  // P ⊙ Z: the masks clear dropped bf16 halves (c_pair_to_a's register order)
        pa[0] &= unpack_keep(kbits, 2 * kk, 0);
        pa[1] &= unpack_keep(kbits, 2 * kk, 1);
        pa[2] &= unpack_keep(kbits, 2 * kk + 1, 0);
        pa[3] &= unpack_keep(kbits, 2 * kk + 1, 1);
      }
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t gb[4];
        ldsm_x4_trans(gb, smem_addr(sdOb + (kk * 16 + lo.bk_row) * P + dd * 16 + lo.bk_col));
        mma_16816(dv[2 * dd], pa, gb[0], gb[1]);
        mma_16816(dv[2 * dd + 1], pa, gb[2], gb[3]);
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
  // dSᵀ = Pᵀ ⊙ (dPᵀ − D[query]), stored over s (masked queries stay 0: P = 0 and D = 0 there); with dropout
  // dPᵀ is Z s dPᵀ.
#pragma unroll
  for (int n = 0; n < BM / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (kDropout)
        dpt[n][e] = keep_or_zero(dpt[n][e] * mt.mk.scale, unpack_keep(kbits, n, e >> 1), e & 1);
      s[n][e] *= dpt[n][e] - sDb[n * 8 + 2 * t + (e & 1)];
    }
  // dK += dSᵀ Q: k runs over queries; Q is read transposed.
#pragma unroll
  for (int kk = 0; kk < BM / 16; ++kk) {
    if (kFull || kk * 16 < q_valid) {
      uint32_t da[4];
      c_pair_to_a(da, s[2 * kk], s[2 * kk + 1]);
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

template <int D, int BLK, int MINB, bool kDropout>
__global__ void __launch_bounds__(DkvCfg<D, BLK, MINB>::kThreads, MINB)
    flash_bwd_dkv_kernel(bf16* __restrict__ dqkv, const float* __restrict__ Dws, const bf16* __restrict__ dout,
                         const bf16* __restrict__ qkv, const float* __restrict__ lse, int Tn, int H, int n_kblk,
                         float scale, MaskParams mk) {
  using C = DkvCfg<D, BLK, MINB>;
  constexpr int P = C::kPitch, BM = C::kBM, BN = C::kBN;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sK = reinterpret_cast<bf16*>(smem);                  // (BN, P)
  bf16* sV = sK + BN * P;                                    // (BN, P)
  bf16* sQ = sV + BN * P;                                    // (2, BM, P)
  bf16* sdO = sQ + 2 * BM * P;                               // (2, BM, P)
  float* sLse = reinterpret_cast<float*>(sdO + 2 * BM * P);  // (2, BM)
  float* sD = sLse + 2 * BM;                                 // (2, BM)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets lo(lane);
  const int bh = blockIdx.x / n_kblk;
  const int b = bh / H, h = bh % H;
  const int k0 = (blockIdx.x % n_kblk) * BN;
  const i64 ld = 3LL * H * D;
  const i64 ldo = (i64)H * D;
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;
  const bf16* kg = qg + (i64)H * D;
  const bf16* vg = qg + 2LL * H * D;
  const bf16* gg = dout + (i64)b * Tn * ldo + (i64)h * D;
  const float* lse_bh = lse + (i64)bh * Tn;
  const float* D_bh = Dws + (i64)bh * Tn;
  const int n_q = (Tn + BM - 1) / BM;
  const int key0 = k0 + warp * 16;  // this warp's first key row
  const bool active = key0 < Tn;

  // Queries [i0, i0 + BM) into buffer `buf`: Q and dO rows, lse and D (rows past T zero-filled).
  auto load_query_block = [&](int i0, int buf) {
    load_rows<BM, D, C::kThreads>(sQ + buf * BM * P, qg + (i64)i0 * ld, ld, Tn - i0, tid);
    load_rows<BM, D, C::kThreads>(sdO + buf * BM * P, gg + (i64)i0 * ldo, ldo, Tn - i0, tid);
    if (tid < BM) {
      const bool ok = i0 + tid < Tn;
      cp_async_4(sLse + buf * BM + tid, lse_bh + (ok ? i0 + tid : 0), ok);
    } else if (tid < 2 * BM) {
      const int r = tid - BM;
      const bool ok = i0 + r < Tn;
      cp_async_4(sD + buf * BM + r, D_bh + (ok ? i0 + r : 0), ok);
    }
  };

  load_rows<BN, D, C::kThreads>(sK, kg + (i64)k0 * ld, ld, Tn - k0, tid);
  load_rows<BN, D, C::kThreads>(sV, vg + (i64)k0 * ld, ld, Tn - k0, tid);
  load_query_block(0, 0);
  cp_async_commit();

  const float sl2 = scale * kLog2e;
  float dk[D / 8][4], dv[D / 8][4];  // (16 keys, D) per warp
#pragma unroll
  for (int n = 0; n < D / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;

  for (int i = 0; i < n_q; ++i) {  // one barrier per step, as in pass 1
    const int buf = i & 1;
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_q) {
      load_query_block((i + 1) * BM, buf ^ 1);
      cp_async_commit();
    }

    if (active) {
      const bf16* sQb = sQ + buf * BM * P;
      const bf16* sdOb = sdO + buf * BM * P;
      const bf16* sKw = sK + warp * 16 * P;
      const bf16* sVw = sV + warp * 16 * P;
      const int q_valid = min(BM, Tn - i * BM);  // queries of this block that exist (>= 1)
      const MaskTile mt{mk, bh, key0, i * BM};
      if (q_valid == BM)
        dkv_block<D, BM, true, kDropout>(sKw, sVw, sQb, sdOb, sLse + buf * BM, sD + buf * BM, q_valid, sl2, lo, t, dk,
                                         dv, mt);
      else
        dkv_block<D, BM, false, kDropout>(sKw, sVw, sQb, sdOb, sLse + buf * BM, sD + buf * BM, q_valid, sl2, lo, t,
                                          dk, dv, mt);
    }
  }

  if (!active) return;
  if constexpr (kDropout) {  // dV summed (P ⊙ Z)ᵀ dO: the keep scale once
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dv[n][e] *= mk.scale;
  }
  // dk = scale · dK and dv into the k and v parts of dqkv.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key0 + g + 8 * r;
    if (key < Tn) {
      bf16* dkr = dqkv + ((i64)b * Tn + key) * ld + (i64)H * D + (i64)h * D + 2 * t;
      bf16* dvr = dkr + (i64)H * D;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        *reinterpret_cast<uint32_t*>(dkr + n * 8) = pack_bf16(dk[n][2 * r] * scale, dk[n][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dvr + n * 8) = pack_bf16(dv[n][2 * r], dv[n][2 * r + 1]);
      }
    }
  }
}

template <int D, int BLK, int MINB, bool kDropout>
void launch_bwd_masked(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                       int H, float scale, const MaskParams& mk, float* Dws, cudaStream_t stream) {
  using Q = DqCfg<D, BLK, MINB>;
  using KV = DkvCfg<D, BLK, MINB>;
  const int n_qblk = (Tn + Q::kBM - 1) / Q::kBM;
  const int n_kblk = (Tn + KV::kBN - 1) / KV::kBN;
  const i64 blocks_q = (i64)n_qblk * B * H, blocks_kv = (i64)n_kblk * B * H;
  VIT_REQUIRE(blocks_q < (1LL << 31) && blocks_kv < (1LL << 31), "attention: B·H·T too large for one launch");

  // Pass 1 writes D for pass 2 (same stream: ordered).
  auto dq_kernel = flash_bwd_dq_kernel<D, BLK, MINB, kDropout>;
  CUDA_CHECK(cudaFuncSetAttribute(dq_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Q::kSmem));
  dq_kernel<<<(unsigned)blocks_q, Q::kThreads, Q::kSmem, stream>>>(dqkv, Dws, dout, qkv, out, lse, Tn, H, n_qblk,
                                                                    scale, mk);
  CUDA_CHECK_LAUNCH();
  auto dkv_kernel = flash_bwd_dkv_kernel<D, BLK, MINB, kDropout>;
  CUDA_CHECK(cudaFuncSetAttribute(dkv_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, KV::kSmem));
  dkv_kernel<<<(unsigned)blocks_kv, KV::kThreads, KV::kSmem, stream>>>(dqkv, Dws, dout, qkv, lse, Tn, H, n_kblk,
                                                                       scale, mk);
  CUDA_CHECK_LAUNCH();
}

template <int D, int BLK, int MINB>
void launch_bwd(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn, int H,
                float scale, const MaskParams& mk, float* Dws, cudaStream_t stream) {
  if (mk.on) return launch_bwd_masked<D, BLK, MINB, true>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
  launch_bwd_masked<D, BLK, MINB, false>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
}

}  // namespace

// Tilings (from -Xptxas -v, no spills): d <= 64 steps of 32 rows at 2 CTAs (16 warps) per SM; wider heads
// steps of 32 rows at 1 CTA per SM. Variant::flash_wide tries 64-row steps at 1 CTA per SM for d = 64.
void flash_backward(Variant v, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                    int Tn, int H, int d, float scale, const MaskParams& mk, float* Dws, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_bwd<32, 32, 2>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
    case 64:
      if (v == Variant::flash_wide)
        return launch_bwd<64, 64, 1>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
      return launch_bwd<64, 32, 2>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
    case 80: return launch_bwd<80, 32, 1>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
    case 96: return launch_bwd<96, 32, 1>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
    case 128: return launch_bwd<128, 32, 1>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, Dws, stream);
    default: VIT_ASSERT(false, "flash_backward: no kernel for head dim ", d);
  }
}

}  // namespace vit::gpu::attn
