// Patch embedding, first half: patchify the image (the conv with kernel = stride = p as a GEMM's input).
//   img (B, C, H, W)  ->  patches (B·Hp·Wp, C·p·p), Hp = H/p, Wp = W/p, patch vector index c·p·p + ky·p + kx,
// matching the flattened timm conv weight (D, C, p, p). The GEMM with that weight is a linear (linear.h).
// No gradient flows into the image.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void patchify(T* patches, const float* img, int B, int C, int H, int W, int p);
}  // namespace vit::ref

namespace vit::gpu {
void patchify(bf16* patches, const float* img, int B, int C, int H, int W, int p, cudaStream_t stream);
}  // namespace vit::gpu
