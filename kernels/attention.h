// Multi-head non-causal softmax attention, as timm's Attention after the qkv linear:
//   qkv (B, T, 3, H, d)  ->  out (B, T, H, d),  lse (B, H, T) = log-sum-exp of each score row (saved for backward)
//   out[b,t,h,:] = (softmax(scale · q[b,t,h,:] · k[b,:,h,:]^T) ⊙ Z · s) · v[b,:,h,:]
// with the attention dropout mask Z and keep scale s of attention_dropout.h (Z = 1, s = 1 when drop.p = 0, the
// default). lse is always that of the undropped scores. The backward takes the same `drop` (the mask is
// regenerated) and the dropped `out`, and writes dqkv (=) in the qkv layout. Any T >= 1; head dims 32..128 on
// the GPU.
#pragma once
#include "kernels/attention_dropout.h"
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int H, int d, double scale,
                       const AttnDropout& drop = {});
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int Tn, int H, int d,
                        double scale, const AttnDropout& drop = {});
// dbias[c] += Σ over the B·T rows of dqkv[row, c], c < 3·H·d: the qkv linear's bias gradient, which the GPU
// backward sums in its own pass (see gpu::attention_backward).
template <class T>
void qkv_bias_grad(T* dbias, const T* dqkv, int B, int Tn, int H, int d);
}  // namespace vit::ref

namespace vit::gpu {
// Fused flash-style kernels: the T×T matrix never reaches device memory.
void attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int Tn, int H, int d, float scale,
                       cudaStream_t stream, const AttnDropout& drop = {});
i64 attention_backward_workspace_bytes(int B, int Tn, int H, int d);
// dbias (optional, fp32, 3·H·d): += the column sums of dqkv as stored, i.e. the qkv linear's bias gradient,
// so that linear needs no pass of its own over dqkv (the resident and wgmma backwards sum while they write).
void attention_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const bf16* out, const float* lse, int B, int Tn,
                        int H, int d, float scale, void* workspace, cudaStream_t stream, const AttnDropout& drop = {},
                        float* dbias = nullptr);
}  // namespace vit::gpu
