// CPU reference layer norm (see layernorm.h). Row statistics and the backward's row sums accumulate in
// double for both instantiations, sequentially inside a row, so results do not depend on thread count.
#include <algorithm>
#include <cmath>

#include "kernels/layernorm.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* weight, const T* bias, i64 rows, int C,
                       double eps) {
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    double s = 0;
    for (int c = 0; c < C; ++c) s += xr[c];
    const double mu = s / C;
    double q = 0;  // two-pass variance: no cancellation for rows with a large mean
    for (int c = 0; c < C; ++c) q += (xr[c] - mu) * (xr[c] - mu);
    const double rs = 1.0 / std::sqrt(q / C + eps);
    T* o = out + r * C;
    for (int c = 0; c < C; ++c) o[c] = (T)((xr[c] - mu) * rs * weight[c] + bias[c]);
    mean[r] = (T)mu;
    rstd[r] = (T)rs;
  }
}

template <class T>
void layernorm_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, const T* mean,
                        const T* rstd, i64 rows, int C, bool dx_accumulate, T* dsum) {
  // dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), g = dout · weight.
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r) {
    const T* xr = x + r * C;
    const T* gr = dout + r * C;
    const double mu = mean[r], rs = rstd[r];
    double sg = 0, sgx = 0;
    for (int c = 0; c < C; ++c) {
      const double g = (double)gr[c] * weight[c];
      sg += g;
      sgx += g * ((xr[c] - mu) * rs);
    }
    const double mg = sg / C, mgx = sgx / C;
    T* d = dx + r * C;
    for (int c = 0; c < C; ++c) {
      const double g = (double)gr[c] * weight[c];
      const double v = rs * (g - mg - (xr[c] - mu) * rs * mgx);
      d[c] = dx_accumulate ? (T)(d[c] + v) : (T)v;
    }
  }
  // Parameter gradients: a sum over rows per column. Threads take blocks of columns (rows stream through
  // the cache in order); every column is summed over rows in order, so the result is thread-count free.
  constexpr int kCols = 64;
  const int nblk = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (int blk = 0; blk < nblk; ++blk) {
    const int c0 = blk * kCols, c1 = std::min(C, c0 + kCols);
    double sw[kCols] = {}, sb[kCols] = {}, sd[kCols] = {};
    for (i64 r = 0; r < rows; ++r) {
      const double mu = mean[r], rs = rstd[r];
      const T* xr = x + r * C;
      const T* gr = dout + r * C;
      for (int c = c0; c < c1; ++c) {
        sw[c - c0] += (double)gr[c] * ((xr[c] - mu) * rs);
        sb[c - c0] += gr[c];
        if (dsum) sd[c - c0] += dx[r * C + c];
      }
    }
    for (int c = c0; c < c1; ++c) {
      dweight[c] += (T)sw[c - c0];
      dbias[c] += (T)sb[c - c0];
      if (dsum) dsum[c] += (T)sd[c - c0];
    }
  }
}

#define VIT_INSTANTIATE(T)                                                                               \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, i64, int, double);       \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, i64, \
                                      int, bool, T*);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
