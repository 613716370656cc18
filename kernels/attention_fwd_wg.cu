// Attention forward on Hopper warpgroup MMA (wgmma.mma_async, sm_90a): FlashAttention-3's instructions for the
// m32 forward's job (attention_fwd_m32.cu), which Nsight shows latency-bound on mma.sync + ldmatrix. Here each
// warpgroup (4 warps, 128 threads) owns 64 query rows and issues one 64-row MMA where m32 issues 16-row ones,
// with K, V and Q read by the tensor cores straight from shared memory (no ldmatrix), and P staying in
// registers between the two products.
//
// Design (one CTA per (b, h, block of 64·wg query rows); query block fastest, so the CTAs of one (b, h) run
// together and share K/V in L2):
//   - Q (64 rows per warpgroup) is copied once, K and V stream in blocks of bn keys through two shared-memory
//     buffers, all by the tensor memory accelerator (cp.async.bulk.tensor from a 2-D tensor map over qkv,
//     issued by one thread, completing on one mbarrier per buffer) in the 128-byte swizzle the wgmma
//     descriptors describe (kernels/wgmma.cuh items 2-5). Its writes are async-proxy writes, which wgmma reads
//     once the barrier phase completes. The __syncthreads at the top of block j frees block j−1's buffer, into
//     which block j+1 is then copied while block j is computed. Until session 3 every thread copied its
//     16-byte pieces with cp.async: at T = 197 those copy instructions were a fifth of an issue-bound kernel's
//     (docs/benchmarks.md run 30), and the copy engine took the forward from 198 to 173 us (run 31).
//   - S = Q Kᵀ: D/16 wgmma m64n{bn}k16 with A = Q and B = K both from shared memory, K-major (Q and K rows are
//     [token][d], d contiguous: the k dimension of this product), imm-trans 0. The first k-step has
//     scale-d = 0, so S needs no zeroing.
//   - Online softmax on the fp32 accumulator fragment (item 1: a thread holds rows g and g+8 of its warp's
//     16-row slab, columns 8j + 2q + {0,1}), row max and sum over the quad as in the mma.sync kernels; keys
//     past T (last block only) get −inf, and 8-key column blocks wholly past T skip their exps.
//   - O += P V: P packed to bf16 is exactly the register A fragment (item 1), B = V [key][d] from shared
//     memory, which is MN-major for this product (k = key, n = d contiguous): imm-trans-b = 1 (item 5).
//     16-key slices wholly past T are skipped (their P is 0; the V rows past T that a partial slice reads are
//     the next batch's tokens or zeros, finite either way).
//   - Each product is one commit group waited on at once (wait_group 0): the overlap comes from the other
//     CTAs on the SM (4 or 5 per SM in configurations 0 and 4), not from FA3's intra-warpgroup pipelining
//     (issuing S_{j+1} before the softmax of block j), which needs K copied one block further ahead than V and
//     a second set of score registers (about 32 more: fewer CTAs per SM). Correctness first.
//   - Epilogue: O / l in bf16 goes through the warpgroup's own Q tile (after a barrier: every wgmma that read it
//     has completed), swizzled so the fragment writes are free of bank conflicts, then leaves in 16-byte
//     row-contiguous stores; lse = scale·m + ln l per row.
// Query rows past T (the next batch's tokens, or zeros past the tensor's end) are computed and never stored; a
// warpgroup whose 64 rows all lie past T only takes part in the barriers.
//
// Descriptors (derivations in kernels/wgmma.cuh; the swizzle needs every tile 1024-byte aligned, so the
// dynamic shared-memory window is rounded up to 1024 with 1 KB of slack):
//   Q tile of a warpgroup, 64 rows × 128 B:  K-major, start + 32·kk (kk = 0..3), LBO field 1 (unused), SBO 1024.
//   K block, bn rows × 128 B:                K-major, start + 32·kk, SBO 1024.  -> B of m64n{bn}k16, trans-b 0.
//   V block, bn rows × 128 B:                MN-major, start + 2048·kk (16 keys), SBO 1024 (8 keys), LBO
//                                            bn·128 (next 64 columns of d: unused at d = 64). -> trans-b 1.
//
// Registers (ptxas -v, sm_90a, CUDA 13.0), d = 64, none with ptxas's C7520 "wgmma serialized" warning
// (configurations <warpgroups, bn, CTAs per SM> in attention_fwd_wg.h):
//   cfg0 <1, 64, 4> 97   cfg1 <2, 64, 2> 97   cfg2 <3, 64, 1> 97   cfg3 <1, 128, 3> 133   cfg4 <1, 64, 5> 96,
//   none spilling (with per-thread cp.async copies cfg4 spilled 28 bytes of copy addresses).
// The SASS holds HGMMA.64x{64,128}x16.F32.BF16 (S: gdesc A and B, the first k-step "RZ, !UPT"; P V: register A,
// gdesc B with .tnspB), each group closed by WARPGROUP.DEPBAR.LE gsb0, 0x0.
// What it took: the P V k-steps of a ragged last block are a separate straight-line sequence per count
// (pv_dispatch); wgmmas under a run-time condition made ptxas serialize every wgmma of the kernel.
#include <cuda.h>  // CUtensorMap

