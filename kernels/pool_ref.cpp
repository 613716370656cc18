// CPU reference global pooling (see pool.h).
#include <algorithm>
#include <vector>

#include "engine/check.h"
#include "kernels/pool.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;

template <class T>
void pool_forward(T* out, const T* x, int B, int Tn, int D, PoolMode mode, int n_prefix) {
  VIT_ASSERT(mode == PoolMode::token ? Tn >= 1 : n_prefix >= 0 && n_prefix < Tn, "pool: T=", Tn, " n_prefix=", n_prefix);
  const int t0 = mode == PoolMode::token ? 0 : n_prefix, t1 = mode == PoolMode::token ? 1 : Tn;
#pragma omp parallel for schedule(static) if ((i64)B * Tn * D >= kOmpMinWork)
  for (int b = 0; b < B; ++b) {
    std::vector<double> s(D, 0.0);  // tokens summed in order, per sample
    for (int t = t0; t < t1; ++t) {
      const T* row = x + ((i64)b * Tn + t) * D;
      for (int d = 0; d < D; ++d) s[d] += row[d];
    }
    for (int d = 0; d < D; ++d) out[(i64)b * D + d] = (T)(s[d] / (t1 - t0));
  }
}

template <class T>
void pool_backward(T* dx, const T* dout, int B, int Tn, int D, PoolMode mode, int n_prefix) {
  VIT_ASSERT(mode == PoolMode::token ? Tn >= 1 : n_prefix >= 0 && n_prefix < Tn, "pool: T=", Tn, " n_prefix=", n_prefix);
  const int t0 = mode == PoolMode::token ? 0 : n_prefix, t1 = mode == PoolMode::token ? 1 : Tn;
  const T inv = (T)1 / (T)(t1 - t0);
#pragma omp parallel for schedule(static) if ((i64)B * Tn * D >= kOmpMinWork)
  for (i64 bt = 0; bt < (i64)B * Tn; ++bt) {
    const i64 b = bt / Tn;
    const int t = (int)(bt % Tn);
    T* d = dx + bt * D;
    if (t < t0 || t >= t1) {
      std::fill_n(d, D, (T)0);
      continue;
    }
    for (int k = 0; k < D; ++k) d[k] = dout[b * D + k] * inv;
  }
}

#define VIT_INSTANTIATE(T)                                                      \
  template void pool_forward<T>(T*, const T*, int, int, int, PoolMode, int);   \
  template void pool_backward<T>(T*, const T*, int, int, int, PoolMode, int);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
