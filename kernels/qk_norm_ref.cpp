// CPU reference qk_norm (see qk_norm.h). Row statistics and the backward's row sums accumulate in double
// for both instantiations, sequentially inside a row; parameter gradients are summed over rows in order,
// so results do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "kernels/qk_norm.h"

namespace vit::ref {
namespace {
// Below this many elements a parallel region costs more than it saves (tests call tiny shapes thousands
// of times from finite differences).
constexpr i64 kOmpMinWork = 1 << 15;

// Row j of token bt in the (BT, 3, H, hd) layout: j = part · H + h with part 0 (q), 1 (k) or 2 (v).
inline i64 row_offset(i64 bt, int j, int H, int hd) { return (bt * 3 * H + j) * (i64)hd; }
}  // namespace

template <class T>
void qk_norm_forward(T* out, T* mean, T* rstd, const T* qkv, const T* qw, const T* qb, const T* kw, const T* kb,
                     i64 BT, int H, int hd, double eps) {
  const i64 rows = BT * 3 * H;
#pragma omp parallel for schedule(static) if (rows * hd >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r) {
    const i64 bt = r / (3 * H);
    const int j = (int)(r - bt * 3 * H), part = j / H;
    const T* x = qkv + r * hd;
    T* o = out + r * hd;
    if (part == 2) {  // v: copied unchanged
      std::copy(x, x + hd, o);
      continue;
    }
    const T* w = part == 0 ? qw : kw;
    const T* b = part == 0 ? qb : kb;
    double s = 0;
    for (int c = 0; c < hd; ++c) s += x[c];
    const double mu = s / hd;
    double q = 0;  // two-pass variance: no cancellation for rows with a large mean
    for (int c = 0; c < hd; ++c) q += (x[c] - mu) * (x[c] - mu);
    const double rs = 1.0 / std::sqrt(q / hd + eps);
    for (int c = 0; c < hd; ++c) o[c] = (T)((x[c] - mu) * rs * w[c] + b[c]);
    const i64 si = part * BT * H + bt * H + (j - part * H);
    mean[si] = (T)mu;
    rstd[si] = (T)rs;
  }
}

template <class T>
void qk_norm_backward(T* dqkv, T* dqw, T* dqb, T* dkw, T* dkb, const T* dout, const T* qkv, const T* qw,
                      const T* kw, const T* mean, const T* rstd, i64 BT, int H, int hd) {
  const i64 rows = BT * 3 * H;
  // Input gradient, row by row: dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), g = dout · weight; v: identity.
#pragma omp parallel for schedule(static) if (rows * hd >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r) {
    const i64 bt = r / (3 * H);
    const int j = (int)(r - bt * 3 * H), part = j / H;
    const T* gr = dout + r * hd;
    T* d = dqkv + r * hd;
    if (part == 2) {
      std::copy(gr, gr + hd, d);
      continue;
    }
    const T* x = qkv + r * hd;
    const T* w = part == 0 ? qw : kw;
    const i64 si = part * BT * H + bt * H + (j - part * H);
    const double mu = mean[si], rs = rstd[si];
    double sg = 0, sgx = 0;
    for (int c = 0; c < hd; ++c) {
      const double g = (double)gr[c] * w[c];
      sg += g;
      sgx += g * ((x[c] - mu) * rs);
    }
    const double mg = sg / hd, mgx = sgx / hd;
    for (int c = 0; c < hd; ++c) d[c] = (T)(rs * ((double)gr[c] * w[c] - mg - (x[c] - mu) * rs * mgx));
  }
  // Parameter gradients: per (part, column) a sum over the BT·H rows of that part, in (bt, h) order.
  // Threads take (part, block of kCols columns): a block is one cache line of a row, so rows stream through
  // in order; each column's sum runs sequentially, so the result is thread-count free.
  constexpr int kCols = 16;
  const int nblk = (hd + kCols - 1) / kCols;
  const i64 nrows = BT * H;
#pragma omp parallel for schedule(static) if (nrows * hd >= kOmpMinWork)
  for (int task = 0; task < 2 * nblk; ++task) {
    const int part = task / nblk, c0 = (task % nblk) * kCols, c1 = std::min(hd, c0 + kCols);
    double sw[kCols] = {}, sb[kCols] = {};
    for (i64 n = 0; n < nrows; ++n) {
      const i64 bt = n / H;
      const i64 off = row_offset(bt, part * H + (int)(n - bt * H), H, hd);
      const double mu = mean[part * nrows + n], rs = rstd[part * nrows + n];
      for (int c = c0; c < c1; ++c) {
        const double g = dout[off + c];
        sw[c - c0] += g * ((qkv[off + c] - mu) * rs);
        sb[c - c0] += g;
      }
    }
    T* dw = part == 0 ? dqw : dkw;
    T* db = part == 0 ? dqb : dkb;
    for (int c = c0; c < c1; ++c) {
      dw[c] += (T)sw[c - c0];
      db[c] += (T)sb[c - c0];
    }
  }
}

#define VIT_INSTANTIATE(T)                                                                                      \
  template void qk_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, i64, int, int, \
                                   double);                                                                     \
  template void qk_norm_backward<T>(T*, T*, T*, T*, T*, const T*, const T*, const T*, const T*, const T*,      \
                                    const T*, i64, int, int);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