#include <cstdlib>
#include <string>
#include <type_traits>

#include "engine/cuda_check.h"
#include "kernels/attention_fwd_wg.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/tensor_map.h"
#include "kernels/tma.cuh"
#include "kernels/wgmma.cuh"

// wgmma and fence.proxy.async exist only in the arch-specific sm_90a target; other targets get a trap (and
// wg_forward_supports says no on other devices).
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define VIT_WG_HAS_WGMMA 1
#endif

namespace vit::gpu::attn {
namespace {

template <int D, int kWG, int kBN>
struct WgCfg {
  static_assert(D % 64 == 0 && D <= 128, "wg forward: head dim 64 (128: untested), whole 128-byte swizzle panels");
  static_assert(kBN == 64 || kBN == 128, "wg forward: 64- or 128-key blocks");
  static_assert(kWG >= 1 && kWG <= 4, "wg forward: 1..4 warpgroups per CTA");
  static constexpr int kThreads = 128 * kWG;
  static constexpr int kBM = 64 * kWG;                             // query rows per CTA
  static constexpr int kQTile = 64 * D * 2;                        // bytes of one warpgroup's Q rows
  static constexpr int kKVTile = kBN * D * 2;                      // bytes of one K (or V) block
  // + 3 mbarriers + slack for the 1024-byte alignment
  static constexpr int kSmem = kWG * kQTile + 4 * kKVTile + 64 + 1024;
};

// O += P V over the first NK 16-key slices of the block: one complete wgmma group (fence, NK k-steps, commit,
// wait), so a block that ends early runs a shorter sequence rather than wgmmas under a condition, which ptxas
// serializes (C7520: "WG.AR in divergent path").
template <int D, int BN, int NK>
__device__ __forceinline__ void pv_steps(float (&o)[D / 2], const uint32_t (&pa)[BN / 16][4], uint32_t sVb) {
  wg::fence_operand(o);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) wg::Wgmma<D>::template rs<1>(o, pa[kk], wg::desc_mn_major(sVb, BN, kk), 1);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(o);
}

template <int D, int BN, int NK = BN / 16>
__device__ __forceinline__ void pv_dispatch(int nk, float (&o)[D / 2], const uint32_t (&pa)[BN / 16][4], uint32_t sVb) {
  if constexpr (NK > 1) {
    if (nk < NK) return pv_dispatch<D, BN, NK - 1>(nk, o, pa, sVb);
  }
  pv_steps<D, BN, NK>(o, pa, sVb);
}

// grid: n_qblk · B · H CTAs of 128·kWG threads.
// Q, K and V arrive by the copy engine (map_q: boxes of kBM rows, map_kv: of kBN rows, both over qkv as
// (B·T rows, 3·H·D columns)); rows past T hold the next batch's tokens (zeros past the tensor's end), which
// the key mask below and the row guard of the stores ignore.
// kDrop: attention dropout (attention_dropout.h), as the flash forward applies it: each n-block's keep masks are
// drawn next to its P (rows: queries, keep_masks<false>; the accumulator layout of a warp is the mma.sync C
// layout) and the dropped P enter O as 0; l and lse stay those of the undropped P, and O / l is scaled by s.
template <int D, int kWG, int kBN, int kMinBlocks, bool kDrop>
__global__ void __launch_bounds__(128 * kWG, kMinBlocks)
    wg_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const __grid_constant__ CUtensorMap map_q,
                  const __grid_constant__ CUtensorMap map_kv, int Tn, int H, int n_qblk, float scale, MaskParams mk) {
#if defined(VIT_WG_HAS_WGMMA)
  using C = WgCfg<D, kWG, kBN>;
  constexpr int BN = kBN;
  constexpr int NS = BN / 2;  // score accumulator registers per thread (64 × BN over 128 threads)
  constexpr int NO = D / 2;   // output accumulator registers per thread

  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = wg::smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* const gbase = smem_raw + (base - raw);  // generic pointer to `base`
  const uint32_t sQ = base;                              // kWG tiles of 64 rows
  const uint32_t sK = sQ + kWG * C::kQTile;              // 2 buffers of BN rows
  const uint32_t sV = sK + 2 * C::kKVTile;               // 2 buffers of BN rows

  const int tid = threadIdx.x, wgi = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;
  const int bh = blockIdx.x / n_qblk;
  const int b = bh / H, h = bh % H;
  const int q0 = (blockIdx.x % n_qblk) * C::kBM;
  const int n_kv = (Tn + BN - 1) / BN;
  const int row0 = q0 + 64 * wgi;  // this warpgroup's first query row
  const bool active = row0 < Tn;   // uniform over the warpgroup, as wgmma requires
  const uint32_t sQw = sQ + wgi * C::kQTile;

  const uint32_t bars = sV + 2 * C::kKVTile;  // Q's mbarrier, then one per K/V buffer (8 bytes each)
  const int kv_x = (H + h) * D;                // K's columns in the map (V's: + H·D)
  if (tid == 0) {
    for (int i = 0; i < 3; ++i) tma::mbar_init(bars + 8 * i);
    tma::mbar_init_fence();  // visible to the copy engine
  }
  __syncthreads();
  if (tid == 0) {
    tma::mbar_expect_tx(bars, C::kBM * D * 2);
    tma::load_2d(sQ, &map_q, h * D, b * Tn + q0, bars);
    tma::mbar_expect_tx(bars + 8, 2 * C::kKVTile);
    tma::load_2d(sK, &map_kv, kv_x, b * Tn, bars + 8);
    tma::load_2d(sV, &map_kv, kv_x + H * D, b * Tn, bars + 8);
  }

  const float sl2 = scale * kLog2e;  // exp(scale·s) = 2^(sl2·s)
  float s[NS], o[NO];
#pragma unroll
  for (int i = 0; i < NS; ++i) s[i] = 0.f;
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max (raw scores) of rows g, g + 8
  float l_run[2] = {0.f, 0.f};              // running Σ exp over this thread's columns of those rows
  uint32_t pa[BN / 16][4];                  // P as A fragments, one per 16-key slice

  for (int j = 0; j < n_kv; ++j) {
    const int buf = j & 1;
    if (j > 0) __syncthreads();  // every warpgroup has waited on its wgmmas of block j − 1: buffer buf ^ 1 is free
    if (tid == 0 && j + 1 < n_kv) {
      const uint32_t bar = bars + 8 * (1 + (buf ^ 1));
      tma::mbar_expect_tx(bar, 2 * C::kKVTile);
      tma::load_2d(sK + (buf ^ 1) * C::kKVTile, &map_kv, kv_x, b * Tn + (j + 1) * BN, bar);
      tma::load_2d(sV + (buf ^ 1) * C::kKVTile, &map_kv, kv_x + H * D, b * Tn + (j + 1) * BN, bar);
    }
    if (!active) continue;  // no barrier depends on this warpgroup's math
    if (j == 0) tma::mbar_wait(bars, 0);                  // Q has landed
    tma::mbar_wait(bars + 8 * (1 + buf), (j >> 1) & 1);  // block j's K and V have landed
    const uint32_t sKb = sK + buf * C::kKVTile, sVb = sV + buf * C::kKVTile;
    const int kv_valid = min(BN, Tn - j * BN);  // keys of this block that exist (>= 1)

    // S = Q Kᵀ (64 × BN), D/16 k-steps, the first overwriting S.
    wg::fence_operand(s);
    wg::fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      wg::Wgmma<BN>::template ss<0, 0>(s, wg::desc_k_major(sQw, 64, kk), wg::desc_k_major(sKb, BN, kk), kk > 0 ? 1 : 0);
    wg::commit();
    wg::wait<0>();
    wg::fence_operand(s);

    if (kv_valid < BN) {  // keys past T do not exist (their rows: another batch's tokens, or zeros)
#pragma unroll
      for (int n = 0; n < BN / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (n * 8 + 2 * t + (e & 1) >= kv_valid) s[4 * n + e] = -INFINITY;
    }

    // Online softmax of rows g (r = 0) and g + 8 (r = 1): max, rescale of what was accumulated only when the
    // running max moves (stale_max_update), P.
    float mx[2] = {m_run[0], m_run[1]};
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[4 * n], s[4 * n + 1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    float corr[2], msc[2], rs[2] = {0.f, 0.f};
#pragma unroll
    for (int r = 0; r < 2; ++r) mx[r] = quad_max(mx[r]);  // finite: every block has a real key
    const bool rescale = stale_max_update(m_run, mx, sl2, corr);  // per warp: each owns its rows' registers
#pragma unroll
    for (int r = 0; r < 2; ++r) msc[r] = m_run[r] * sl2;
#pragma unroll
    for (int n = 0; n < BN / 8; ++n) {
      if (n * 8 < kv_valid) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float p = fast_exp2(fmaf(s[4 * n + e], sl2, -msc[e >> 1]));  // masked: 2^−inf = 0
          s[4 * n + e] = p;
          rs[e >> 1] += p;
        }
        if constexpr (kDrop) {  // warp-uniform condition above: keep_masks is warp-collective
          uint32_t m[2];
          keep_masks<false>(m, mk, bh, row0 + 16 * warp, j * BN + 8 * n, g, t);
#pragma unroll
          for (int e = 0; e < 4; ++e) s[4 * n + e] = keep_or_zero(s[4 * n + e], m[e >> 1], e & 1);
        }
      } else {  // 8 keys all past T (only in a ragged last block): no exp needed
        s[4 * n] = s[4 * n + 1] = s[4 * n + 2] = s[4 * n + 3] = 0.f;
      }
    }
    if (rescale) {
#pragma unroll
      for (int r = 0; r < 2; ++r) l_run[r] *= corr[r];
#pragma unroll
      for (int i = 0; i < NO; ++i) o[i] *= corr[(i >> 1) & 1];
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l_run[r] += rs[r];
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);  // row g,     keys 16kk + 2q, +1
      pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);  // row g + 8, same keys
      pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);  // row g,     keys 16kk + 8 + 2q, +1
      pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);  // row g + 8, same keys
    }

    // O += P V, one k-step per 16 keys that exist.
    pv_dispatch<D, BN>((kv_valid + 15) / 16, o, pa, sVb);
  }

  __syncthreads();  // every wgmma that read Q has completed in every warpgroup: the Q tiles may be reused
  if (!active) return;
  // Epilogue: lse to (B, H, T); O / l in bf16 into the warpgroup's Q tile (same swizzle: the 8 rows g of one
  // store land in 8 different 16-byte bank groups), then out (B, T, H, D) in 16-byte pieces, one row's pieces
  // on neighbouring lanes. Each warp reads back only the 16 rows it wrote.
  unsigned char* const stage = gbase + wgi * C::kQTile;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(l_run[r]);
    const float inv = (kDrop ? mk.scale : 1.f) / l;
    const int rw = 16 * warp + g + 8 * r;  // row within the warpgroup's 64
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<uint32_t*>(stage + wg::sw128_offset(rw, n, 64) + 4 * t) =
          pack_bf16(o[4 * n + 2 * r] * inv, o[4 * n + 2 * r + 1] * inv);
    if (t == 0 && row0 + rw < Tn) lse[(i64)bh * Tn + row0 + rw] = m_run[r] * scale + logf(l);
  }
  __syncwarp();
  constexpr int kChunks = D / 8;                        // 16-byte pieces per row
  bf16* og = out + (((i64)b * Tn + row0) * H + h) * D;  // row row0 of this (b, h)
