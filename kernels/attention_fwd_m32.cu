// Fused attention forward of Variant::m32: FlashAttention-2's tiling for small heads. One CTA per (b, h, block
// of 32·kWarps query rows); each warp owns 32 rows (kMT = 2 m16 tiles), so every K and V fragment it reads
// from shared memory with ldmatrix feeds two MMAs: half the shared-memory traffic per FLOP of flash_fwd_kernel
// (16 rows a warp), whose K, V and Q reads at d = 64 take more shared-memory cycles than its MMAs take.
//   - K and V stream through shared memory in blocks of kBN keys, double-buffered with cp.async, one barrier
//     per block (as attention_fwd_fast.cu: the barrier that publishes block j also frees block j−1's buffer).
//   - Q is held as A-fragments in registers (kQReg) or re-read from shared memory each block, as the
//     registers allow (see attention_fwd_m32.h for the configurations).
//   - Output goes through the warp's own Q rows in shared memory, so it leaves in 16-byte row-contiguous stores.
// Tails: query rows past T are zero-filled and never stored; a warp whose second tile lies wholly past T
// computes its first only (a separate instantiation of the block), and one with none only helps with the
// copies; keys past T get score -inf and 16-key slices wholly past T are skipped.
// No attention dropout here: with p > 0 Variant::m32 runs flash_fwd_kernel (attention.cu).
//
// Registers per thread, ptxas -v for sm_90a (CUDA 13.0), every instantiation without spills (configurations in
// attention_fwd_m32.h; <warps, bn, bc, Q, CTAs per SM>):
//   d = 32:  cfg0 <4,64,64,reg,2> 184   cfg1 <4,64,16,smem,3> 103   cfg2 <4,128,64,smem,2> 168
//            cfg3 <8,64,64,smem,1> 168  cfg4 <4,128,64,reg,2> 184
//   d = 64:  cfg0 240   cfg1 147   cfg2 232   cfg3 224   cfg4 247
//            cfg5 <4,64,16,smem,4> 128 with a 16-byte spill (28 bytes reloaded): the price of a fourth CTA per SM
//   d = 80:  cfg0 <4,64,32,reg> 236     cfg1 <4,64,32,smem,2> 199   cfg2 <4,128,64,smem> 255   cfg3 234
//            cfg4 <4,128,32,reg> 236
//   d = 96:  cfg0 = cfg1 = cfg2 = cfg4 <4,64,32,smem,2> 228          cfg3 <8,64,32,smem,1> 225
//   d = 128: cfg0 = cfg1 = cfg2 = cfg4 <4,64,32,smem,2> 255          cfg3 <8,64,32,smem,1> 255
// What it took: K/V copies that walk one pointer (KVCopy), a chunk loop that is not unrolled, and a masked tail
// of 16 keys; with load_rows and whole-block steps d = 64 spilled 12 to 344 bytes and d = 128 over 200.
#include <cstdlib>
#include <string>
#include <utility>

#include "engine/cuda_check.h"
#include "kernels/attention_fwd_block_m32.cuh"
#include "kernels/attention_fwd_m32.h"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

template <int D, int kWarps, int kBN, int kMT>
struct M32Cfg {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBM = 16 * kMT * kWarps;  // query rows per CTA
  static constexpr int kPitch = D + kPad;
  // sQ (kBM rows) + sK, sV (2 buffers of kBN rows each)
  static constexpr int kSmem = (kBM + 4 * kBN) * kPitch * (int)sizeof(bf16);
  static_assert(D % 16 == 0 && D <= 128, "head dim must be a multiple of 16, at most 128");
  static_assert(kMT == 1 || kMT == 2, "a warp owns one or two m16 query tiles");
  static_assert(kBN % 16 == 0 && kBN <= 128, "keys per step: a multiple of 16, at most 128");
};

