// Attention backward on Hopper warpgroup MMA (wgmma.mma_async, sm_90a), for T <= 256 at d = 64: the resident
// backward's scheme (attention_bwd_resident.cu: all keys of one (b, h) in one CTA, dQ complete inside it, no
// atomics, deterministic) with 64-row warpgroup products instead of 16-row mma.sync ones, whose ldmatrix-fed
// chains left that kernel latency-bound at one CTA per SM (docs/benchmarks.md run 30).
//
// One CTA per (b, h) of NWG = ceil(T / 64) warpgroups; warpgroup w owns keys 64w..64w+63 and holds their dK and
// dV (64 × 64 fp32 each: 32 + 32 registers a thread) for the whole kernel. K and V arrive once, the queries
// stream through in blocks of 64 (Q, dO and O double-buffered), all by the tensor memory accelerator in the
// 128-byte swizzle the wgmma descriptors describe (kernels/wgmma.cuh, kernels/tma.cuh). Per query block i each
// warpgroup computes, for its keys (M = 64 keys, N = the block's queries):
//     Sᵀ = K Qᵀ           ss: A = K [key][d] K-major, B = Q [query][d] K-major
//     Pᵀ = exp(scale·Sᵀ − lse[query])                 (the A fragments of the next product)
//     dV += Pᵀ dO          rs: A = Pᵀ, B = dO [query][d], MN-major (imm-trans-b); at 4 warpgroups ss, Pᵀ parked
//                          in shared memory (kPsm below: no registers to keep it)
//     dPᵀ = V dOᵀ          ss: A = V K-major, B = dO K-major
//     dSᵀ = Pᵀ ⊙ (dPᵀ − D[query]), rounded to bf16 once
//     dK += dSᵀ Q          rs: A = dSᵀ, B = Q MN-major
// and parks dSᵀ in shared memory as rows of keys (lines of 64 queries). Because the CTA holds every key,
// dQ = dS K of block i is complete inside it: warpgroup (i mod NWG) computes it right after its own work on block
// i, as one 64 × 64 product over the 16-key slices that hold a real key (ss: A = dS read MN-major from the dSᵀ
// rows, i.e. imm-trans-a; B = K [key][d] MN-major), and writes it straight to dqkv in bf16: 5 products per
// (query, key) pair, as in the resident kernel. D, P and dS are formed by the same operations in the same order
// and the tensor-core sums take the same 16-element k-steps in the same order as the resident kernel's, so dqkv
// comes out bit-identical to it (tested at every warpgroup count, with and without dropout).
//
// Synchronisation: no barrier over the CTA per block; mbarriers carry each dependency (per buffer b = i & 1):
// qfull (the copy engine landed Q, dO, O of block i), dfull (every thread added its share of D), dsfull (every
// thread stored its dSᵀ words, fenced to the async proxy: the dQ product may read them, and every warpgroup is done
// with the block's Q/dO/O, so the dQ warpgroup then issues the copies of block i + 2 into the buffer), dsempty
// (the dQ product has read dSᵀ: block i + 2 may overwrite it). The warpgroups drift apart, one's exp and dS work
// overlapping another's products; the dQ product delays only its warpgroup (docs/benchmarks.md runs 49-57).
//
// Ragged edges. Keys past T (the rest of the last warpgroup's 64) get P = 0 by an explicit mask (their rows hold
// the next sample's tokens, or zeros past the tensor, which the copy engine fills). Queries past T get lse = +inf,
// so P = 0 and dS = 0 with no branch. The last query block runs its Sᵀ and dPᵀ products at N = 16 or 32 when that
// covers its queries (T = 197: 5 queries, N = 16), and its dV, dK products over those 16-query slices only; the
// dQ product runs over ceil(T / 16) key slices. Each such count is a separate straight-line wgmma sequence
// (dispatch templates): wgmmas under a run-time condition make ptxas serialize every wgmma of the kernel (C7520).
//
// Attention dropout (up to 3 warpgroups, T <= 192: the undropped Pᵀ stays in registers beside its keep bits, which
// dS needs; at 4 warpgroups Pᵀ goes through shared memory, where only one of the two fits) as the resident kernel
// applies it: key_block's kDrop.
//
// lse·log2 e of every query is loaded in the prologue; D = rowsum(dO ⊙ O) per block, from the O and dO tiles,
// one thread per row (the first two warps). With bias_part (the qkv linear's bias gradient fused in) the values
// stored are also summed per column: dQ into per-thread running sums in shared memory, dK and dV in registers; at the end each
// warp reduces its rows (reduce_scatter_rows) into its own row, and after one barrier the rows are added in a
// fixed order into row b of bias_part. Deterministic like the rest.
#include <cuda.h>  // CUtensorMap

#include <cstdlib>
#include <string>

#include "engine/cuda_check.h"
#include "kernels/attention_bwd_wg.h"
#include "kernels/attention_fwd_wg.h"
#include "kernels/attention_tiles.cuh"
#include "kernels/tensor_map.h"
#include "kernels/tma.cuh"
#include "kernels/wgmma.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define VIT_WG_BWD_HAS_WGMMA 1
#endif

