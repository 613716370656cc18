// Row broadcast for learned queries shared by every sample (timm AttentionPoolLatent's latent.expand(B)):
//   out[b·L + l, :] = src[l, :]            for b < B, l < L, rows of C
// Backward: dsrc[l, :] += Σ_b dout[b·L + l, :]   (parameter gradient: accumulates; fixed summation order).
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void broadcast_rows_forward(T* out, const T* src, int B, int L, int C);
template <class T>
void broadcast_rows_backward(T* dsrc, const T* dout, int B, int L, int C);
}  // namespace vit::ref

namespace vit::gpu {
void broadcast_rows_forward(bf16* out, const bf16* src, int B, int L, int C, cudaStream_t stream);
void broadcast_rows_backward(float* dsrc, const bf16* dout, int B, int L, int C, cudaStream_t stream);
}  // namespace vit::gpu
