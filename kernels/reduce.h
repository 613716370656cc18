// Reductions for the global gradient norm and clipping.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
// Σ x² accumulated in double.
template <class T>
double sum_squares(const T* x, i64 n);
// The factor that clips to max_norm (1 when within it or when max_norm <= 0), as torch's clip_grad_norm_:
// min(1, max_norm / (norm + 1e-6)).
double clip_scale(double norm, double max_norm);
}  // namespace vit::ref

namespace vit::gpu {
// *out += Σ x² (fp32 accumulation, deterministic: fixed grid, then one finishing block).
// scratch: sum_squares_scratch_floats() floats.
i64 sum_squares_scratch_floats();
void sum_squares(float* out, const float* x, i64 n, float* scratch, cudaStream_t stream);
// scale[0] = clip factor from sumsq[0] (see ref::clip_scale); norm[0] = sqrt(sumsq[0]).
void clip_scale(float* scale, float* norm, const float* sumsq, float max_norm, cudaStream_t stream);
}  // namespace vit::gpu
