// CPU reference GELU (see gelu.h), computed in T (float or double) with the std:: math of that type.
#include <cmath>

#include "kernels/gelu.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;
namespace {
// GELU(x) = x·Φ(x); tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
template <class T>
T gelu(T x, bool tanh_approx) {
  if (tanh_approx) {
    const T k = (T)0.7978845608028654;  // √(2/π)
    return (T)0.5 * x * ((T)1 + std::tanh(k * (x + (T)0.044715 * x * x * x)));
  }
  return (T)0.5 * x * ((T)1 + std::erf(x * (T)0.7071067811865476));
}
template <class T>
T gelu_grad(T x, bool tanh_approx) {
  if (tanh_approx) {
    const T k = (T)0.7978845608028654;
    const T t = std::tanh(k * (x + (T)0.044715 * x * x * x));
    return (T)0.5 * ((T)1 + t) + (T)0.5 * x * ((T)1 - t * t) * k * ((T)1 + (T)0.134145 * x * x);
  }
  // Φ(x) + x·φ(x)
  const T cdf = (T)0.5 * ((T)1 + std::erf(x * (T)0.7071067811865476));
  const T pdf = (T)0.3989422804014327 * std::exp((T)-0.5 * x * x);
  return cdf + x * pdf;
}
}  // namespace

template <class T>
void gelu_forward(T* out, const T* x, i64 n, bool tanh_approx) {
#pragma omp parallel for schedule(static) if (n >= kOmpMinWork)
  for (i64 i = 0; i < n; ++i) out[i] = gelu(x[i], tanh_approx);
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, i64 n, bool tanh_approx) {
#pragma omp parallel for schedule(static) if (n >= kOmpMinWork)
  for (i64 i = 0; i < n; ++i) dx[i] = dout[i] * gelu_grad(x[i], tanh_approx);
}

template <class T>
void gelu_backward_bias(T* dx, T* dbias, const T* dout, const T* x, i64 rows, int cols, bool tanh_approx) {
  gelu_backward(dx, dout, x, rows * cols, tanh_approx);
  for (i64 r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) dbias[c] += dx[r * cols + c];
}

#define VIT_INSTANTIATE(T)                                                  \
  template void gelu_forward<T>(T*, const T*, i64, bool);                   \
  template void gelu_backward<T>(T*, const T*, const T*, i64, bool);        \
  template void gelu_backward_bias<T>(T*, T*, const T*, const T*, i64, int, bool);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