namespace vit::gpu::attn {
namespace {

// Attention dropout keeps Pᵀ in registers next to its mask (key_block's kDrop), which only 3 warpgroups afford.
constexpr int kMaxDropWarpgroups = 3;

template <int D, int NWG>
struct WgBwdCfg {
  static_assert(D == 64, "wg backward: head dim 64 (one 128-byte swizzle panel per row)");
  static_assert(NWG >= 1 && NWG <= 4, "wg backward: 1..4 warpgroups (T <= 256)");
  static constexpr int kThreads = 128 * NWG;
  static constexpr int kKeys = 64 * NWG;   // key rows held; also the padded query count (T <= kKeys)
  static constexpr int kTile = 64 * D * 2;  // bytes of one 64-row tile
  // Byte offsets from the 1024-aligned base (every tile 1024-aligned, as the swizzle needs).
  static constexpr int kOffK = 0;                              // NWG tiles = kKeys rows
  static constexpr int kOffV = kOffK + NWG * kTile;            // NWG tiles
  static constexpr int kOffQ = kOffV + NWG * kTile;            // 2 buffers
  static constexpr int kOffdO = kOffQ + 2 * kTile;             // 2 buffers
  static constexpr int kOffO = kOffdO + 2 * kTile;             // 2 buffers (for D = rowsum(dO ⊙ O))
  static constexpr int kOffdS = kOffO + 2 * kTile;             // 2 buffers of kKeys rows
  static constexpr int kOffLse = kOffdS + 2 * NWG * kTile;     // kKeys floats: lse·log2 e (+inf past T)
  static constexpr int kOffD = kOffLse + kKeys * 4;            // 2 buffers of 64 floats: D of a block
  // With the bias: each thread's running sums of the dQ values it stored (D/4 columns, rows g and g + 8), slot x
  // of thread t at x·kThreads + t (conflict-free), then each warp's column sums of dQ, dK, dV (3·D floats).
  static constexpr int kOffQacc = kOffD + 2 * 64 * 4;
  static constexpr int kOffWsum = kOffQacc + D / 4 * kThreads * 4;
  // mbarriers: per warpgroup, its K and V tiles landed (kv); per buffer b: Q/dO/O landed (qfull), dSᵀ stored by
  // every warpgroup (dsfull), dSᵀ read by the dQ product (dsempty), D of the block computed (dfull).
  static constexpr int kOffBar = kOffWsum + 4 * NWG * 3 * D * 4;
  static constexpr int kBarKV = 0, kBarQFull = 32, kBarDsFull = 48, kBarDsEmpty = 64, kBarDFull = 80, kBarBytes = 96;
  static constexpr int kSmem = kOffBar + kBarBytes + 1024;  // + slack for the 1024-byte alignment
};

// Sums v (16 values a lane) over the 8 lanes of each g-group (lane bits 2..4: lanes with the same q hold the same
// columns for different rows) by halving: at each of the 3 steps a lane keeps half of its values and adds the
// other half of its partner's, so lane g ends with values base, base + 1 (returned), base = 8·(g&1) + 4·(g>>1&1) +
// 2·(g>>2&1), summed over all 8 lanes: 8 + 4 + 2 = 14 shuffles where folding each value took 48.
__device__ __forceinline__ float2 reduce_scatter_rows(const float (&v)[16], int g) {
  float a[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const bool hi = g & 1;
    a[k] = (hi ? v[k + 8] : v[k]) + __shfl_xor_sync(0xffffffffu, hi ? v[k] : v[k + 8], 4);
  }
  float b[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const bool hi = (g >> 1) & 1;
    b[k] = (hi ? a[k + 4] : a[k]) + __shfl_xor_sync(0xffffffffu, hi ? a[k] : a[k + 4], 8);
  }
  float2 r;
  const bool hi = (g >> 2) & 1;
  r.x = (hi ? b[2] : b[0]) + __shfl_xor_sync(0xffffffffu, hi ? b[0] : b[2], 16);
  r.y = (hi ? b[3] : b[1]) + __shfl_xor_sync(0xffffffffu, hi ? b[1] : b[3], 16);
  return r;
}

__device__ __forceinline__ void st_shared(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ float2 ld_shared_f2(uint32_t addr) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint4 ld_shared_v4(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint32_t ld_shared(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

// Warpgroup-local barrier (named barrier 1 + wgi, its 128 threads): orders the warpgroup's shared-memory writes
// before a wgmma of the same warpgroup that reads them.
__device__ __forceinline__ void wg_sync(int wgi) {
  asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wgi) : "memory");
}

// One query block for one warpgroup: everything but dQ (see the header). NQ (16, 32, 64) is the product width,
// >= the block's queries that exist; dSᵀ of those NQ queries goes to the warpgroup's rows of the dSᵀ buffer
// (sdsb: shared address of the buffer, sdsw: of the warpgroup's 64 rows).
// kPsm (4 warpgroups, 128 registers a thread): Pᵀ goes through those same rows (dV's A operand from shared
// memory, K-major) instead of staying in registers while dPᵀ is computed; with it in registers the kernel
// needed ~30 registers more than the 128 it has and ptxas spilled and serialized every wgmma (C7512).
// kDrop (attention dropout, mask Z and keep scale s of attention_dropout.h, as the resident kernel applies it):
// each n-block's keep masks are drawn next to its Pᵀ (rows: keys, keep_masks<true>) and packed into one register;
// dV += (Pᵀ ⊙ Z) dO with the dropped bf16 halves cleared (s applied once, at the end), and
// dSᵀ = Pᵀ ⊙ (Z s dPᵀ − D) with D from the dropped O. Only without kPsm: the dropped entries' undropped P is
// needed for dS, and at 4 warpgroups P lives in shared memory, where only one of the two fits.
template <int D, int NWG, int NQ, bool kPsm, bool kDrop>
__device__ __forceinline__ void key_block(float (&dk)[D / 2], float (&dv)[D / 2], uint32_t base, int i, int kr,
                                          bool kok0, bool kok1, float sl2, int q, int wgi, const MaskParams& mk,
                                          i64 bh) {
  static_assert(!(kPsm && kDrop), "wg backward: dropout needs Pᵀ in registers (at most 3 warpgroups)");
  using C = WgBwdCfg<D, NWG>;
  constexpr int NS = NQ / 2;   // score registers a thread (64 × NQ over 128 threads)
  // Every address from the shared-memory base (32-bit shared addresses, cheap to remake: at 4 warpgroups the
  // kernel has no registers to keep a dozen pointers live across the block).
  const int buf = i & 1;
  const uint32_t sKw = base + C::kOffK + wgi * C::kTile, sVw = base + C::kOffV + wgi * C::kTile;
  const uint32_t sQb = base + C::kOffQ + buf * C::kTile, sdOb = base + C::kOffdO + buf * C::kTile;
  const uint32_t sdsb = base + C::kOffdS + buf * NWG * C::kTile, sdsw = sdsb + wgi * C::kTile;
  const uint32_t l2b = base + C::kOffLse + 4 * 64 * i, Db = base + C::kOffD + 4 * 64 * buf;
  const uint32_t bar_dfull = base + C::kOffBar + C::kBarDFull + 8 * buf;
  const uint32_t bar_dsfull = base + C::kOffBar + C::kBarDsFull + 8 * buf;
  constexpr int NK = NQ / 16;  // 16-query slices: k-steps of the dV, dK products
  // Rows kr, kr + 8 of the dSᵀ tile, 16-byte chunks 2kk, 2kk + 1 (queries 16kk.., 16kk + 8..), 4 bytes at 4q: the
  // 8 rows of one store sit in 8 different chunk columns (swizzle), so no bank conflicts. Item x of slice kk is
  // the A-fragment register x (a[0] key g, a[1] key g + 8, a[2], a[3] the same 8 queries on).
  // 32-bit shared addresses: row kr + 8 has the same swizzle phase as row kr (1024 bytes on).
  const uint32_t row_addr = sdsb + (uint32_t)kr * 128 + 4 * q;
  const int phase = kr & 7;
  auto word_addr = [&](int kk, int x) -> uint32_t {
    return row_addr + 1024 * (x & 1) + (((2 * kk + (x >> 1)) ^ phase) << 4);
  };
  // Descriptors: each made once, just before its product (not all up front: 14 registers more and ptxas spills at
  // 4 warpgroups); a k-step moves the start address, i.e. adds (bytes >> 4) to the descriptor (addresses stay below
  // 256 KB, so the 14-bit field never carries): +2 per 32-byte K-major step, +128 per 2048-byte MN-major step
  // (kernels/wgmma.cuh items 4, 5).
  auto k_major = [](uint32_t tile) { return wg::sw128_desc(tile, 16, 1024); };
  auto mn_major = [](uint32_t tile) { return wg::sw128_desc(tile, 64 * 128, 1024); };
  // Sᵀ = K Qᵀ.
  float s[NS];
#pragma unroll
  for (int x = 0; x < NS; ++x) s[x] = 0.f;
  wg::fence_operand(s);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wg::Wgmma<NQ>::template ss<0, 0>(s, k_major(sKw) + 2 * kk, k_major(sQb) + 2 * kk, kk > 0 ? 1 : 0);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(s);
  // Pᵀ = exp(scale·Sᵀ − lse[query]) as bf16 A fragments (item 1 of wgmma.cuh: s[4j + 2r + c] is key row g + 8r,
  // query 8j + 2q + c; slice kk packs j = 2kk, 2kk + 1).
  uint32_t pa[NK][4];
  [[maybe_unused]] uint32_t kbits = 0;  // keep masks of the block's n-blocks (pack_keep)
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) {
    float p[2][4];
#pragma unroll
    for (int hj = 0; hj < 2; ++hj) {
      const int j = 2 * kk + hj;
      const float2 l2 = ld_shared_f2(l2b + 4 * (8 * j + 2 * q));
      p[hj][0] = kok0 ? fast_exp2(fmaf(s[4 * j + 0], sl2, -l2.x)) : 0.f;
      p[hj][1] = kok0 ? fast_exp2(fmaf(s[4 * j + 1], sl2, -l2.y)) : 0.f;
      p[hj][2] = kok1 ? fast_exp2(fmaf(s[4 * j + 2], sl2, -l2.x)) : 0.f;
      p[hj][3] = kok1 ? fast_exp2(fmaf(s[4 * j + 3], sl2, -l2.y)) : 0.f;
      if constexpr (kDrop) {  // rows: this warp's 16 keys of the warpgroup's 64; columns: the block's queries
        uint32_t m[2];
        keep_masks<true>(m, mk, bh, kr & ~15, 64 * i + 8 * j, kr & 15, q);  // kr & 15 = g
        kbits |= pack_keep(m, j);
      }
    }
    pa[kk][0] = pack_bf16(p[0][0], p[0][1]);
    pa[kk][1] = pack_bf16(p[0][2], p[0][3]);
    pa[kk][2] = pack_bf16(p[1][0], p[1][1]);
    pa[kk][3] = pack_bf16(p[1][2], p[1][3]);
    if constexpr (kPsm) {
#pragma unroll
      for (int x = 0; x < 4; ++x) st_shared(word_addr(kk, x), pa[kk][x]);
    }
  }
  if constexpr (kPsm) {
    wg::fence_proxy_async();
    wg_sync(wgi);  // all of the warpgroup's Pᵀ rows are written before its wgmma reads them
  }
  // dV += Pᵀ dO (in flight while dPᵀ is computed), then dPᵀ = V dOᵀ.
  float dp[NS];
#pragma unroll
  for (int x = 0; x < NS; ++x) dp[x] = 0.f;
  [[maybe_unused]] uint32_t pz[kDrop ? NK : 1][4];  // Pᵀ ⊙ Z: the dropped bf16 halves cleared
  if constexpr (kDrop) {
#pragma unroll
    for (int kk = 0; kk < NK; ++kk)
#pragma unroll
      for (int x = 0; x < 4; ++x) pz[kk][x] = pa[kk][x] & unpack_keep(kbits, 2 * kk + (x >> 1), x & 1);
  }
  wg::fence_operand(dv);
  wg::fence_operand(dp);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) {
    if constexpr (kPsm)
      wg::Wgmma<D>::template ss<0, 1>(dv, k_major(sdsw) + 2 * kk, mn_major(sdOb) + 128 * kk, 1);
    else if constexpr (kDrop)
      wg::Wgmma<D>::template rs<1>(dv, pz[kk], mn_major(sdOb) + 128 * kk, 1);
    else
      wg::Wgmma<D>::template rs<1>(dv, pa[kk], mn_major(sdOb) + 128 * kk, 1);
  }
  wg::commit();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wg::Wgmma<NQ>::template ss<0, 0>(dp, k_major(sVw) + 2 * kk, k_major(sdOb) + 2 * kk, kk > 0 ? 1 : 0);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(dv);
  wg::fence_operand(dp);
  tma::mbar_wait(bar_dfull, (i >> 1) & 1);  // D of the block, a share from every warpgroup (see the kernel)
  // dSᵀ = Pᵀ ⊙ (dPᵀ − D[query]) from the same rounded P (read back from the tile with kPsm: this thread's own
  // words, and the dV product that read them has completed), to bf16 once: the A operand of dK += dSᵀ Q, and (as
  // rows of keys in the dSᵀ tile, over P) of dQ = dS K.
  uint32_t da[NK][4];
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) {
    const float2 d0 = ld_shared_f2(Db + 4 * (16 * kk + 2 * q));
    const float2 d1 = ld_shared_f2(Db + 4 * (16 * kk + 8 + 2 * q));
    uint32_t pw[4];
#pragma unroll
    for (int x = 0; x < 4; ++x) pw[x] = kPsm ? ld_shared(word_addr(kk, x)) : pa[kk][x];
    const float2 p0 = unpack_bf16(pw[0]), p1 = unpack_bf16(pw[1]);
    const float2 p2 = unpack_bf16(pw[2]), p3 = unpack_bf16(pw[3]);
    float* e = dp + 8 * kk;
    if constexpr (kDrop) {  // the gradient of the dropped P is 0, of the kept s·dPᵀ
#pragma unroll
      for (int x = 0; x < 8; ++x)
        e[x] = keep_or_zero(e[x] * mk.scale, unpack_keep(kbits, 2 * kk + (x >> 2), (x >> 1) & 1), x & 1);
    }
    da[kk][0] = pack_bf16(p0.x * (e[0] - d0.x), p0.y * (e[1] - d0.y));  // key g,     queries 16kk + 2q, +1
    da[kk][1] = pack_bf16(p1.x * (e[2] - d0.x), p1.y * (e[3] - d0.y));  // key g + 8, same queries
    da[kk][2] = pack_bf16(p2.x * (e[4] - d1.x), p2.y * (e[5] - d1.y));  // key g,     queries 16kk + 8 + 2q, +1
    da[kk][3] = pack_bf16(p3.x * (e[6] - d1.x), p3.y * (e[7] - d1.y));  // key g + 8, same queries
  }
  // dK += dSᵀ Q; then dSᵀ to the tile (after the wait: the A registers of a wgmma in flight must not be read), and
  // the arrival on dsfull, which also says this warpgroup is done with the block's Q, dO and O: every product that
  // read them has completed, and D (which read O) was used above.
  wg::fence_operand(dk);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < NK; ++kk) wg::Wgmma<D>::template rs<1>(dk, da[kk], mn_major(sQb) + 128 * kk, 1);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(dk);