#pragma unroll
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int rw = 16 * warp + c / kChunks, k = c % kChunks;
    if (row0 + rw < Tn)
      *reinterpret_cast<uint4*>(og + (i64)rw * H * D + k * 8) =
          *reinterpret_cast<const uint4*>(stage + wg::sw128_offset(rw, k, 64));
  }
#else
  __trap();  // not an sm_90a build (see attention_fwd_wg.h)
#endif
}

// qkv (B, T, 3, H, D) as a 2-D tensor for the copy engine: B·T rows of 3·H·D bf16, boxes of rows_q rows (Q
// tiles) and rows_kv rows (K, V blocks): one map when the two are equal, as in the default configuration; one
// encoder lookup either way.
struct QkvMaps {
  CUtensorMap q, kv;
};
QkvMaps qkv_tensor_maps(const bf16* qkv, int B, int Tn, int H, int D, int rows_q, int rows_kv) {
  const i64 rows = (i64)B * Tn, cols = 3LL * H * D;
  const TensorMapEncoder enc;
  QkvMaps maps;
  maps.q = enc.bf16_2d(qkv, rows, cols, cols, rows_q, "attention qkv");
  maps.kv = rows_kv == rows_q ? maps.q : enc.bf16_2d(qkv, rows, cols, cols, rows_kv, "attention qkv");
  return maps;
}

