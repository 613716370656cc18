// Private to the attention kernels (attention*.cu), their GPU test and benchmark: the forward of
// Variant::m32 (attention_fwd_m32.cu), FlashAttention-2's tiling for small heads: each warp owns 32 query rows
// (two m16 tiles), so every K and V fragment read from shared memory feeds two MMAs. It comes in a few
// configurations (warps per CTA, keys per step, Q in registers or re-read from shared memory, CTAs per SM) so
// one benchmark run can pick the fastest; VIT_ATTN_M32_CFG=N selects one for Variant::m32.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "kernels/types.h"

namespace vit::gpu::attn {

// The tiling of one configuration at one head dim.
struct M32Traits {
  int warps;       // warps per CTA, each owning 32 query rows
  int bn;          // keys per main-loop step (per shared-memory buffer, per barrier)
  int bc;          // keys per online-softmax step (bn / bc steps per block): the score registers follow bc
  bool q_in_regs;  // Q A-fragments held in registers for the whole kernel (else re-read from shared memory)
  int min_blocks;  // __launch_bounds__ CTAs per SM: caps registers at 65536 / (32 · warps · min_blocks)
};

inline constexpr int kM32ConfigCount = 6;
// The default by shape, from the H100 measurements (docs/benchmarks.md runs 14 and 17): at d <= 64 with
// T <= 256 the 4-CTA configuration 5 is fastest (ViT-B B256 T197: 192.7 us; cfg 1 207.7, the others 209-239);
// longer rows and wider heads favour 128-key blocks, configuration 2 (T577 d64: 145-147 us vs 166 for cfg 5;
// T257 d80: 147 us; d128: all within 2%).
constexpr int m32_default_config(int Tn, int d) { return d <= 64 && Tn <= 256 ? 5 : 2; }

// Per head dim, each configuration takes the largest steps that compile without spills under its register cap
// (ptxas -v in attention_fwd_m32.cu): the O accumulators alone take d registers per thread, so wider heads
// take 32-key softmax steps and keep Q in shared memory, and at d >= 96 128-key blocks would not let two CTAs
// share an SM's shared memory.
constexpr M32Traits m32_traits(int cfg, int d) {
  const int bc = d <= 64 ? 64 : 32;  // softmax step that fits 255 registers (d = 80 with Q re-read: 64)
  switch (cfg) {
    case 0: return {4, 64, bc, d <= 80, 2};                                // Q in registers
    case 1: return {4, 64, d <= 64 ? 16 : 32, false, d <= 64 ? 3 : 2};    // 3 CTAs per SM (168 registers)
    case 2: return {4, d <= 80 ? 128 : 64, d == 80 ? 64 : bc, false, 2};  // FA2's: 128-key blocks, Q re-read
    case 3: return {8, 64, d == 80 ? 64 : bc, false, 1};                  // 8 warps (256 query rows) per CTA
    case 4: return {4, d <= 80 ? 128 : 64, bc, d <= 80, 2};               // 128-key blocks, Q in registers
    case 5: return {4, 64, d <= 64 ? 16 : 32, false, d <= 64 ? 4 : 2};    // cfg 1 at 4 CTAs per SM (128 registers)
    default: return {0, 0, 0, false, 0};
  }
}

// "cfg2 w4.bn128.bc64.qsmem.2cta": the configuration's tiling at head dim d, for benchmark lines and messages.
std::string m32_config_name(int cfg, int d);

// VIT_ATTN_M32_CFG=N (0..kM32ConfigCount-1) if set, else m32_default_config(Tn, d); anything else is refused.
int m32_config(int Tn, int d);

// The m32 forward with configuration cfg (d in kFlashDims; arguments already validated; no dropout).
void m32_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale, int cfg,
                 cudaStream_t stream);

}  // namespace vit::gpu::attn
