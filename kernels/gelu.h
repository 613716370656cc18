// GELU, exact (erf) by default, tanh approximation as an option (timm's approximate='tanh').
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void gelu_forward(T* out, const T* x, i64 n, bool tanh_approx);
// dx = dout * gelu'(x), written (=).
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, i64 n, bool tanh_approx);
// The same over (rows, cols), and dbias[c] += Σ_r dx[r, c] (the preceding linear's bias gradient).
template <class T>
void gelu_backward_bias(T* dx, T* dbias, const T* dout, const T* x, i64 rows, int cols, bool tanh_approx);
}  // namespace vit::ref

namespace vit::gpu {
void gelu_forward(bf16* out, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream);
void gelu_backward(bf16* dx, const bf16* dout, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream);

// The MLP's GELU backward fused with the preceding linear's (fc1's) bias gradient: over a (rows, cols)
// matrix, dx = dout · gelu'(x) and dbias[c] += Σ_r dx[r, c], summing the bf16 values stored in dx (what the
// weight-gradient GEMM reads), so the bias gradient needs no second pass over dx. Deterministic two-stage
// sum: partials in scratch (gelu_backward_bias_scratch_floats(rows, cols) floats), then added in order.
void gelu_backward_bias(bf16* dx, float* dbias, const bf16* dout, const bf16* x, i64 rows, int cols, bool tanh_approx,
                        float* scratch, cudaStream_t stream);
i64 gelu_backward_bias_scratch_floats(i64 rows, int cols);
}  // namespace vit::gpu