// The kernel of configuration kCfg at head dim D, with its shared-memory attributes set (the whole carveout as
// shared memory: the kernel reads global memory only through the copy engine, which bypasses L1).
template <int D, int kCfg, bool kDrop>
auto prepared_kernel() {
  constexpr WgTraits tr = wg_traits(kCfg);
  static_assert(tr.wg > 0, "wg forward: no such configuration");
  using C = WgCfg<D, tr.wg, tr.bn>;
  // min_blocks CTAs must also fit an SM's shared memory (sm_90: 228 KB, 1 KB of it reserved per CTA)
  static_assert(tr.min_blocks * (C::kSmem + 1024) <= 228 * 1024, "wg forward: the CTAs per SM do not fit");
  auto kernel = wg_fwd_kernel<D, tr.wg, tr.bn, tr.min_blocks, kDrop>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                  (int)cudaSharedmemCarveoutMaxShared));
  return kernel;
}

template <int D, int kCfg, bool kDrop = false>
void launch_cfg(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale, cudaStream_t stream,
                const MaskParams& mk = {}) {
  constexpr WgTraits tr = wg_traits(kCfg);
  using C = WgCfg<D, tr.wg, tr.bn>;
  const int n_qblk = (Tn + C::kBM - 1) / C::kBM;
  const i64 blocks = (i64)n_qblk * B * H;
  if (blocks == 0) return;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H·ceil(T/", C::kBM, ") = ", blocks, " CTAs is too many");
  const QkvMaps maps = qkv_tensor_maps(qkv, B, Tn, H, D, C::kBM, tr.bn);
  auto kernel = prepared_kernel<D, kCfg, kDrop>();
  kernel<<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(out, lse, maps.q, maps.kv, Tn, H, n_qblk, scale, mk);
  CUDA_CHECK_LAUNCH();
}

