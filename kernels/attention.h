// Multi-head non-causal softmax attention, as timm's Attention after the qkv linear:
//   qkv (B, T, 3, H, d)  ->  out (B, T, H, d),  lse (B, H, T) = log-sum-exp of each score row (saved for backward)
//   out[b,t,h,:] = softmax(scale · q[b,t,h,:] · k[b,:,h,:]^T) · v[b,:,h,:]
// Backward writes dqkv (=) in the qkv layout. Any T >= 1; head dims 32..128 on the GPU.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int H, int d, double scale);
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int Tn, int H, int d,
                        double scale);
}  // namespace vit::ref

namespace vit::gpu {
// Fused flash-style kernels: the T×T matrix never reaches device memory.
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                       cudaStream_t stream);
i64 attention_backward_workspace_bytes(int B, int Tn, int H, int d);
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                        int H, int d, float scale, void* workspace, cudaStream_t stream);
}  // namespace vit::gpu