#pragma unroll
  for (int kk = 0; kk < NK; ++kk)
#pragma unroll
    for (int x = 0; x < 4; ++x) st_shared(word_addr(kk, x), da[kk][x]);
  wg::fence_proxy_async();  // the dSᵀ stores, for the dQ product (async proxy)
  tma::mbar_arrive(bar_dsfull);
}

template <int D, int NWG, bool kDrop>
__device__ __forceinline__ void key_block_dispatch(int q_valid, float (&dk)[D / 2], float (&dv)[D / 2], uint32_t base,
                                                   int i, int kr, bool kok0, bool kok1, float sl2, int q, int wgi,
                                                   const MaskParams& mk, i64 bh) {
  constexpr bool kPsm = NWG == 4;
  if (q_valid <= 16)
    key_block<D, NWG, 16, kPsm, kDrop>(dk, dv, base, i, kr, kok0, kok1, sl2, q, wgi, mk, bh);
  else if (q_valid <= 32)
    key_block<D, NWG, 32, kPsm, kDrop>(dk, dv, base, i, kr, kok0, kok1, sl2, q, wgi, mk, bh);
  else
    key_block<D, NWG, 64, kPsm, kDrop>(dk, dv, base, i, kr, kok0, kok1, sl2, q, wgi, mk, bh);
}

