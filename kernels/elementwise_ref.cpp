// CPU reference elementwise ops (see elementwise.h). Dropout and drop path draw their masks from the
// counter RNG, so forward and backward agree without storing the mask.
#include <algorithm>

#include "engine/rng.h"
#include "kernels/elementwise.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;

template <class T>
void add(T* out, const T* a, const T* b, i64 n) {
#pragma omp parallel for schedule(static) if (n >= kOmpMinWork)
  for (i64 i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <class T>
void layer_scale_forward(T* out, const T* x, const T* gamma, i64 rows, int C) {
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) out[r * C + c] = x[r * C + c] * gamma[c];
}

template <class T>
void layer_scale_backward(T* dx, T* dgamma, const T* dout, const T* x, const T* gamma, i64 rows, int C) {
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (i64 r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) dx[r * C + c] = dout[r * C + c] * gamma[c];
  // dgamma: per column a sum over rows in order (column blocks per thread, so deterministic).
  constexpr int kCols = 64;
  const int nblk = (C + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (rows * C >= kOmpMinWork)
  for (int blk = 0; blk < nblk; ++blk) {
    const int c0 = blk * kCols, c1 = std::min(C, c0 + kCols);
    double s[kCols] = {};
    for (i64 r = 0; r < rows; ++r)
      for (int c = c0; c < c1; ++c) s[c - c0] += (double)dout[r * C + c] * x[r * C + c];
    for (int c = c0; c < c1; ++c) dgamma[c] += (T)s[c - c0];
  }
}

namespace {
// out = keep ? in · scale : 0 with keep = uniform(seed, site, index(i)) >= p. A select, not a multiply by
// the mask, so p = 1 gives zeros (not 0 · inf) and p = 0 is an exact copy (scale = 1).
template <class T, class Index>
void masked_scale(T* out, const T* in, i64 n, float p, uint64_t seed, uint64_t site, Index index) {
  const T scale = p < 1 ? (T)1 / ((T)1 - (T)p) : (T)0;
#pragma omp parallel for schedule(static) if (n >= kOmpMinWork)
  for (i64 i = 0; i < n; ++i) out[i] = rng::uniform(seed, site, (uint64_t)index(i)) >= p ? in[i] * scale : (T)0;
}
}  // namespace

template <class T>
void dropout_forward(T* out, const T* x, i64 n, float p, uint64_t seed, uint64_t site) {
  masked_scale(out, x, n, p, seed, site, [](i64 i) { return i; });
}
template <class T>
void dropout_backward(T* dx, const T* dout, i64 n, float p, uint64_t seed, uint64_t site) {
  masked_scale(dx, dout, n, p, seed, site, [](i64 i) { return i; });
}
template <class T>
void drop_path_forward(T* out, const T* x, int B, i64 per_sample, float p, uint64_t seed, uint64_t site) {
  masked_scale(out, x, (i64)B * per_sample, p, seed, site, [per_sample](i64 i) { return i / per_sample; });
}
template <class T>
void drop_path_backward(T* dx, const T* dout, int B, i64 per_sample, float p, uint64_t seed, uint64_t site) {
  masked_scale(dx, dout, (i64)B * per_sample, p, seed, site, [per_sample](i64 i) { return i / per_sample; });
}

#define VIT_INSTANTIATE(T)                                                                  \
  template void add<T>(T*, const T*, const T*, i64);                                       \
  template void layer_scale_forward<T>(T*, const T*, const T*, i64, int);                  \
  template void layer_scale_backward<T>(T*, T*, const T*, const T*, const T*, i64, int);   \
  template void dropout_forward<T>(T*, const T*, i64, float, uint64_t, uint64_t);          \
  template void dropout_backward<T>(T*, const T*, i64, float, uint64_t, uint64_t);         \
  template void drop_path_forward<T>(T*, const T*, int, i64, float, uint64_t, uint64_t);   \
  template void drop_path_backward<T>(T*, const T*, int, i64, float, uint64_t, uint64_t);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
