// Layer norm over the last dimension C of a (rows, C) matrix; mean and rstd are saved for backward.
// Backward: dweight/dbias accumulate (+=); dx is written (=) or, with dx_accumulate, added (+=) so the
// residual stream's gradient needs no separate add. Optional dsum (+=): the column sums of dx as written
// (after the add): with dx the residual stream's gradient, that is the bias gradient of the linear whose
// output joined the stream just before this norm (the engine fuses that add into the linear, so its bias
// gradient costs no pass of its own).
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, i64 rows, int C,
                       double eps);
template <class T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, i64 rows, int C, bool dx_accumulate, T* dsum = nullptr);
}  // namespace vit::ref

namespace vit::gpu {
void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* x, const bf16* weight, const bf16* bias,
                       i64 rows, int C, float eps, cudaStream_t stream);
// scratch: layernorm_backward_scratch_floats(rows, C) floats for the deterministic two-stage dweight/dbias
// (and dsum). dsum sums the bf16 values stored in dx.
i64 layernorm_backward_scratch_floats(i64 rows, int C);
void layernorm_backward(bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x, const bf16* weight,
                        const float* mean, const float* rstd, i64 rows, int C, bool dx_accumulate, float* scratch,
                        cudaStream_t stream, float* dsum = nullptr);
}  // namespace vit::gpu