// dQ (64 queries × D) = dS K over the first NK 16-key slices: one complete wgmma group.
template <int D, int NWG, int NK>
__device__ __forceinline__ void dq_steps(float (&acc)[D / 2], uint32_t sdSb, uint32_t sK) {
  using C = WgBwdCfg<D, NWG>;
#pragma unroll
  for (int x = 0; x < D / 2; ++x) acc[x] = 0.f;
  wg::fence_operand(acc);
  wg::fence();
  const uint64_t ds_desc = wg::sw128_desc(sdSb, C::kKeys * 128, 1024);
  const uint64_t k_desc = wg::sw128_desc(sK, C::kKeys * 128, 1024);
#pragma unroll
  for (int kk = 0; kk < NK; ++kk)
    wg::Wgmma<D>::template ss<1, 1>(acc, ds_desc + 128 * kk, k_desc + 128 * kk, kk > 0 ? 1 : 0);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(acc);
}

template <int D, int NWG, int NK = 4 * NWG>
__device__ __forceinline__ void dq_dispatch(int nk, float (&acc)[D / 2], uint32_t sdSb, uint32_t sK) {
  if constexpr (NK > 1) {
    if (nk < NK) return dq_dispatch<D, NWG, NK - 1>(nk, acc, sdSb, sK);
  }
  dq_steps<D, NWG, NK>(acc, sdSb, sK);
}