// This thread's part of copying one block of BN key and value rows into shared memory: 16-byte chunk kc of
// rows r0, r0 + kRS, ... One source pointer walks down the rows, so little stays live across the main loop
// (load_rows' per-copy 64-bit row offsets are loop-invariant, and ptxas keeps them all in registers, which
// 32-row warps cannot spare). Rows >= valid are zero-filled and never read.
template <int BN, int D, int NT>
struct KVCopy {
  static constexpr int kCP = D <= 32 ? 4 : D <= 64 ? 8 : 16;  // chunks per row, rounded up to a power of 2
  static constexpr int kRS = NT / kCP;
  static_assert(NT % kCP == 0 && BN % kRS == 0, "the threads tile the block's rows evenly");
  int r0, kc;
  __device__ __forceinline__ explicit KVCopy(int tid) : r0(tid / kCP), kc(tid % kCP) {}
  __device__ __forceinline__ void operator()(bf16* sKb, bf16* sVb, const bf16* ksrc, i64 v_off, i64 ld,
                                             int valid) const {
    constexpr int P = D + kPad;
    if (kc >= D / 8) return;  // the padding lanes of the power-of-2 row
    const bf16* p = ksrc + r0 * ld + kc * 8;
    const i64 step = kRS * ld;
    const int left = valid - r0;  // compared with constants below (r0 + i·kRS would be hoisted, one per i)
    bf16* dk = sKb + r0 * P + kc * 8;
    bf16* dv = sVb + r0 * P + kc * 8;
#pragma unroll
    for (int i = 0; i < BN / kRS; ++i) {
      const bool ok = i * kRS < left;
      const bf16* src = ok ? p : ksrc;
      cp_async_16(dk + i * kRS * P, src, ok);
      cp_async_16(dv + i * kRS * P, src + v_off, ok);
      p += step;
    }
  }
};

// The kv_valid keys of one shared-memory block (BN rows), in compute chunks of BC keys: a whole block is
// BN / BC full chunks; the last block of a sequence runs as many full BC-key and 16-key chunks as fit and one
// masked 16-key chunk. Each chunk is one online-softmax step (fwd_block_m32), so the registers follow BC, not
// BN, and the masked code (with its run-time guards, which ptxas schedules with more registers) stays 16 keys
// wide.
template <int D, int BN, int BC, int KMT, int MT, bool kQReg>
__device__ __forceinline__ void key_block(const uint32_t (&qa)[KMT][D / 16][4], const bf16* sQw, const bf16* sKb,
                                          const bf16* sVb, int kv_valid, float sl2, const LaneOffsets& lo, int t,
                                          float (&o)[KMT][D / 8][4], float (&m_run)[KMT][2],
                                          float (&l_run)[KMT][2]) {
  static_assert(BN % BC == 0 && BC % 16 == 0, "compute chunks tile the block");
  constexpr int P = D + kPad;
  if (kv_valid == BN) {
#pragma unroll 1
    for (int c = 0; c < BN / BC; ++c)
      fwd_block_m32<D, BC, KMT, MT, true, kQReg>(qa, sQw, sKb + c * BC * P, sVb + c * BC * P, BC, sl2, lo, t, o,
                                                 m_run, l_run);
    return;
  }
  int k = 0;
  if constexpr (BC > 16) {
    for (; k + BC <= kv_valid; k += BC)
      fwd_block_m32<D, BC, KMT, MT, true, kQReg>(qa, sQw, sKb + k * P, sVb + k * P, BC, sl2, lo, t, o, m_run,
                                                 l_run);
  }
  for (; k + 16 <= kv_valid; k += 16)
    fwd_block_m32<D, 16, KMT, MT, true, kQReg>(qa, sQw, sKb + k * P, sVb + k * P, 16, sl2, lo, t, o, m_run, l_run);
  if (k < kv_valid)
    fwd_block_m32<D, 16, KMT, MT, false, kQReg>(qa, sQw, sKb + k * P, sVb + k * P, kv_valid - k, sl2, lo, t, o,
                                                m_run, l_run);
}