template <int D, int kCfg>
int occupancy_cfg() {
  constexpr WgTraits tr = wg_traits(kCfg);
  using C = WgCfg<D, tr.wg, tr.bn>;
  int n = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, prepared_kernel<D, kCfg, false>(), C::kThreads, C::kSmem));
  return n;
}

// f<kCfg>() for the run-time configuration cfg.
template <class F>
auto with_cfg(int cfg, F&& f) {
  switch (cfg) {
    case 0:
      return f(std::integral_constant<int, 0>{});
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    default:
      vit::fail("wg forward: configuration ", cfg, " is outside 0..", kWgConfigCount - 1);
  }
}
static_assert(kWgConfigCount == 5, "with_cfg lists every configuration");

}  // namespace

std::string wg_config_name(int cfg) {
  const WgTraits tr = wg_traits(cfg);
  return "cfg" + std::to_string(cfg) + " wg" + std::to_string(tr.wg) + ".bn" + std::to_string(tr.bn) + "." +
         std::to_string(tr.min_blocks) + "cta";
}

int wg_config(int Tn, int d) {
  const char* env = std::getenv("VIT_ATTN_WG_CFG");
  if (env == nullptr || *env == '\0') return wg_default_config(Tn, d);
  char* end = nullptr;
  const long k = std::strtol(env, &end, 10);
  VIT_REQUIRE(*end == '\0' && k >= 0 && k < kWgConfigCount, "VIT_ATTN_WG_CFG must be 0..", kWgConfigCount - 1,
              " (the wgmma attention forward's configurations, attention_fwd_wg.h), not '", env, "'");
  return (int)k;
}