// grid: B · H CTAs, one per (b, h); block: 128 · NWG threads. map_qkv: qkv as (B·T rows, 3·H·D columns); map_do,
// map_o: dout and out as (B·T rows, H·D columns); all in boxes of 64 rows.
template <int D, int NWG, bool kDrop>
__global__ void __launch_bounds__(128 * NWG, 1)
    wg_bwd_kernel(bf16* __restrict__ dqkv, const float* __restrict__ lse, const __grid_constant__ CUtensorMap map_qkv,
                  const __grid_constant__ CUtensorMap map_do, const __grid_constant__ CUtensorMap map_o, int Tn, int H,
                  float scale, MaskParams mk, float* __restrict__ bias_part) {
#if defined(VIT_WG_BWD_HAS_WGMMA)
  using C = WgBwdCfg<D, NWG>;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = wg::smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* const gbase = smem_raw + (base - raw);  // generic pointer to `base`
  const uint32_t sK = base + C::kOffK, sV = base + C::kOffV, sQ = base + C::kOffQ, sdO = base + C::kOffdO;
  const uint32_t sO = base + C::kOffO;
  const uint32_t sdS = base + C::kOffdS, bars = base + C::kOffBar;
  float* const sLse2 = reinterpret_cast<float*>(gbase + C::kOffLse);
  float* const sD = reinterpret_cast<float*>(gbase + C::kOffD);
  float* const sQacc = reinterpret_cast<float*>(gbase + C::kOffQacc);
  float* const sWsum = reinterpret_cast<float*>(gbase + C::kOffWsum);

  const int tid = threadIdx.x, wgi = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int g = lane / 4, q = lane % 4;
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const i64 ld = 3LL * H * D;  // token stride of dqkv
  const int n_qb = (Tn + 63) / 64;               // query blocks (<= NWG)
  const int n_kt = (Tn + 15) / 16;               // 16-key slices holding a real key
  const bool with_bias = bias_part != nullptr;

  const uint32_t bar_kv = bars + C::kBarKV, bar_qfull = bars + C::kBarQFull;
  const uint32_t bar_dsfull = bars + C::kBarDsFull, bar_dsempty = bars + C::kBarDsEmpty;
  const uint32_t bar_dfull = bars + C::kBarDFull;
  // Query block i's copies go to buffer i & 1 and complete on qfull[i & 1].
  auto load_query_block = [&](int i) {
    const uint32_t bar = bar_qfull + 8 * (i & 1), off = (i & 1) * C::kTile;
    tma::mbar_expect_tx(bar, 3 * C::kTile);
    tma::load_2d(sQ + off, &map_qkv, h * D, b * Tn + 64 * i, bar);
    tma::load_2d(sdO + off, &map_do, h * D, b * Tn + 64 * i, bar);
    tma::load_2d(sO + off, &map_o, h * D, b * Tn + 64 * i, bar);
  };
  if (tid == 0) {
    for (int w = 0; w < NWG; ++w) tma::mbar_init(bar_kv + 8 * w);
    for (int x = 0; x < 2; ++x) {
      tma::mbar_init(bar_qfull + 8 * x);
      tma::mbar_init(bar_dsfull + 8 * x, C::kThreads);  // every thread, after storing its dSᵀ words
      tma::mbar_init(bar_dsempty + 8 * x);              // the dQ warpgroup's first thread, after the product
      tma::mbar_init(bar_dfull + 8 * x, C::kThreads);   // every thread, after its share of D
    }
    tma::mbar_init_fence();
  }
  __syncthreads();
  // The copies in the order they are needed: warpgroup 0's K and V, the first query block, the other warpgroups'
  // K and V (each on its own barrier, so warpgroup 0 starts after 40 KB instead of all 112), the second block.
  if (tid == 0) {
    for (int w = 0; w < NWG; ++w) {
      tma::mbar_expect_tx(bar_kv + 8 * w, 2 * C::kTile);
      tma::load_2d(sK + w * C::kTile, &map_qkv, (H + h) * D, b * Tn + 64 * w, bar_kv + 8 * w);
      tma::load_2d(sV + w * C::kTile, &map_qkv, (2 * H + h) * D, b * Tn + 64 * w, bar_kv + 8 * w);
      if (w == 0) load_query_block(0);
    }
    if (n_qb > 1) load_query_block(1);
  }
  // While those fly: lse·log2 e of every query (+inf past T, so P = 0 there). D = rowsum(dO ⊙ O) is formed per
  // query block from O tiles that the copy engine brings with Q and dO: computed here from global memory (a
  // thread per row, strided loads) it cost more than a third of the kernel, exposed with one CTA per SM (runs 50-51).
  for (int r = tid; r < C::kKeys; r += C::kThreads) sLse2[r] = r < Tn ? lse[(i64)bh * Tn + r] * kLog2e : INFINITY;
  if (with_bias)
#pragma unroll
    for (int x = 0; x < D / 4; ++x) sQacc[x * C::kThreads + tid] = 0.f;

  const float sl2 = scale * kLog2e;
  const int kr = 64 * wgi + 16 * warp + g;  // this thread's key rows: kr, kr + 8
  const bool kok0 = kr < Tn, kok1 = kr + 8 < Tn;
  float dk[D / 2], dv[D / 2];
#pragma unroll
  for (int x = 0; x < D / 2; ++x) dk[x] = dv[x] = 0.f;

  __syncthreads();  // lse·log2 e (and the zeroed bias sums) written
  // No barrier over the CTA per block: each warpgroup waits only for what it reads (mbarriers), so the warpgroups
  // drift apart, one's exp and dS work overlapping another's products, and the dQ product of block i (by warpgroup
  // i mod NWG, once dsfull says every warpgroup stored its dSᵀ rows) delays only that warpgroup. With a
  // __syncthreads per block the whole CTA waited for it every block (docs/benchmarks.md runs 52, 55).
  for (int i = 0; i < n_qb; ++i) {
    const int buf = i & 1;
    if (i == 0) tma::mbar_wait(bar_kv + 8 * wgi, 0);           // this warpgroup's K and V have landed
    tma::mbar_wait(bar_qfull + 8 * buf, (i >> 1) & 1);        // Q, dO and O of block i have landed
    if (i >= 2) tma::mbar_wait(bar_dsempty + 8 * buf, ((i >> 1) - 1) & 1);  // dQ of block i − 2 read its dSᵀ
    // D = rowsum(dO ⊙ O) of block i from its O and dO tiles: row r by thread r of the first two warps, the 64
    // products in the resident kernel's order (one fmaf chain over the row), so D and everything after it has the
    // resident backward's bits; dfull tells every warpgroup when all rows are in (it waits at the dS step, long
    // after these ~100 instructions). Computed from global memory in a prologue (a thread per row, strided loads)
    // it cost more than a third of the kernel, exposed with one CTA per SM (runs 50-54).
    if (tid < 64) {
      float dsum = 0.f;
#pragma unroll
      for (int c = 0; c < D / 8; ++c) {  // the 8 chunks of row tid sit in 8 different bank groups (swizzle)
        const uint32_t off = buf * C::kTile + wg::sw128_offset(tid, c, 64);
        const uint4 ov = ld_shared_v4(sO + off), gv = ld_shared_v4(sdO + off);
        const uint32_t ow[4] = {ov.x, ov.y, ov.z, ov.w}, gw[4] = {gv.x, gv.y, gv.z, gv.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 of = unpack_bf16(ow[e]), gf = unpack_bf16(gw[e]);
          dsum = fmaf(of.x, gf.x, fmaf(of.y, gf.y, dsum));
        }
      }
      sD[64 * buf + tid] = dsum;
    }
    tma::mbar_arrive(bar_dfull + 8 * buf);
    key_block_dispatch<D, NWG, kDrop>(min(64, Tn - 64 * i), dk, dv, base, i, kr, kok0, kok1, sl2, q, wgi, mk, bh);
    if (i % NWG != wgi) continue;
    // dQ of block i by this warpgroup. Once every warpgroup has stored its dSᵀ rows, they are also done with the
    // block's Q, dO and O, so block i + 2 may be copied into the buffer.
    tma::mbar_wait(bar_dsfull + 8 * buf, (i >> 1) & 1);
    if (tid % 128 == 0 && i + 2 < n_qb) load_query_block(i + 2);
    for (int w = 0; w < NWG; ++w) tma::mbar_wait(bar_kv + 8 * w, 0);  // every K tile (landed long since)
    const int q_valid = min(64, Tn - 64 * i);
    float acc[D / 2];
    dq_dispatch<D, NWG>(n_kt, acc, sdS + buf * NWG * C::kTile, sK);
    if (tid % 128 == 0) tma::mbar_arrive(bar_dsempty + 8 * buf);  // the product has completed: the buffer is free
    // acc[4j + 2r + c] = dQ(query 16·warp + g + 8r, column 8j + 2q + c), before the scale. With the bias, the stored
    // values of rows g and g + 8 go into this thread's own running sums (folded over the warp once, at the end).
    const bool ok0 = 16 * warp + g < q_valid, ok1 = 16 * warp + g + 8 < q_valid;
    bf16* dst = dqkv + ((i64)b * Tn + 64 * i + 16 * warp + g) * ld + (i64)h * D + 2 * q;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      const uint32_t v0 = pack_bf16(acc[4 * j] * scale, acc[4 * j + 1] * scale);
      const uint32_t v1 = pack_bf16(acc[4 * j + 2] * scale, acc[4 * j + 3] * scale);
      if (ok0) *reinterpret_cast<uint32_t*>(dst + 8 * j) = v0;
      if (ok1) *reinterpret_cast<uint32_t*>(dst + 8 * ld + 8 * j) = v1;
      if (with_bias) {
        const float2 f0 = unpack_bf16(v0), f1 = unpack_bf16(v1);
        sQacc[(2 * j) * C::kThreads + tid] += (ok0 ? f0.x : 0.f) + (ok1 ? f1.x : 0.f);
        sQacc[(2 * j + 1) * C::kThreads + tid] += (ok0 ? f0.y : 0.f) + (ok1 ? f1.y : 0.f);
      }
    }
  }

  if constexpr (kDrop) {  // dV summed (Pᵀ ⊙ Z) dO: the keep scale once
#pragma unroll
    for (int x = 0; x < D / 2; ++x) dv[x] *= mk.scale;
  }
  // dK (scaled) and dV, rounded to bf16 once: the values stored are the values summed for the bias.
  float ks[D / 4], vs[D / 4];
