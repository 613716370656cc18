// Private to the attention kernels (attention*.cu), their GPU test and benchmark: a Hopper forward built on
// warpgroup MMA (wgmma.mma_async, sm_90a; attention_fwd_wg.cu), FlashAttention-3's instruction choice for the
// m32 forward's job. Same inputs, outputs and semantics as m32_forward, plus attention dropout (as flash_forward):
//   qkv (B, T, 3, H, d) bf16 -> out (B, T, H, d) bf16, lse (B, H, T) fp32 = scale·max + ln Σ exp(scale·(s − max)).
// Head dim 64 only for now (the kernel is templated on it; 128 needs its instantiation and a test), any T >= 1.
// It needs the sm_90a build (the default VIT_CUDA_ARCHS) and a compute capability 9.0 device.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "kernels/attention_tiles.cuh"  // MaskParams
#include "kernels/types.h"

namespace vit::gpu::attn {

// The tiling of one configuration: warpgroups (64 query rows each) per CTA, keys per shared-memory block,
// and the CTAs per SM its __launch_bounds__ asks for (registers capped at 65536 / (128 · wg · min_blocks)).
struct WgTraits {
  int wg;
  int bn;
  int min_blocks;
};

inline constexpr int kWgConfigCount = 5;
constexpr WgTraits wg_traits(int cfg) {
  switch (cfg) {
    case 0: return {1, 64, 4};   // 42 KB shared, 4 CTAs (16 warps) per SM, 97 registers
    case 1: return {2, 64, 2};   // K/V blocks shared by 128 query rows
    case 2: return {3, 64, 1};   // 192 query rows per CTA
    case 3: return {1, 128, 3};  // 128-key blocks: half the barriers, 64 score registers
    case 4: return {1, 64, 5};   // cfg 0 at 5 CTAs (20 warps) per SM: 96 registers, no spills
    default: return {0, 0, 0};
  }
}
// The configuration with the most warps per SM, since each warpgroup waits on every product and the other CTAs
// are what hides that. Measured on the H100 (tools/bench_attention_wg, docs/benchmarks.md runs 22 and 31): with the
// copy engine the fastest at T = 197 (173 us; cfg0 187, cfg3 193) and T = 577 (121 us; cfg3 127, cfg0 131).
constexpr int wg_default_config(int Tn, int d) { return 4; }

// "cfg0 wg1.bn64.4cta": the configuration's tiling, for benchmark lines and messages.
std::string wg_config_name(int cfg);

// VIT_ATTN_WG_CFG=N (0..kWgConfigCount-1) if set, else wg_default_config(Tn, d); anything else is refused.
int wg_config(int Tn, int d);

// Whether wg_forward takes this shape on the current device: d == 64, Tn >= 1, compute capability 9.0 (false,
// not an error, without a usable device).
bool wg_forward_supports(int Tn, int d);

// The forward in configuration wg_config(Tn, d). Arguments as m32_forward (validated by the caller). With attention
// dropout (mk.on) it runs configuration kWgDropoutConfig: 4 CTAs per SM leave the mask's registers room.
inline constexpr int kWgDropoutConfig = 0;
void wg_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                cudaStream_t stream, const MaskParams& mk = {});
// The same in configuration cfg.
void wg_forward_cfg(int cfg, bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                    cudaStream_t stream);
// CTAs of configuration cfg (d = 64) that fit one SM of the current device (cudaOccupancy...): wg_traits' min_blocks
// when the registers and shared memory come out as planned.
int wg_ctas_per_sm(int cfg);

}  // namespace vit::gpu::attn