bool wg_forward_supports(int Tn, int d) {
#if defined(VIT_HAS_SM90A)
  constexpr bool kBuilt = true;
#else
  constexpr bool kBuilt = false;  // built without the sm_90a target (VIT_CUDA_ARCHS): the kernel body is a trap
#endif
  if (!kBuilt || d != 64 || Tn < 1) return false;
  // A query, not a requirement: no usable device means "no" (and the error is cleared).
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0;  // sm_90a code runs on exactly 9.0
}

void wg_forward_cfg(int cfg, bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                    cudaStream_t stream) {
  VIT_REQUIRE(d == 64, "wg_forward: head dim ", d, " has no wgmma kernel (64 only; see attention_fwd_wg.h)");
  VIT_REQUIRE(Tn >= 1 && B >= 0 && H >= 0, "wg_forward: bad shape B=", B, " T=", Tn, " H=", H);
  with_cfg(cfg, [&](auto c) { launch_cfg<64, decltype(c)::value>(out, lse, qkv, B, Tn, H, scale, stream); });
}

int wg_ctas_per_sm(int cfg) {
  return with_cfg(cfg, [](auto c) { return occupancy_cfg<64, decltype(c)::value>(); });
}

void wg_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale, cudaStream_t stream,
                const MaskParams& mk) {
  if (!mk.on) return wg_forward_cfg(wg_config(Tn, d), out, lse, qkv, B, Tn, H, d, scale, stream);
  VIT_REQUIRE(d == 64 && Tn >= 1, "wg_forward: T = ", Tn, ", d = ", d, " has no wgmma kernel (d = 64 only)");
  launch_cfg<64, kWgDropoutConfig, true>(out, lse, qkv, B, Tn, H, scale, stream, mk);
}

}  // namespace vit::gpu::attn
