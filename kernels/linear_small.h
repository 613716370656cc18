// A plain tiled linear layer for shapes cuBLASLt's bf16 path refuses (K or N not a multiple of 8: a head
// with 10 classes, a patch of 1·7·7 values). Same semantics as gpu::linear_forward / linear_backward;
// fp32 accumulation. These layers are tiny next to the transformer blocks, so simplicity wins here.
#pragma once
#include "kernels/types.h"

namespace vit::gpu {
void small_linear_forward(bf16* out, const bf16* x, const bf16* weight, const bf16* bias, i64 M, int K, int N,
                          cudaStream_t stream);
void small_linear_backward(bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x, const bf16* weight,
                           i64 M, int K, int N, bool dx_accumulate, cudaStream_t stream);
}  // namespace vit::gpu