// grid: n_qblk · B · H CTAs, query block fastest (the CTAs of one (b, h) run together and share K/V in L2).
template <int D, int kWarps, int kBN, int kBC, int kMT, bool kQReg, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    m32_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv, int Tn, int H,
                   int n_qblk, float scale) {
  using C = M32Cfg<D, kWarps, kBN, kMT>;
  constexpr int P = C::kPitch, BM = C::kBM, BN = kBN, NT = C::kThreads, WR = 16 * kMT;  // WR: rows per warp
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
  const i64 ld = 3LL * H * D;                            // elements between tokens in qkv (B, T, 3, H, D)
  const bf16* qg = qkv + (i64)b * Tn * ld + (i64)h * D;  // q of token 0
  const bf16* kg = qg + (i64)H * D;
  const int n_kv = (Tn + BN - 1) / BN;
  const int row0 = q0 + warp * WR;                          // this warp's first query row
  const int n_tiles = min(kMT, max(0, (Tn - row0 + 15) / 16));  // its m16 tiles holding a row before T
  bf16* sQw = sQ + warp * WR * P;                           // its rows of Q (read by this warp only)

  load_rows<BM, D, NT>(sQ, qg + (i64)q0 * ld, ld, Tn - q0, tid);
  const KVCopy<BN, D, NT> kv_copy(tid);
  kv_copy(sK, sV, kg, (i64)H * D, ld, Tn);
  cp_async_commit();

  const float sl2 = scale * kLog2e;  // exp(scale·s) = 2^(sl2·s)
  float o[kMT][D / 8][4];            // O accumulators, WR × D
  float m_run[kMT][2], l_run[kMT][2];  // running max (raw scores) and Σ exp (this lane's columns) of rows g, g+8
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.f;
  }
  uint32_t qa[kMT][D / 16][4];  // used when kQReg

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    cp_async_wait<0>();  // this thread's copies of block j (and, at j = 0, Q) have landed
    __syncthreads();     // ... everyone's, and every warp is done with block j−1 (buffer buf ^ 1)
    if (j + 1 < n_kv) {
      const int k1 = (j + 1) * BN;
      kv_copy(sK + (buf ^ 1) * BN * P, sV + (buf ^ 1) * BN * P, kg + (i64)k1 * ld, (i64)H * D, ld, Tn - k1);
      cp_async_commit();
    }
    if (n_tiles == 0) continue;  // no barrier depends on this warp's math
    if constexpr (kQReg) {
      if (j == 0) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
          for (int kk = 0; kk < D / 16; ++kk)
            ldsm_x4(qa[mt][kk], smem_addr(sQw + (mt * 16 + lo.a_row) * P + kk * 16 + lo.a_col));
      }
    }
    const bf16* sKb = sK + buf * BN * P;
    const bf16* sVb = sV + buf * BN * P;
    const int kv_valid = min(BN, Tn - j * BN);  // keys of this block that exist (>= 1)
    if (n_tiles == kMT)
      key_block<D, BN, kBC, kMT, kMT, kQReg>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
    else if constexpr (kMT > 1)  // the second tile lies wholly past T
      key_block<D, BN, kBC, kMT, 1, kQReg>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
  }

  if (n_tiles == 0) return;
  __syncwarp();  // every lane is past its last read of the warp's Q rows
  // Epilogue: lse = scale·max + log l to (B, H, T); O / l in bf16 into the warp's own Q rows (it has read them
  // for the last time), then out (B, T, H, D) in 16-byte pieces, one row's pieces on neighbouring lanes.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    if (mt >= n_tiles) break;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float l = quad_sum(l_run[mt][r]);
      const float inv = 1.f / l;
      const int rw = mt * 16 + g + 8 * r;  // row within the warp's rows
      bf16* srow = sQw + rw * P + 2 * t;
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<uint32_t*>(srow + n * 8) = pack_bf16(o[mt][n][2 * r] * inv, o[mt][n][2 * r + 1] * inv);
      if (t == 0 && row0 + rw < Tn) lse[(i64)bh * Tn + row0 + rw] = m_run[mt][r] * scale + logf(l);
    }
  }
  __syncwarp();
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  const int rows = min(n_tiles * 16, Tn - row0);
  bf16* og = out + (((i64)b * Tn + row0) * H + h) * D;  // row row0 of this (b, h)
  for (int c = lane; c < rows * kChunks; c += 32) {
    const int r = c / kChunks, k = c % kChunks;
    *reinterpret_cast<uint4*>(og + (i64)r * H * D + k * 8) = *reinterpret_cast<const uint4*>(sQw + r * P + k * 8);
  }
}

