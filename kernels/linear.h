// Linear layer as timm's nn.Linear: out (M, N) = x (M, K) · weight (N, K)^T + bias (N).
// Backward: dweight and dbias accumulate (+=); dx is written (=) or added with dx_accumulate.
// Any of dx / dbias / bias may be null. The CUDA twin is a cuBLASLt GEMM (engine/gemm.h).
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, i64 M, int K, int N);
template <class T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, i64 M, int K, int N,
                     bool dx_accumulate);
}  // namespace vit::ref