#pragma unroll
  for (int x = 0; x < D / 4; ++x) ks[x] = vs[x] = 0.f;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = kr + 8 * r;
    if (key < Tn) {
      bf16* dkr = dqkv + ((i64)b * Tn + key) * ld + (i64)(H + h) * D + 2 * q;
      bf16* dvr = dkr + (i64)H * D;
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const uint32_t kv = pack_bf16(dk[4 * j + 2 * r] * scale, dk[4 * j + 2 * r + 1] * scale);
        const uint32_t vv = pack_bf16(dv[4 * j + 2 * r], dv[4 * j + 2 * r + 1]);
        *reinterpret_cast<uint32_t*>(dkr + 8 * j) = kv;
        *reinterpret_cast<uint32_t*>(dvr + 8 * j) = vv;
        const float2 kf = unpack_bf16(kv), vf = unpack_bf16(vv);
        ks[2 * j] += kf.x, ks[2 * j + 1] += kf.y;
        vs[2 * j] += vf.x, vs[2 * j + 1] += vf.y;
      }
    }
  }
  if (!with_bias) return;
  // Each warp's column sums (summed over its 16 rows) into its row of sWsum, then the rows added in warp order.
  // Sum x = 2j + c of a thread is column 8j + 2q + c.
  float* mine = sWsum + (wgi * 4 + warp) * 3 * D;
  const int base_x = 8 * (g & 1) + 4 * ((g >> 1) & 1) + 2 * ((g >> 2) & 1), col = 4 * base_x + 2 * q;
  {
    float qv[D / 4];
#pragma unroll
    for (int x = 0; x < D / 4; ++x) qv[x] = sQacc[x * C::kThreads + tid];
    const float2 sq = reduce_scatter_rows(qv, g);
    mine[col] = sq.x, mine[col + 1] = sq.y;
  }
  const float2 sk = reduce_scatter_rows(ks, g), sv = reduce_scatter_rows(vs, g);
  mine[D + col] = sk.x, mine[D + col + 1] = sk.y;
  mine[2 * D + col] = sv.x, mine[2 * D + col + 1] = sv.y;
  __syncthreads();
  for (int c = tid; c < 3 * D; c += C::kThreads) {
    float s = 0.f;
    for (int w = 0; w < 4 * NWG; ++w) s += sWsum[w * 3 * D + c];
    const int part = c / D;  // 0 q, 1 k, 2 v: the qkv layout's (3, H, D) columns
    bias_part[(i64)b * 3 * H * D + ((i64)part * H + h) * D + c % D] = s;
  }
