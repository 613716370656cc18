// Linear layer as timm's nn.Linear: out (M, N) = x (M, K) · weight (N, K)^T + bias (N), plus an optional
// residual (M, N) added in the same pass (a transformer branch's last linear and its skip connection: the
// residual's gradient is dout itself, so backward is unchanged).
// Backward: dweight and dbias accumulate (+=); dx is written (=) or added with dx_accumulate.
// Any of dx / dbias / bias may be null. The CUDA twin is a cuBLASLt GEMM (engine/gemm.h).
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, i64 M, int K, int N,
                    const T* residual = nullptr);
template <class T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, i64 M, int K, int N,
                     bool dx_accumulate);
}  // namespace vit::ref

namespace vit::gpu {
class GemmContext;  // engine/gemm.h

// The CUDA twin: bf16 activations and weights, fp32 accumulation (cuBLASLt), fp32 parameter gradients.
// Row-major x (M, K) and out (M, N) with timm's weight layout (N, K). cuBLASLt's bf16 kernels need 16-byte
// rows: K and N must be multiples of 8 and every pointer 16-byte aligned (the engine's shapes are; a head
// with, say, 10 classes must be padded to 16). Both functions check and fail with a vit::Error otherwise.
//
// gelu_out != nullptr: `out` receives the pre-activation (kept for backward) and gelu_out = GELU(out),
// exact erf GELU, or timm's tanh approximation with gelu_tanh. The tanh one is fused into the GEMM with
// cuBLASLt's GELU_AUX_BIAS epilogue when ctx.fuse_gelu() (that epilogue only knows the tanh form); otherwise
// the GEMM (with bias epilogue) is followed by the separate GELU kernel (kernels/gelu.h).
// residual != nullptr (not with gelu_out): out = x W^T + bias + residual, the residual read as the GEMM's C
// (β = 1) and everything summed in fp32 before the one rounding to bf16. residual may be out itself.
void linear_forward(GemmContext& ctx, bf16* out, const bf16* x, const bf16* weight, const bf16* bias, i64 M, int K,
                    int N, cudaStream_t stream, bf16* gelu_out = nullptr, bool gelu_tanh = false,
                    const bf16* residual = nullptr);
// dweight (N, K) fp32 += dout^T x; dbias (N) fp32 += column sums of dout (deterministic two-stage sum, the
// partials in ctx.scratch()); dx (M, K) bf16 = dout · weight, or += with dx_accumulate (summed in fp32
// before rounding). dx and dbias may be null.
void linear_backward(GemmContext& ctx, bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x,
                     const bf16* weight, i64 M, int K, int N, bool dx_accumulate, cudaStream_t stream);
}  // namespace vit::gpu
