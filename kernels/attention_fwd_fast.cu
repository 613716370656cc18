// Fused attention forward of Variant::fast: flash_fwd_kernel (attention_fwd.cu) re-tiled for fewer
// shared-memory reads and barriers per MMA.
//   - Each warp keeps its Q fragments in registers for the whole kernel: flash_fwd_kernel re-reads them with
//     ldmatrix on every key block (at d = 64 that is 4 of the 12 ldmatrix per 16 MMAs of a 16-key slice).
//     The registers come from smaller CTAs: 4 warps (64 query rows) and 3 CTAs per SM cap a thread at 168
//     registers instead of 128 (8 warps, 2 CTAs per SM).
//   - One barrier per key block instead of two: the barrier that publishes block j also proves every warp is
//     done with block j−1, so the prefetch of block j+1 is issued right after it, into that buffer.
//   - CTAs of 4 warps wait at their barriers for 4 warps, not 8, and three of them per SM drift apart, so one
//     CTA's copies overlap another's math.
// Tails as in flash_fwd_kernel (rows past T zero-filled and never stored, keys past T masked to -inf).
#include "engine/cuda_check.h"
#include "kernels/attention_fwd_block.cuh"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

template <int D>
struct FastFwdCfg {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBM = 16 * kWarps;  // query rows per CTA
  static constexpr int kBN = 64;           // keys per main-loop step
  static constexpr int kPitch = D + kPad;
  // sQ (kBM rows) + sK, sV (2 buffers of kBN rows each): 46 KB at d = 64, 87 KB at d = 128
  static constexpr int kSmem = (kBM + 4 * kBN) * kPitch * (int)sizeof(bf16);
  static constexpr int kMinBlocks = D <= 64 ? 3 : 2;  // 168 registers a thread for d <= 64, 255 above
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
};

// grid: n_qblk · B · H CTAs, query block fastest (the CTAs of one (b, h) run together and share K/V in L2).
template <int D>
__global__ void __launch_bounds__(FastFwdCfg<D>::kThreads, FastFwdCfg<D>::kMinBlocks)
    fast_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv, int Tn, int H,
                    int n_qblk, float scale) {
  using C = FastFwdCfg<D>;
  constexpr int P = C::kPitch, BM = C::kBM, BN = C::kBN;
  extern __shared__ __align__(16) unsigned char smem[];
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BM, P)
  bf16* sK = sQ + BM * P;                    // (2, BN, P)
  bf16* sV = sK + 2 * BN * P;                // (2, BN, P)

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const LaneOffsets lo(lane);
  const int bh = blockIdx.x / n_qblk;
  const int b = bh / H, h = bh % H;
  const int q0 = (blockIdx.x % n_qblk) * BM;
  const i64 ld = 3LL * H * D;
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;
  const bf16* kg = qg + (i64)H * D;
  const bf16* vg = qg + 2LL * H * D;
  const int n_kv = (Tn + BN - 1) / BN;
  const int row0 = q0 + warp * 16;
  const bool active = row0 < Tn;

  load_rows<BM, D, C::kThreads>(sQ, qg + (i64)q0 * ld, ld, Tn - q0, tid);
  load_rows<BN, D, C::kThreads>(sK, kg, ld, Tn, tid);
  load_rows<BN, D, C::kThreads>(sV, vg, ld, Tn, tid);
  cp_async_commit();

  const float sl2 = scale * kLog2e;
  float o[D / 8][4];
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  uint32_t qa[D / 16][4];
  const bf16* sQw = sQ + warp * 16 * P;

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    cp_async_wait<0>();  // this thread's copies of block j (and, at j = 0, Q) have landed
    __syncthreads();     // ... everyone's, and every warp is done with block j−1 (buffer buf ^ 1)
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BN;
      load_rows<BN, D, C::kThreads>(sK + (buf ^ 1) * BN * P, kg + (i64)k1 * ld, ld, Tn - k1, tid);
      load_rows<BN, D, C::kThreads>(sV + (buf ^ 1) * BN * P, vg + (i64)k1 * ld, ld, Tn - k1, tid);
      cp_async_commit();
    }
    if (!active) continue;  // no barrier depends on this warp's math
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qa[kk], smem_addr(sQw + lo.a_row * P + kk * 16 + lo.a_col));
    }
    const bf16* sKb = sK + buf * BN * P;
    const bf16* sVb = sV + buf * BN * P;
    const int kv_valid = min(BN, Tn - j * BN);
    if (kv_valid == BN)
      fwd_block<D, BN, true, true>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
    else
      fwd_block<D, BN, false, true>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
  }

  if (!active) return;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_run[r]);
    const float inv = 1.f / l;
    const int row = row0 + g + 8 * r;
    if (row < Tn) {
      bf16* orow = out + (((i64)b * Tn + row) * H + h) * D + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(orow + n * 8) = pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
      if (t == 0) lse[(i64)bh * Tn + row] = m_run[r] * scale + logf(l);
    }
  }
}

template <int D>
void launch_fast_fwd(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale, cudaStream_t stream) {
  using C = FastFwdCfg<D>;
  const int n_qblk = (Tn + C::kBM - 1) / C::kBM;
  const i64 blocks = (i64)n_qblk * B * H;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H·ceil(T/", C::kBM, ") = ", blocks, " CTAs is too many");
  CUDA_CHECK(cudaFuncSetAttribute(fast_fwd_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  fast_fwd_kernel<D><<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(out, lse, qkv, Tn, H, n_qblk, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void fast_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                  cudaStream_t stream) {
  switch (d) {
    case 32: return launch_fast_fwd<32>(out, lse, qkv, B, Tn, H, scale, stream);
    case 64: return launch_fast_fwd<64>(out, lse, qkv, B, Tn, H, scale, stream);
    case 80: return launch_fast_fwd<80>(out, lse, qkv, B, Tn, H, scale, stream);
    case 96: return launch_fast_fwd<96>(out, lse, qkv, B, Tn, H, scale, stream);
    case 128: return launch_fast_fwd<128>(out, lse, qkv, B, Tn, H, scale, stream);
    default: VIT_ASSERT(false, "fast_forward: no kernel for head dim ", d);
  }
}

}  // namespace vit::gpu::attn
