// Multi-head non-causal cross attention of a few latent queries over the tokens of each sample, as timm's
// AttentionPoolLatent ("map" global pooling) after its q and kv linears:
//   q  (B, L, H, d)      the latent queries (the caller materialises one copy per sample)
//   kv (B, T, 2, H, d)   the kv linear's output: k = kv[b, t, 0, h, :], v = kv[b, t, 1, h, :]
//   out (B, L, H, d)     out[b,l,h,:] = softmax(scale · q[b,l,h,:] · k[b,:,h,:]^T) · v[b,:,h,:]
//   lse (B, H, L)        log-sum-exp of each score row (saved for backward)
// Backward writes dq (=) and dkv (=, both the k and the v parts). Any L, T >= 1; head dims 1..128 on the GPU.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void cross_attention_forward(T* out, T* lse, const T* q, const T* kv, int B, int L, int Tn, int H, int d,
                             double scale);
template <class T>
void cross_attention_backward(T* dq, T* dkv, const T* dout, const T* q, const T* kv, const T* out, const T* lse, int B,
                              int L, int Tn, int H, int d, double scale);
}  // namespace vit::ref

namespace vit::gpu {
// Simple fp32 kernels (the op runs once per image, not once per block): deterministic, no atomics, no workspace.
void cross_attention_forward(bf16* out, float* lse, const bf16* q, const bf16* kv, int B, int L, int Tn, int H, int d,
                             float scale, cudaStream_t stream);
void cross_attention_backward(bf16* dq, bf16* dkv, const bf16* dout, const bf16* q, const bf16* kv, const bf16* out,
                              const float* lse, int B, int L, int Tn, int H, int d, float scale, cudaStream_t stream);
}  // namespace vit::gpu