template <int D, int kWarps, int kBN, int kBC, bool kQReg, int kMinBlocks>
void launch_m32(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale, cudaStream_t stream) {
  constexpr int kMT = 2;
  using C = M32Cfg<D, kWarps, kBN, kMT>;
  // kMinBlocks CTAs must also fit an SM's shared memory (sm_90: 228 KB, 1 KB of it reserved per CTA)
  static_assert(kMinBlocks * (C::kSmem + 1024) <= 228 * 1024, "m32: the CTAs per SM do not fit shared memory");
  const int n_qblk = (Tn + C::kBM - 1) / C::kBM;
  const i64 blocks = (i64)n_qblk * B * H;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H·ceil(T/", C::kBM, ") = ", blocks, " CTAs is too many");
  auto kernel = m32_fwd_kernel<D, kWarps, kBN, kBC, kMT, kQReg, kMinBlocks>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  kernel<<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(out, lse, qkv, Tn, H, n_qblk, scale);
  CUDA_CHECK_LAUNCH();
}

template <int D, int kCfg>
void launch_cfg(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale, cudaStream_t stream) {
  constexpr M32Traits tr = m32_traits(kCfg, D);
  static_assert(tr.warps > 0, "m32: no such configuration");
  launch_m32<D, tr.warps, tr.bn, tr.bc, tr.q_in_regs, tr.min_blocks>(out, lse, qkv, B, Tn, H, scale, stream);
}

// Configuration cfg at head dim D: one instantiation per (configuration, head dim).
template <int D, int... kCfgs>
void launch_dim(int cfg, bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale,
                cudaStream_t stream, std::integer_sequence<int, kCfgs...>) {
  const bool found = ((cfg == kCfgs ? (launch_cfg<D, kCfgs>(out, lse, qkv, B, Tn, H, scale, stream), true) : false) ||
                      ...);
  VIT_ASSERT(found, "m32_forward: no configuration ", cfg);
}

}  // namespace

std::string m32_config_name(int cfg, int d) {
  const M32Traits tr = m32_traits(cfg, d);
  return "cfg" + std::to_string(cfg) + " w" + std::to_string(tr.warps) + ".bn" + std::to_string(tr.bn) + ".bc" +
         std::to_string(tr.bc) + (tr.q_in_regs ? ".qreg." : ".qsmem.") + std::to_string(tr.min_blocks) + "cta";
}

int m32_config(int Tn, int d) {
  const char* env = std::getenv("VIT_ATTN_M32_CFG");
  if (env == nullptr || *env == '\0') return m32_default_config(Tn, d);
  char* end = nullptr;
  const long k = std::strtol(env, &end, 10);
  VIT_REQUIRE(*end == '\0' && k >= 0 && k < kM32ConfigCount, "VIT_ATTN_M32_CFG must be 0..", kM32ConfigCount - 1,
              " (the m32 attention forward's configurations, attention_fwd_m32.h), not '", env, "'");
  return (int)k;
}

void m32_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale, int cfg,
                 cudaStream_t stream) {
  VIT_REQUIRE(cfg >= 0 && cfg < kM32ConfigCount, "m32_forward: configuration ", cfg, " is outside 0..",
              kM32ConfigCount - 1);
  constexpr auto kAll = std::make_integer_sequence<int, kM32ConfigCount>{};
  switch (d) {
    case 32: return launch_dim<32>(cfg, out, lse, qkv, B, Tn, H, scale, stream, kAll);
    case 64: return launch_dim<64>(cfg, out, lse, qkv, B, Tn, H, scale, stream, kAll);
    case 80: return launch_dim<80>(cfg, out, lse, qkv, B, Tn, H, scale, stream, kAll);
    case 96: return launch_dim<96>(cfg, out, lse, qkv, B, Tn, H, scale, stream, kAll);
    case 128: return launch_dim<128>(cfg, out, lse, qkv, B, Tn, H, scale, stream, kAll);
    default: VIT_ASSERT(false, "m32_forward: no kernel for head dim ", d);
  }
}

}  // namespace vit::gpu::attn
