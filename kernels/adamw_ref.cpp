// CPU twin of AdamW (see adamw.h), in torch.optim.AdamW's order of operations: decay the weight first,
// then the bias-corrected Adam step. Elements are independent (OpenMP over them).
#include <cmath>

#include "kernels/adamw.h"

namespace vit::ref {

template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, i64 n, const AdamWParams& p, double grad_scale) {
  // Bias corrections in double, as torch computes them on the host.
  const double bc1 = 1.0 - std::pow((double)p.beta1, p.step);
  const double bc2 = 1.0 - std::pow((double)p.beta2, p.step);
  const T b1 = p.beta1, b2 = p.beta2, eps = p.eps, scale = (T)grad_scale;
  const T decay = (T)(1.0 - (double)p.lr * p.weight_decay);
  const T step_size = (T)(p.lr / bc1), bc2_sqrt = (T)std::sqrt(bc2);
  // Small ranges run on one thread: forking would cost more.
#pragma omp parallel for schedule(static) if (n >= (i64{1} << 15))
  for (i64 i = 0; i < n; ++i) {
    const T g = grad[i] * scale;
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    const T denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    param[i] = param[i] * decay - step_size * m[i] / denom;
  }
}

template void adamw_step<float>(float*, const float*, float*, float*, i64, const AdamWParams&, double);
template void adamw_step<double>(double*, const double*, double*, double*, i64, const AdamWParams&, double);

}  // namespace vit::ref
