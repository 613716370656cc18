// Private to the attention kernels (attention*.cu), their GPU test and benchmark: the two implementations
// behind vit::gpu::attention_* and the tile primitives the fused (flash) kernels are built from.
//
// Fragment layouts of mma.sync.m16n8k16 (bf16 in, fp32 accumulate), lane = 4·g + t (g = lane/4, t = lane%4):
//   A (16×16, row-major [m][k]), 4 regs of bf16x2:  a0 = (m=g,   k=2t..2t+1)   a1 = (m=g+8, k=2t..2t+1)
//                                                   a2 = (m=g,   k=2t+8..+9)   a3 = (m=g+8, k=2t+8..+9)
//   B (16×8,  [k][n]),           2 regs of bf16x2:  b0 = (k=2t..2t+1, n=g)     b1 = (k=2t+8..+9, n=g)
//   C (16×8,  fp32),             4 floats:          c0,c1 = (m=g, n=2t, 2t+1)  c2,c3 = (m=g+8, n=2t, 2t+1)
// A C fragment pair (n-blocks 2j, 2j+1) is exactly an A fragment for k-slice j once packed to bf16, which is
// how P and dS feed the next product without leaving registers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/rng.h"
#include "kernels/attention_dropout.h"
#include "kernels/types.h"

namespace vit::gpu::attn {

// ---- implementations ----

enum class Variant : int {
  simple = 0,      // one warp per row, fp32 CUDA cores, any d <= 128: the readable baseline and the fallback
  flash = 1,       // fused tensor-core kernels (forward; backward as a dQ pass and a dK/dV pass), d in kFlashDims
  flash_wide = 2,  // flash with the other backward tiling for d = 64 (64-row steps, 1 CTA per SM), to compare
  resident = 3,    // K and V of one (b, h) held whole in shared memory: a forward without a streaming pipeline
                   // and a one-pass backward (5 tile products, dQ reduced in shared memory, deterministic);
                   // shapes it does not take (resident_*_supports) run the flash kernels
  fast = 4,        // forward: flash re-tiled (Q in registers, 4-warp CTAs, 3 per SM at d <= 64, one barrier per
                   // key block; attention_fwd_fast.cu); backward: resident where it applies, else flash
  m32 = 5,         // forward: 32 query rows per warp, FlashAttention-2's tiling, in the configuration that
                   // VIT_ATTN_M32_CFG picks (attention_fwd_m32.h); backward as fast
  wg = 6,          // forward: Hopper warpgroup MMA (wgmma, attention_fwd_wg.cu) where wg_forward_supports (d = 64
                   // on a compute capability 9.0 device; VIT_ATTN_WG_CFG picks the configuration; with dropout
                   // configuration kWgDropoutConfig), else m32 (flash with dropout);
                   // backward: wgmma too (attention_bwd_wg.cu) where wg_backward_supports (d = 64, T <= 256;
                   // with dropout T <= 192), else as fast
};
inline constexpr int kVariantCount = 7;
const char* variant_name(Variant v);

inline constexpr int kFlashDims[] = {32, 64, 80, 96, 128};
constexpr bool flash_supports(int d) {
  for (int x : kFlashDims)
    if (x == d) return true;
  return false;
}

// What the public API runs for head dim d: VIT_ATTN_VARIANT=N (0..6) in the environment forces variant N
// (a fused one where d has no fused kernel falls back to simple), else the fastest measured one.
Variant default_variant(int d);

// Backward workspace (all variants): D = rowsum(dO ⊙ O), fp32 (B, H, T).
i64 workspace_bytes(int B, int Tn, int H, int d);

// Attention dropout (drop.p > 0, attention_dropout.h) runs in every variant's backward and in the simple, flash
// and wg forwards; the resident, fast and m32 forwards do not take it: with p > 0 those variants run the flash
// forward.
void forward(Variant v, bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
             cudaStream_t stream, const AttnDropout& drop = {});
// dbias (optional): += the column sums of dqkv (the qkv linear's bias gradient), inside the resident
// backward's pass where it runs, else by a column-sum pass over dqkv.
void backward(Variant v, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
              int Tn, int H, int d, float scale, void* workspace, cudaStream_t stream, const AttnDropout& drop = {},
              float* dbias = nullptr);

// The dropout mask as the kernels take it, made once per call (on = false: no dropout, and the kernels
// instantiated without it, i.e. exactly the code that existed before dropout).
struct MaskParams {
  uint64_t seed = 0, site = 0;
  uint32_t thr = 0;   // keep iff the 16-bit uniform >= thr
  uint32_t thr2 = 0;  // thr in both 16-bit halves (for __vcmpgeu2)
  float scale = 1.f;  // keep scale 65536 / (65536 − thr)
  bool on = false;
};
MaskParams mask_params(const AttnDropout& drop);

// Launchers of each implementation (arguments already validated by forward/backward above).
void simple_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                    const MaskParams& mk, cudaStream_t stream);
void simple_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                     int H, int d, float scale, const MaskParams& mk, float* Dws, cudaStream_t stream);
void flash_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                   const MaskParams& mk, cudaStream_t stream);
void fast_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                  cudaStream_t stream);
void flash_backward(Variant v, bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                    int Tn, int H, int d, float scale, const MaskParams& mk, float* Dws, cudaStream_t stream);
// The resident kernels take (T, d) where these say so (d in kFlashDims assumed); otherwise use flash_*.
bool resident_forward_supports(int Tn, int d);
bool resident_backward_supports(int Tn, int d);
void resident_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                      cudaStream_t stream);
// bias_part (optional): B rows of 3·H·d floats, row b = Σ over the T rows of sample b of the stored dqkv (the
// qkv bias gradient's share of sample b; attn::backward adds the rows up).
void resident_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B,
                       int Tn, int H, int d, float scale, const MaskParams& mk, cudaStream_t stream,
                       float* bias_part = nullptr);

