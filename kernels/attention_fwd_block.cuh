// Private to the fused attention forward kernels (attention_fwd.cu, attention_fwd_resident.cu): the work of one
// warp (16 query rows) on one block of keys, with the online softmax. See attention_tiles.cuh for the
// fragment layouts.
#pragma once
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {

// One key block for one warp: S = Q Kᵀ (16, BN), the online-softmax update, O += P V.
// kFull: all BN keys exist, so the masking and the per-slice guards compile away.
// kQReg: the warp's Q A-fragments come in qreg (loaded once per CTA); otherwise sQw points at the warp's 16
// rows of Q, re-read from shared memory each block (holding them costs D/4 registers, which the streaming
// kernel at d = 64 cannot spare under the 128 that 2 CTAs per SM allow).
// kDropout: attention dropout with the mask of tile mt (rows: the warp's queries, columns: the block's keys).
// The dropped P enters O only; l (and so lse) sums the undropped P, and the caller applies the keep scale with
// 1 / l. Without it mt is unused and the code is the plain one.
template <int D, int BN, bool kFull, bool kQReg, bool kDropout = false>
__device__ __forceinline__ void fwd_block(const uint32_t (&qreg)[D / 16][4], const bf16* sQw, const bf16* sKb,
                                          const bf16* sVb, int kv_valid, float sl2, const LaneOffsets& lo, int t,
                                          float (&o)[D / 8][4], float (&m_run)[2], float (&l_run)[2],
                                          const MaskTile& mt = {}) {
  constexpr int P = D + kPad;
  // S = Q Kᵀ; n-block n holds keys 8n..8n+7 of the block. 16-key slices wholly past T are skipped.
  float s[BN / 8][4];
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t qa[4];
    if (kQReg) {
#pragma unroll
      for (int e = 0; e < 4; ++e) qa[e] = qreg[kk][e];
    } else {
      ldsm_x4(qa, smem_addr(sQw + lo.a_row * P + kk * 16 + lo.a_col));
    }
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
      if (kFull || np * 16 < kv_valid) {
        uint32_t kb[4];
        ldsm_x4(kb, smem_addr(sKb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
        mma_16816(s[2 * np], qa, kb[0], kb[1]);
        mma_16816(s[2 * np + 1], qa, kb[2], kb[3]);
      }
    }
  }
  if (!kFull) {  // keys past T do not exist
#pragma unroll
    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (n * 8 + 2 * t + (e & 1) >= kv_valid) s[n][e] = -INFINITY;
  }

  // Online softmax: new running max, rescale factor for what was accumulated, P = exp(scale·(S − max)).
  float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
  }
  float corr[2], msc[2], rs[2] = {0.f, 0.f};
#pragma unroll
  for (int r = 0; r < 2; ++r) mx[r] = quad_max(mx[r]);  // finite: every block has a real key
  const bool rescale = stale_max_update(m_run, mx, sl2, corr);  // the max moves only when it grew by > 2^8
#pragma unroll
  for (int r = 0; r < 2; ++r) msc[r] = m_run[r] * sl2;
#pragma unroll
  for (int n = 0; n < BN / 8; ++n) {
    if (kFull || n * 8 < kv_valid) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = fast_exp2(fmaf(s[n][e], sl2, -msc[e >> 1]));  // masked: 2^-inf = 0
        s[n][e] = p;
        rs[e >> 1] += p;
      }
      if constexpr (kDropout) {
        uint32_t m[2];
        keep_masks<false>(m, mt.mk, mt.bh, mt.row0, mt.col0 + n * 8, (threadIdx.x & 31) >> 2, t);
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] = keep_or_zero(s[n][e], m[e >> 1], e & 1);
      }
    } else {  // 8 keys all past T: no exp needed
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    }
  }
  if (rescale) {
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] *= corr[r];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= corr[0];
      o[n][1] *= corr[0];
      o[n][2] *= corr[1];
      o[n][3] *= corr[1];
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) l_run[r] += rs[r];

  // O += P V: k runs over the block's keys in 16-key slices.
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    if (kFull || kk * 16 < kv_valid) {
      uint32_t pa[4];
      c_pair_to_a(pa, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldsm_x4_trans(vb, smem_addr(sVb + (kk * 16 + lo.bk_row) * P + dp * 16 + lo.bk_col));
        mma_16816(o[2 * dp], pa, vb[0], vb[1]);
        mma_16816(o[2 * dp + 1], pa, vb[2], vb[3]);
      }
    }
  }
}

}  // namespace vit::gpu::attn
