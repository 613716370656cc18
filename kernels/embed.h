// Token assembly after patch embedding, as timm's _pos_embed:
//   x (B, T, D) with T = n_prefix + Np, n_prefix = (cls ? 1 : 0) + R register tokens;
//   prefix order: [cls, reg_0 .. reg_{R-1}], then the patch tokens.
//   pos (Tpos, D) is added to all tokens (Tpos = T), or, with no_embed_class, to the patch tokens only
//   (Tpos = Np). pos may be null (pos_embed = "none"); cls / reg null when absent.
// Backward: dpatch written (=); dcls, dreg, dpos accumulate (+=).
#pragma once
#include "kernels/types.h"

namespace vit {
struct EmbedShape {
  int B, Np, D, R;
  bool cls, no_embed_class;
  int prefix() const { return (cls ? 1 : 0) + R; }
  int tokens() const { return prefix() + Np; }
  int pos_tokens() const { return no_embed_class ? Np : tokens(); }
};
}  // namespace vit

namespace vit::ref {
template <class T>
void embed_forward(T* x, const T* patch_tokens, const T* cls, const T* reg, const T* pos, const EmbedShape& s);
template <class T>
void embed_backward(T* dpatch, T* dcls, T* dreg, T* dpos, const T* dx, const EmbedShape& s);
}  // namespace vit::ref

namespace vit::gpu {
void embed_forward(bf16* x, const bf16* patch_tokens, const bf16* cls, const bf16* reg, const bf16* pos,
                   const EmbedShape& s, cudaStream_t stream);
void embed_backward(bf16* dpatch, float* dcls, float* dreg, float* dpos, const bf16* dx, const EmbedShape& s,
                    cudaStream_t stream);
}  // namespace vit::gpu
