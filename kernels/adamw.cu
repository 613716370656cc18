// CUDA AdamW (see adamw.h): one thread per 4 elements (16-byte loads of param, grad, m, v and an 8-byte
// bf16 store) when every pointer allows it, scalar otherwise. Same order of operations as the CPU twin.
#include <cmath>

#include "kernels/adamw.h"
#include "kernels/cuda_vec.cuh"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;

struct Consts {
  float b1, one_minus_b1, b2, one_minus_b2, eps, decay, step_size, bc2_sqrt;
};

// decay: c.decay or 1 (no weight decay: 1 - lr·0 in fp32 is exactly 1, as the single-run launch computes).
__device__ __forceinline__ void update(float& p, float g, float& m, float& v, const Consts& c, float scale,
                                       float decay) {
  g *= scale;
  m = c.b1 * m + c.one_minus_b1 * g;
  v = c.b2 * v + c.one_minus_b2 * g * g;
  const float denom = sqrtf(v) / c.bc2_sqrt + c.eps;
  p = p * decay - c.step_size * m / denom;
}

// The decay factor at element i: a scan over the few runs of a unit (kernel parameters, a constant bank).
__device__ __forceinline__ float decay_at(const DecayRuns& r, i64 i, float on) {
  int k = 0;
  while (k < r.count - 1 && i >= r.end[k]) ++k;
  return r.decay[k] ? on : 1.f;
}

template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ param, bf16* __restrict__ param_bf16, const float* __restrict__ grad,
                 float* __restrict__ m, float* __restrict__ v, const DecayRuns runs, Consts c,
                 const float* __restrict__ grad_scale) {
  const i64 n = runs.count ? runs.end[runs.count - 1] : 0;
  const float scale = grad_scale ? *grad_scale : 1.f;
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  i64 done = 0;
  if constexpr (kVec) {
    const i64 n4 = n / 4;
    for (i64 i = tid; i < n4; i += stride) {
      float4 p = reinterpret_cast<float4*>(param)[i];
      const float4 g = reinterpret_cast<const float4*>(grad)[i];
      float4 mm = reinterpret_cast<float4*>(m)[i], vv = reinterpret_cast<float4*>(v)[i];
      update(p.x, g.x, mm.x, vv.x, c, scale, decay_at(runs, 4 * i, c.decay));
      update(p.y, g.y, mm.y, vv.y, c, scale, decay_at(runs, 4 * i + 1, c.decay));
      update(p.z, g.z, mm.z, vv.z, c, scale, decay_at(runs, 4 * i + 2, c.decay));
      update(p.w, g.w, mm.w, vv.w, c, scale, decay_at(runs, 4 * i + 3, c.decay));
      reinterpret_cast<float4*>(param)[i] = p;
      reinterpret_cast<float4*>(m)[i] = mm;
      reinterpret_cast<float4*>(v)[i] = vv;
      if (param_bf16) reinterpret_cast<uint2*>(param_bf16)[i] = make_uint2(pack2(p.x, p.y), pack2(p.z, p.w));
    }
    done = n4 * 4;
  }
  for (i64 i = done + tid; i < n; i += stride) {
    float p = param[i], mm = m[i], vv = v[i];
    update(p, grad[i], mm, vv, c, scale, decay_at(runs, i, c.decay));
    param[i] = p, m[i] = mm, v[i] = vv;
    if (param_bf16) param_bf16[i] = __float2bfloat16(p);
  }
}

}  // namespace

void adamw_step(float* param, bf16* param_bf16, const float* grad, float* m, float* v, i64 n, const AdamWParams& p,
                const float* grad_scale, cudaStream_t stream) {
  DecayRuns one;
  one.push(n, true);
  adamw_step(param, param_bf16, grad, m, v, one, p, grad_scale, stream);
}

void adamw_step(float* param, bf16* param_bf16, const float* grad, float* m, float* v, const DecayRuns& runs,
                const AdamWParams& p, const float* grad_scale, cudaStream_t stream) {
  VIT_ASSERT(p.step >= 1, "adamw_step: step is 1-based, got ", p.step);
  VIT_ASSERT(runs.count >= 0 && runs.count <= DecayRuns::kMax, "adamw_step: bad run count ", runs.count);
  const i64 n = runs.size();
  if (n <= 0) return;
  // Bias corrections in double on the host, as torch does; the kernel sees them as fp32 constants.
  const double bc1 = 1.0 - std::pow((double)p.beta1, p.step), bc2 = 1.0 - std::pow((double)p.beta2, p.step);
  const Consts c{p.beta1,
                 1.f - p.beta1,
                 p.beta2,
                 1.f - p.beta2,
                 p.eps,
                 (float)(1.0 - (double)p.lr * p.weight_decay),
                 (float)(p.lr / bc1),
                 (float)std::sqrt(bc2)};
  const bool vec = aligned16(param) && aligned16(grad) && aligned16(m) && aligned16(v) &&
                   (!param_bf16 || reinterpret_cast<uintptr_t>(param_bf16) % 8 == 0);
  const unsigned grid = grid_for(vec ? (n + 3) / 4 : n, kThreads);
  if (vec)
    adamw_kernel<true><<<grid, kThreads, 0, stream>>>(param, param_bf16, grad, m, v, runs, c, grad_scale);
  else
    adamw_kernel<false><<<grid, kThreads, 0, stream>>>(param, param_bf16, grad, m, v, runs, c, grad_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
