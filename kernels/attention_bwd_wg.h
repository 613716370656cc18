// Private to the attention kernels (attention*.cu), their GPU test and benchmark: the attention backward on
// Hopper warpgroup MMA (wgmma.mma_async, sm_90a; attention_bwd_wg.cu), the resident backward's job
// (attention_bwd_resident.cu) with FlashAttention-3's instructions. Same inputs, outputs and semantics as
// resident_backward:
//   dout, qkv, out, lse -> dqkv (B, T, 3, H, d) bf16 (=), and optionally bias_part (B rows of 3·H·d floats,
//   row b = Σ over the T rows of sample b of dqkv as stored: the qkv bias gradient's share of sample b).
// Head dim 64, 1 <= T <= 256 (all keys of one (b, h) held in shared memory), with attention dropout T <= 192. It
// needs the sm_90a build (the default VIT_CUDA_ARCHS) and a compute capability 9.0 device.
#pragma once
#include <cuda_runtime.h>

#include "kernels/attention_tiles.cuh"  // MaskParams
#include "kernels/types.h"

namespace vit::gpu::attn {

// Whether wg_backward takes this shape (with attention dropout or not) on the current device (false, not an error,
// without a usable device).
bool wg_backward_supports(int Tn, int d, bool dropout = false);

// VIT_ATTN_WG_BWD=0 turns the wgmma backward off (Variant::wg then runs the resident backward, as before it
// existed: an A/B switch for benchmarks); unset, empty or 1 leaves it on; anything else is refused.
bool wg_backward_enabled();

// Arguments as resident_backward (validated by the caller: alignment, d, T, wg_backward_supports(T, d, mk.on)).
void wg_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                 int H, int d, float scale, const MaskParams& mk, cudaStream_t stream, float* bias_part = nullptr);

}  // namespace vit::gpu::attn
