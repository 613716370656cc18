// Private to the m32 attention forward (attention_fwd_m32.cu): the work of one warp that owns up to KMT m16
// query tiles (KMT·16 rows) on one block of keys, with the online softmax. It is fwd_block
// (attention_fwd_block.cuh) with every K and V fragment read from shared memory feeding MT MMAs instead of one,
// which halves the ldmatrix traffic per MMA at MT = 2 (at d = 64 the flash kernel moves more bytes through
// shared memory per key block than its MMAs take cycles). See attention_tiles.cuh for the fragment layouts.
#pragma once
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {

// One key block (BN keys) for the first MT of the warp's KMT query tiles (the rest lie wholly past T):
// S = Q Kᵀ (MT·16, BN), the online-softmax update, O += P V.
// kFull: all BN keys exist, so the masking and the per-slice guards compile away.
// kQReg: Q comes as A-fragments in qreg (loaded once per kernel); otherwise sQw points at the warp's KMT·16
// rows of Q in shared memory, read again on every block (one ldmatrix per tile and 16 columns).
template <int D, int BN, int KMT, int MT, bool kFull, bool kQReg>
__device__ __forceinline__ void fwd_block_m32(const uint32_t (&qreg)[KMT][D / 16][4], const bf16* sQw,
                                              const bf16* sKb, const bf16* sVb, int kv_valid, float sl2,
                                              const LaneOffsets& lo, int t, float (&o)[KMT][D / 8][4],
                                              float (&m_run)[KMT][2], float (&l_run)[KMT][2]) {
  static_assert(MT >= 1 && MT <= KMT, "MT tiles of the KMT a warp owns");
  constexpr int P = D + kPad;
  // S = Q Kᵀ; s[mt][n] holds keys 8n..8n+7 of the block for tile mt. 16-key slices wholly past T are skipped.
  float s[MT][BN / 8][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t qa[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if constexpr (kQReg) {
#pragma unroll
        for (int e = 0; e < 4; ++e) qa[mt][e] = qreg[mt][kk][e];
      } else {
        ldsm_x4(qa[mt], smem_addr(sQw + (mt * 16 + lo.a_row) * P + kk * 16 + lo.a_col));
      }
    }
#pragma unroll
    for (int np = 0; np < BN / 16; ++np) {
      if (kFull || np * 16 < kv_valid) {
        uint32_t kb[4];  // one K fragment, MT uses
        ldsm_x4(kb, smem_addr(sKb + (np * 16 + lo.bn_row) * P + kk * 16 + lo.bn_col));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(s[mt][2 * np], qa[mt], kb[0], kb[1]);
          mma_16816(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
        }
      }
    }
  }
  if (!kFull) {  // keys past T do not exist
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (n * 8 + 2 * t + (e & 1) >= kv_valid) s[mt][n][e] = -INFINITY;
  }

  // Online softmax per tile (stale_max_update: the running max moves, and what was accumulated is rescaled,
  // only when a row's max grew by more than 2^8), P = exp(scale·(S − running max)).
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float mx[2] = {m_run[mt][0], m_run[mt][1]};
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[mt][n][0], s[mt][n][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[mt][n][2], s[mt][n][3]));
    }
    float corr[2], msc[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = quad_max(mx[r]);  // finite: every block has a real key
    const bool rescale = stale_max_update(m_run[mt], mx, sl2, corr);
#pragma unroll
    for (int r = 0; r < 2; ++r) msc[r] = m_run[mt][r] * sl2;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      if (kFull || n * 8 < kv_valid) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = fast_exp2(fmaf(s[mt][n][e], sl2, -msc[e >> 1]));  // masked: 2^-inf = 0
          s[mt][n][e] = p;
          rs[e >> 1] += p;
        }
      } else {  // 8 keys all past T: no exp needed
        s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
      }
    }
    if (rescale) {
#pragma unroll
      for (int r = 0; r < 2; ++r) l_run[mt][r] *= corr[r];
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        o[mt][n][0] *= corr[0];
        o[mt][n][1] *= corr[0];
        o[mt][n][2] *= corr[1];
        o[mt][n][3] *= corr[1];
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[mt][r] += rs[r];
  }

  // O += P V: k runs over the block's keys in 16-key slices; each V fragment feeds the MT tiles.
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) {
    if (kFull || kk * 16 < kv_valid) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) c_pair_to_a(pa[mt], s[mt][2 * kk], s[mt][2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t vb[4];
        ldsm_x4_trans(vb, smem_addr(sVb + (kk * 16 + lo.bk_row) * P + dp * 16 + lo.bk_col));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(o[mt][2 * dp], pa[mt], vb[0], vb[1]);
          mma_16816(o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
  }
}

}  // namespace vit::gpu::attn