constexpr float kLog2e = 1.4426950408889634f;

// ---- tile primitives (device code only) ----
#if defined(__CUDACC__)

// Shared-memory tiles hold rows of D bf16 with a pitch of D + kPad elements: the extra 16 bytes move each
// row 4 banks on, so the 8 row addresses of one ldmatrix phase hit 8 different 16-byte bank groups.
constexpr int kPad = 8;

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy (L2 only). valid == false reads nothing and zero-fills the 16 bytes.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
// 4-byte variant (cp.async.cg only takes 16 bytes).
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8×8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, register i receives matrix i.
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Same, each matrix transposed on the way (lane 4g+t receives rows 2t, 2t+1 of column g).
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a · b for one 16×8×16 tile.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> bf16x2 (lo in the low half, as the fragments expect the lower column there).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// bf16x2 -> two floats (inverse of pack_bf16).
__device__ __forceinline__ float2 unpack_bf16(uint32_t v) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&v));
}

// 2^x with the SFU (relative error ~2^-22; 2^-inf = +0, which is how masked scores vanish).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// The C fragments of n-blocks 2j and 2j+1 packed into the A fragment of k-slice j.
__device__ __forceinline__ void c_pair_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = pack_bf16(c0[0], c0[1]);
  a[1] = pack_bf16(c0[2], c0[3]);
  a[2] = pack_bf16(c1[0], c1[1]);
  a[3] = pack_bf16(c1[2], c1[3]);
}

