// Fused attention forward (flash-attention-2 style): one CTA per (b, h, block of kBM query rows), each warp
// owning 16 query rows; keys and values stream through shared memory in blocks of kBN rows (double-buffered
// cp.async), scores live only in registers, and an online softmax rescales the running output. bf16
// tensor-core MMAs (mma.sync m16n8k16) with fp32 accumulation; lse saved in fp32 for the backward.
//
// Tails: query rows past T are zero-filled in shared memory and never stored (a warp whose 16 rows all lie
// past T skips the math); keys past T get score -inf, and 16-key slices entirely past T are skipped, so
// T = 197 costs 13 row-tiles of 16, not 16.
//
// Attention dropout (kDropout, a separate instantiation): P enters O masked (fwd_block), l and lse stay those of
// the undropped scores, and the keep scale joins 1 / l in the epilogue.
#include "engine/cuda_check.h"
#include "kernels/attention_fwd_block.cuh"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

template <int D>
struct FwdCfg {
  static constexpr int kWarps = 8;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBM = 16 * kWarps;  // query rows per CTA
  static constexpr int kBN = 64;           // keys per main-loop step
  static constexpr int kPitch = D + kPad;  // shared tile row pitch (elements)
  // sQ (kBM rows) + sK, sV (2 buffers of kBN rows each)
  static constexpr int kSmem = (kBM + 4 * kBN) * kPitch * (int)sizeof(bf16);
  static constexpr int kMinBlocks = D <= 64 ? 2 : 1;  // caps registers at 128 for D <= 64
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
};

// grid: n_qblk · B · H CTAs, query block fastest (the CTAs of one (b, h) run together and share K/V in L2).
template <int D, bool kDropout>
__global__ void __launch_bounds__(FwdCfg<D>::kThreads, FwdCfg<D>::kMinBlocks)
    flash_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv, int Tn, int H,
                     int n_qblk, float scale, MaskParams mk) {
  using C = FwdCfg<D>;
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
  const i64 ld = 3LL * H * D;                                 // elements between tokens in qkv (B, T, 3, H, D)
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;       // q of token 0
  const bf16* kg = qg + (i64)H * D;                           // k of token 0
  const bf16* vg = qg + 2LL * H * D;                          // v of token 0
  const int n_kv = (Tn + BN - 1) / BN;
  const int row0 = q0 + warp * 16;  // this warp's first query row
  const bool active = row0 < Tn;    // warps wholly past T only help with the copies

  load_rows<BM, D, C::kThreads>(sQ, qg + (i64)q0 * ld, ld, Tn - q0, tid);
  load_rows<BN, D, C::kThreads>(sK, kg, ld, Tn, tid);
  load_rows<BN, D, C::kThreads>(sV, vg, ld, Tn, tid);
  cp_async_commit();

  const float sl2 = scale * kLog2e;  // exp(scale·s) = 2^(sl2·s)
  float o[D / 8][4];                 // O accumulator, 16 × D
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of the raw scores of rows g and g+8
  float l_run[2] = {0.f, 0.f};              // running Σ exp (this lane's columns only; quad-summed at the end)
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  uint32_t qa_unused[D / 16][4];  // this kernel re-reads Q from shared memory (fwd_block's kQReg = false)

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j + 1 < n_kv) {  // prefetch block j+1 into the other buffer (freed by the barrier ending step j-1)
      const int k1 = (j + 1) * BN;
      load_rows<BN, D, C::kThreads>(sK + (buf ^ 1) * BN * P, kg + (i64)k1 * ld, ld, Tn - k1, tid);
      load_rows<BN, D, C::kThreads>(sV + (buf ^ 1) * BN * P, vg + (i64)k1 * ld, ld, Tn - k1, tid);
      cp_async_commit();
      cp_async_wait<1>();  // everything but block j+1 has landed
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (active) {
      const bf16* sQw = sQ + warp * 16 * P;
      const bf16* sKb = sK + buf * BN * P;
      const bf16* sVb = sV + buf * BN * P;
      const int kv_valid = min(BN, Tn - j * BN);  // keys of this block that exist (>= 1)
      const uint32_t(&qa)[D / 16][4] = qa_unused;
      if constexpr (kDropout) {
        const MaskTile mt{mk, bh, row0, j * BN};
        if (kv_valid == BN)
          fwd_block<D, BN, true, false, true>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run, mt);
        else
          fwd_block<D, BN, false, false, true>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run, mt);
      } else {
        if (kv_valid == BN)
          fwd_block<D, BN, true, false>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
        else
          fwd_block<D, BN, false, false>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
      }
    }
    __syncthreads();  // buffer `buf` is refilled by the prefetch of step j+1
  }

  if (!active) return;
  // Epilogue: O / l to bf16 (B, T, H, D); lse = scale·max + log l to (B, H, T).
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_run[r]);
    const float inv = (kDropout ? mk.scale : 1.f) / l;
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
void launch_fwd(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale, const MaskParams& mk,
                cudaStream_t stream) {
  using C = FwdCfg<D>;
  const int n_qblk = (Tn + C::kBM - 1) / C::kBM;
  const i64 blocks = (i64)n_qblk * B * H;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H·ceil(T/", C::kBM, ") = ", blocks, " CTAs is too many");
  auto kernel = mk.on ? flash_fwd_kernel<D, true> : flash_fwd_kernel<D, false>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  kernel<<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(out, lse, qkv, Tn, H, n_qblk, scale, mk);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void flash_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                   const MaskParams& mk, cudaStream_t stream) {
  switch (d) {
    case 32: return launch_fwd<32>(out, lse, qkv, B, Tn, H, scale, mk, stream);
    case 64: return launch_fwd<64>(out, lse, qkv, B, Tn, H, scale, mk, stream);
    case 80: return launch_fwd<80>(out, lse, qkv, B, Tn, H, scale, mk, stream);
    case 96: return launch_fwd<96>(out, lse, qkv, B, Tn, H, scale, mk, stream);
    case 128: return launch_fwd<128>(out, lse, qkv, B, Tn, H, scale, mk, stream);
    default: VIT_ASSERT(false, "flash_forward: no kernel for head dim ", d);
  }
}

}  // namespace vit::gpu::attn
