// GELU, exact (erf) by default, tanh approximation as an option (timm's approximate='tanh').
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void gelu_forward(T* out, const T* x, i64 n, bool tanh_approx);
// dx = dout * gelu'(x), written (=).
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, i64 n, bool tanh_approx);
}  // namespace vit::ref

namespace vit::gpu {
void gelu_forward(bf16* out, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream);
void gelu_backward(bf16* dx, const bf16* dout, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream);
}  // namespace vit::gpu