// Per-lane offsets (row, column) inside a 16×16 block of a shared tile for the three ldmatrix uses:
//   a_*  : A operand stored [m][k]               -> ldsm_x4       gives a0..a3
//   bn_* : B operand stored [n][k] (e.g. K for QKᵀ) -> ldsm_x4    gives {b0,b1} of n-block 0, {b0,b1} of n-block 1
//   bk_* : B operand stored [k][n] (e.g. V for PV)  -> ldsm_x4_trans, same register order as bn_*
struct LaneOffsets {
  int a_row, a_col, bn_row, bn_col, bk_row, bk_col;
  __device__ __forceinline__ explicit LaneOffsets(int lane)
      : a_row(lane & 15),
        a_col((lane >> 4) * 8),
        bn_row((lane & 7) + ((lane >> 4) << 3)),
        bn_col(((lane >> 3) & 1) * 8),
        bk_row(lane & 15),
        bk_col((lane >> 4) * 8) {}
};

// Copy rows [0, ROWS) of a bf16 slab (row r at src + r·stride, D contiguous elements) into a shared tile of
// pitch D + kPad. Rows >= valid are zero-filled and never read from global memory (row 0 must be valid).
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_rows(bf16* dst, const bf16* src, i64 stride, int valid, int tid) {
  constexpr int kChunks = D / 8;  // 16-byte pieces per row
  constexpr int kTotal = ROWS * kChunks;
#pragma unroll
  for (int it = 0; it < (kTotal + NT - 1) / NT; ++it) {
    const int c = tid + it * NT;
    if (kTotal % NT == 0 || c < kTotal) {
      const int r = c / kChunks, k = c % kChunks;
      const bool ok = r < valid;
      cp_async_16(dst + r * (D + kPad) + k * 8, src + (ok ? (i64)r * stride : 0) + k * 8, ok);
    }
  }
}

// load_rows with run-time shape: rows [0, rows) with NT threads (any count), rows >= valid zero-filled.
template <int D>
__device__ __forceinline__ void load_rows_rt(bf16* dst, const bf16* src, i64 stride, int rows, int valid, int tid,
                                             int nthreads) {
  constexpr int kChunks = D / 8;
  for (int c = tid; c < rows * kChunks; c += nthreads) {
    const int r = c / kChunks, k = c % kChunks;
    const bool ok = r < valid;
    cp_async_16(dst + r * (D + kPad) + k * 8, src + (ok ? (i64)r * stride : 0) + k * 8, ok);
  }
}

// cp_async_wait with a run-time count; counts past 7 wait for more than asked (never less), which is safe.
__device__ __forceinline__ void cp_async_wait_dyn(int n) {
  switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    default: cp_async_wait<7>(); break;
  }
}

