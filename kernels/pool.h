// Global pooling before the head, as timm's VisionTransformer.pool:
//   token: out[b] = x[b, 0];   avg: out[b] = mean of x[b, n_prefix:]   (x is (B, T, D), out (B, D))
// Backward writes dx (=) over the whole (B, T, D) tensor (zero where the pool did not read).
#pragma once
#include "kernels/types.h"

namespace vit {
enum class PoolMode { token, avg };
}

namespace vit::ref {
template <class T>
void pool_forward(T* out, const T* x, int B, int Tn, int D, PoolMode mode, int n_prefix);
template <class T>
void pool_backward(T* dx, const T* dout, int B, int Tn, int D, PoolMode mode, int n_prefix);
}  // namespace vit::ref

namespace vit::gpu {
void pool_forward(bf16* out, const bf16* x, int B, int Tn, int D, PoolMode mode, int n_prefix, cudaStream_t stream);
void pool_backward(bf16* dx, const bf16* dout, int B, int Tn, int D, PoolMode mode, int n_prefix, cudaStream_t stream);
}  // namespace vit::gpu
