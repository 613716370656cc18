// CUDA GELU (see gelu.h): bf16 in and out, fp32 math, 8 elements (16 bytes) per thread when the pointers
// are 16-byte aligned, scalar otherwise; the n % 8 tail is handled by the first threads.
#include "kernels/cuda_vec.cuh"
#include "kernels/gelu.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kInvSqrt2 = 0.7071067811865476f;
constexpr float kInvSqrt2Pi = 0.3989422804014327f;

__device__ __forceinline__ float gelu(float x, bool tanh_approx) {
  if (tanh_approx) return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.f + erff(x * kInvSqrt2));
}
__device__ __forceinline__ float gelu_grad(float x, bool tanh_approx) {
  if (tanh_approx) {
    const float t = tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x));
    return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * kSqrt2OverPi * (1.f + 0.134145f * x * x);
  }
  return 0.5f * (1.f + erff(x * kInvSqrt2)) + x * kInvSqrt2Pi * __expf(-0.5f * x * x);
}

template <int V>
__global__ void __launch_bounds__(kThreads) gelu_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ x,
                                                                i64 n, bool tanh_approx) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V];
    load_bf16<V>(x + it * V, v);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = gelu(v[j], tanh_approx);
    store_bf16<V>(out + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n) out[t] = __float2bfloat16(gelu(__bfloat162float(x[t]), tanh_approx));
}

template <int V>
__global__ void __launch_bounds__(kThreads) gelu_backward_kernel(bf16* __restrict__ dx, const bf16* __restrict__ dout,
                                                                 const bf16* __restrict__ x, i64 n, bool tanh_approx) {
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  const i64 items = n / V;
  for (i64 it = tid; it < items; it += stride) {
    float v[V], g[V];
    load_bf16<V>(x + it * V, v);
    load_bf16<V>(dout + it * V, g);
#pragma unroll
    for (int j = 0; j < V; ++j) v[j] = g[j] * gelu_grad(v[j], tanh_approx);
    store_bf16<V>(dx + it * V, v);
  }
  const i64 t = items * V + tid;
  if (t < n) dx[t] = __float2bfloat16(__bfloat162float(dout[t]) * gelu_grad(__bfloat162float(x[t]), tanh_approx));
}

}  // namespace

void gelu_forward(bf16* out, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(out) && aligned16(x))
    gelu_forward_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(out, x, n, tanh_approx);
  else
    gelu_forward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(out, x, n, tanh_approx);
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(bf16* dx, const bf16* dout, const bf16* x, i64 n, bool tanh_approx, cudaStream_t stream) {
  if (n <= 0) return;
  if (aligned16(dx) && aligned16(dout) && aligned16(x))
    gelu_backward_kernel<8><<<grid_for(n / 8 + 1, kThreads), kThreads, 0, stream>>>(dx, dout, x, n, tanh_approx);
  else
    gelu_backward_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(dx, dout, x, n, tanh_approx);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