// Sum over the 4 lanes of a quad (the lanes sharing g, i.e. one fragment row).
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Online softmax with a stale running max (FlashAttention-4's conditional rescaling). A lane holds rows g and
// g + 8: m_run[r] is the max its P = 2^(sl2·(s − m_run)) and l are taken against, mx[r] the row max up to and
// including the new block. The accumulated O and l need rescaling only when m_run moves; it moves only when a
// row's max grew by more than kMaxGrowthLog2 in the exp2 domain (always on the first block, m_run = −inf), so
// P <= 2^kMaxGrowthLog2 (exact in bf16's exponent range, and fp32 sums stay far from overflow) and the end result
// O / l, lse = scale·m_run + ln l is the same function. Warp-uniform: returns false, with nothing to do, unless
// some row of the warp moved; otherwise sets corr (1 for the rows that kept their max) and m_run.
inline constexpr float kMaxGrowthLog2 = 8.f;
__device__ __forceinline__ bool stale_max_update(float (&m_run)[2], const float (&mx)[2], float sl2,
                                                 float (&corr)[2]) {
  const bool grow0 = (mx[0] - m_run[0]) * sl2 > kMaxGrowthLog2;
  const bool grow1 = (mx[1] - m_run[1]) * sl2 > kMaxGrowthLog2;
  if (!__any_sync(0xffffffffu, grow0 || grow1)) return false;
  corr[0] = grow0 ? fast_exp2((m_run[0] - mx[0]) * sl2) : 1.f;  // 0 on the first block (m_run = −inf)
  corr[1] = grow1 ? fast_exp2((m_run[1] - mx[1]) * sl2) : 1.f;
  if (grow0) m_run[0] = mx[0];
  if (grow1) m_run[1] = mx[1];
  return true;
}

// ---- attention dropout in the fragment layouts ----

// Where a warp's tile sits for the mask: its (b, h), first row and first column (both even). Rows are queries
// and columns keys, or the other way round in the transposed dK/dV tiles.
struct MaskTile {
  MaskParams mk;
  i64 bh;
  int row0, col0;
};

// Keep masks of one lane's C fragment (rows g and g+8, columns 2t and 2t+1) of the 16×8 tile at rows row0..,
// columns col0.. (attention_dropout.h defines the mask). kRowsAreKeys: rows are keys, columns queries.
// m[r] is for row g + 8r: 0xFFFF in its low half if column 2t is kept, in its high half if 2t+1 is.
// Rows g and g+8 have the same parity, so the lane needs half of the 2×2-block draw of each of two row pairs:
// it draws one (even g: the pair of row g, odd g: of row g+8) and trades the other half with lane ^ 4 (g ^ 1),
// which drew the other pair. Warp-collective: all 32 lanes must call it together.
template <bool kRowsAreKeys>
__device__ __forceinline__ void keep_masks(uint32_t (&m)[2], const MaskParams& mk, i64 bh, int row0, int col0, int g,
                                           int t) {
  const int odd = g & 1;
  const int row = row0 + g + 8 * odd, col = col0 + 2 * t;
  const uint64_t w = rng::bits(mk.seed, mk.site,
                               kRowsAreKeys ? attn_mask::counter(bh, col, row) : attn_mask::counter(bh, row, col));
  const uint32_t lo = (uint32_t)w, hi = (uint32_t)(w >> 32);
  // The 16-bit uniforms of (column 2t, column 2t+1) for a row of parity ρ sit at slots 2·(i mod 2) + (j mod 2):
  // rows queries (i = row): slots 2ρ, 2ρ+1 (32-bit half ρ); rows keys (j = row): slots ρ, 2+ρ.
  const uint32_t u0 = kRowsAreKeys ? __byte_perm(lo, hi, 0x5410) : lo;  // ρ = 0
  const uint32_t u1 = kRowsAreKeys ? __byte_perm(lo, hi, 0x7632) : hi;  // ρ = 1
  const uint32_t own = odd ? u1 : u0;
  const uint32_t got = __shfl_xor_sync(0xffffffffu, odd ? u0 : u1, 4);
  const uint32_t k_own = __vcmpgeu2(own, mk.thr2), k_got = __vcmpgeu2(got, mk.thr2);
  m[0] = odd ? k_got : k_own;  // row g: even g drew its pair
  m[1] = odd ? k_own : k_got;  // row g + 8: odd g drew its pair
}

// x where the 16-bit half of m for column parity c is set, else 0 (a select: 0 · inf stays out).
__device__ __forceinline__ float keep_or_zero(float x, uint32_t m, int c) {
  return (c ? (m >> 16) : (m & 0xFFFFu)) ? x : 0.f;
}

// The masks of up to 8 n-blocks packed into one register (the dK/dV tiles keep them from P to dS; 2 registers
// per n-block would spill at d = 64): n-block n, row g + 8r has bit 2n + r for column 2t, bit 16 + 2n + r for 2t+1.
__device__ __forceinline__ uint32_t pack_keep(const uint32_t (&m)[2], int n) {
  return ((m[0] & 0x00010001u) | ((m[1] & 0x00010001u) << 1)) << (2 * n);
}
// keep_masks' m[r] of n-block n back from the packed bits.
__device__ __forceinline__ uint32_t unpack_keep(uint32_t bits, int n, int r) {
  return ((bits >> (2 * n + r)) & 0x00010001u) * 0xFFFFu;
}

#endif  // __CUDACC__

}  // namespace vit::gpu::attn
