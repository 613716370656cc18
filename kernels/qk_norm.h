// timm's qk_norm: inside attention, after the qkv linear, the q and k vectors of every head are layer-
// normalised over the head dim (q_norm / k_norm = LayerNorm(head_dim), eps 1e-6 in timm), each with its own
// weight and bias of size hd; v is untouched. The activation is the qkv linear's output, (B·T, 3, H, hd)
// row-major (q = index 0 of the "3" axis, k = 1, v = 2), and `out` has the same layout with v copied, so
// the attention kernels read it unchanged. mean/rstd: (2, B·T·H), q rows first then k rows, each in
// (bt, h) order. Backward: dqkv is written (=), LN backward on q and k rows and the identity on v;
// dqw/dqb/dkw/dkb accumulate (+=). out/dqkv must not alias any input.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void qk_norm_forward(T* out, T* mean, T* rstd, const T* qkv, const T* qw, const T* qb, const T* kw, const T* kb,
                     i64 BT, int H, int hd, double eps);
template <class T>
void qk_norm_backward(T* dqkv, T* dqw, T* dqb, T* dkw, T* dkb, const T* dout, const T* qkv, const T* qw,
                      const T* kw, const T* mean, const T* rstd, i64 BT, int H, int hd);
}  // namespace vit::ref

namespace vit::gpu {
// hd in 1..128 (vectorised when hd % 8 == 0 and the pointers are 16-byte aligned), any BT and H.
void qk_norm_forward(bf16* out, float* mean, float* rstd, const bf16* qkv, const bf16* qw, const bf16* qb,
                     const bf16* kw, const bf16* kb, i64 BT, int H, int hd, float eps, cudaStream_t stream);
// scratch: qk_norm_backward_scratch_floats(BT, H, hd) floats for the deterministic two-stage reduction of
// the four parameter gradients.
i64 qk_norm_backward_scratch_floats(i64 BT, int H, int hd);
void qk_norm_backward(bf16* dqkv, float* dqw, float* dqb, float* dkw, float* dkb, const bf16* dout, const bf16* qkv,
                      const bf16* qw, const bf16* kw, const float* mean, const float* rstd, i64 BT, int H, int hd,
                      float* scratch, cudaStream_t stream);
}  // namespace vit::gpu