#else
  __trap();  // not an sm_90a build (see attention_bwd_wg.h)
#endif
}

template <int D, int NWG>
void launch(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn, int H,
            float scale, const MaskParams& mk, cudaStream_t stream, float* bias_part) {
  using C = WgBwdCfg<D, NWG>;
  static_assert(C::kSmem + 1024 <= 228 * 1024, "wg backward: one CTA does not fit an SM's shared memory");
  const i64 blocks = (i64)B * H;
  if (blocks == 0) return;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: B·H = ", blocks, " is too large for one launch");
  const i64 rows = (i64)B * Tn;
  const TensorMapEncoder enc;  // one driver lookup for the three maps
  const CUtensorMap map_qkv = enc.bf16_2d(qkv, rows, 3LL * H * D, 3LL * H * D, 64, "attention qkv");
  const CUtensorMap map_do = enc.bf16_2d(dout, rows, (i64)H * D, (i64)H * D, 64, "attention dout");
  const CUtensorMap map_o = enc.bf16_2d(out, rows, (i64)H * D, (i64)H * D, 64, "attention out");
  auto kernel = wg_bwd_kernel<D, NWG, false>;
  if constexpr (NWG <= kMaxDropWarpgroups) {
    if (mk.on) kernel = wg_bwd_kernel<D, NWG, true>;
  } else {
    VIT_ASSERT(!mk.on, "wg_backward: attention dropout needs T <= ", 64 * kMaxDropWarpgroups);
  }
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmem));
  kernel<<<(unsigned)blocks, C::kThreads, C::kSmem, stream>>>(dqkv, lse, map_qkv, map_do, map_o, Tn, H, scale, mk,
                                                              bias_part);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool wg_backward_enabled() {
  const char* env = std::getenv("VIT_ATTN_WG_BWD");
  if (env == nullptr || *env == '\0') return true;
  const std::string v = env;
  VIT_REQUIRE(v == "0" || v == "1", "VIT_ATTN_WG_BWD must be 0 (the resident backward) or 1 (the wgmma backward), not '",
              v, "'");
  return v == "1";
}

bool wg_backward_supports(int Tn, int d, bool dropout) {
  return Tn <= (dropout ? 64 * kMaxDropWarpgroups : 256) && wg_forward_supports(Tn, d);
}

void wg_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                 int H, int d, float scale, const MaskParams& mk, cudaStream_t stream, float* bias_part) {
  VIT_REQUIRE(d == 64 && Tn >= 1 && Tn <= 256, "wg_backward: T = ", Tn, ", d = ", d,
              " has no wgmma kernel (d = 64, T <= 256; see attention_bwd_wg.h)");
  switch ((Tn + 63) / 64) {
    case 1: return launch<64, 1>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, stream, bias_part);
    case 2: return launch<64, 2>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, stream, bias_part);
    case 3: return launch<64, 3>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, stream, bias_part);
    default: return launch<64, 4>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, mk, stream, bias_part);
  }
}

}  // namespace vit::gpu::attn
