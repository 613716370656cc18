// Fused attention forward with K and V resident in shared memory (Variant::resident): one CTA per (b, h,
// block of nw·16 query rows), nw <= 8 warps of 16 rows each. The whole K and V of the (b, h) are copied once,
// in 64-key chunks that are each their own cp.async group, all issued up front: the warps start on chunk 0
// while the rest is in flight, and no buffer is ever refilled, so there is one barrier per chunk and none
// behind it. At d = 32 each warp keeps its Q fragments in registers.
//
// nw is chosen per T so the query tiles of a (b, h) fill the CTAs evenly: T = 197 has 13 tiles of 16 rows,
// run as 2 CTAs of 7 warps (13 of 14 warps busy) instead of 2 CTAs of 8 (13 of 16). Two CTAs share an SM
// while shared memory allows (76 KB at T = 197, d = 64); the rest of the T, d range runs flash_fwd_kernel.
#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/attention_fwd_block.cuh"
#include "kernels/attention_tiles.cuh"

namespace vit::gpu::attn {
namespace {

constexpr int kResFwdMaxWarps = 8;
constexpr int kResFwdBN = 64;                 // keys per chunk (one cp.async group each)
constexpr int kResFwdMaxSmem = 113 * 1024;    // 2 CTAs per SM (228 KB less 1 KB reserved per CTA)
constexpr int kResFwdMaxT = 1024;             // bounds the chunk count (cp_async_wait_dyn stays exact to 8)
// Wider heads spill under the 128 registers of 2 CTAs per SM (ptxas -v: 24 bytes at d = 80, 128 at d = 128)
// and their K, V rarely fit twice per SM anyway: they run flash_fwd_kernel.
constexpr int kResFwdMaxD = 64;

int round16(int x) { return (x + 15) / 16 * 16; }

struct FwdGrid {
  int n_qblk, warps;
};
// Query tiles of 16 rows spread over the fewest CTAs of at most 8 warps, as evenly as possible.
FwdGrid fwd_grid(int Tn) {
  const int tiles = (Tn + 15) / 16;
  const int n_qblk = (tiles + kResFwdMaxWarps - 1) / kResFwdMaxWarps;
  return {n_qblk, (tiles + n_qblk - 1) / n_qblk};
}
int fwd_smem(int Tn, int d, int warps) { return (warps * 16 + 2 * round16(Tn)) * (d + kPad) * (int)sizeof(bf16); }

// grid: n_qblk · B · H CTAs (query block fastest: the CTAs of one (b, h) run together and share K, V in L2);
// block: 32 · warps threads.
template <int D>
__global__ void __launch_bounds__(32 * kResFwdMaxWarps, 2)
    resident_fwd_kernel(bf16* __restrict__ out, float* __restrict__ lse, const bf16* __restrict__ qkv, int Tn,
                        int H, int n_qblk, float scale) {
  constexpr int P = D + kPad, BN = kResFwdBN;
  constexpr bool kQReg = D <= 32;  // at d = 64 the 16 registers cost a spill (ptxas -v)
  extern __shared__ __align__(16) unsigned char smem[];
  const int nthreads = blockDim.x, warps = nthreads / 32, BM = 16 * warps;
  const int Tp = (Tn + 15) / 16 * 16;        // key rows held (rows past T zero-filled)
  bf16* sQ = reinterpret_cast<bf16*>(smem);  // (BM, P)
  bf16* sK = sQ + BM * P;                    // (Tp, P)
  bf16* sV = sK + Tp * P;                    // (Tp, P)

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
  const int n_ch = (Tp + BN - 1) / BN;
  const int row0 = q0 + warp * 16;
  const bool active = row0 < Tn;

  // Group 0: Q and chunk 0; group j: chunk j. Chunk j starts at key 64·j < Tp, so its row 0 exists.
  load_rows_rt<D>(sQ, qg + (i64)q0 * ld, ld, BM, Tn - q0, tid, nthreads);
  for (int j = 0; j < n_ch; ++j) {
    const int k0 = j * BN, rows = min(BN, Tp - k0);
    load_rows_rt<D>(sK + k0 * P, kg + (i64)k0 * ld, ld, rows, Tn - k0, tid, nthreads);
    load_rows_rt<D>(sV + k0 * P, vg + (i64)k0 * ld, ld, rows, Tn - k0, tid, nthreads);
    cp_async_commit();
  }

  const float sl2 = scale * kLog2e;
  float o[D / 8][4];
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  uint32_t qa[D / 16][4];
  const bf16* sQw = sQ + warp * 16 * P;

  for (int j = 0; j < n_ch; ++j) {
    cp_async_wait_dyn(n_ch - 1 - j);  // this thread's copies of chunk j (and Q) have landed
    __syncthreads();                  // ... and everyone else's
    if (!active) continue;            // no barrier below depends on this warp's work
    if (kQReg && j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(qa[kk], smem_addr(sQw + lo.a_row * P + kk * 16 + lo.a_col));
    }
    const int kv_valid = min(BN, Tn - j * BN);
    const bf16* sKb = sK + j * BN * P;
    const bf16* sVb = sV + j * BN * P;
    if (kv_valid == BN)
      fwd_block<D, BN, true, kQReg>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
    else
      fwd_block<D, BN, false, kQReg>(qa, sQw, sKb, sVb, kv_valid, sl2, lo, t, o, m_run, l_run);
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
void launch_resident_fwd(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, float scale,
                         cudaStream_t stream) {
  const FwdGrid grid = fwd_grid(Tn);
  const int smem = fwd_smem(Tn, D, grid.warps);
  const i64 blocks = (i64)grid.n_qblk * B * H;
  VIT_REQUIRE(blocks < (1LL << 31), "attention: ", blocks, " CTAs is too many for one launch");
  CUDA_CHECK(cudaFuncSetAttribute(resident_fwd_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  resident_fwd_kernel<D><<<(unsigned)blocks, 32 * grid.warps, smem, stream>>>(out, lse, qkv, Tn, H, grid.n_qblk,
                                                                              scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool resident_forward_supports(int Tn, int d) {
  return d <= kResFwdMaxD && Tn <= kResFwdMaxT && fwd_smem(Tn, d, fwd_grid(Tn).warps) <= kResFwdMaxSmem;
}

void resident_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                      cudaStream_t stream) {
  switch (d) {
    case 32: return launch_resident_fwd<32>(out, lse, qkv, B, Tn, H, scale, stream);
    case 64: return launch_resident_fwd<64>(out, lse, qkv, B, Tn, H, scale, stream);
    default: VIT_ASSERT(false, "resident_forward: no kernel for head dim ", d);
  }
}

}  // namespace vit::gpu::attn
