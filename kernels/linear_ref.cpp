// CPU twin of the linear layer (see linear.h). Plain loops blocked for the cache: every inner loop runs
// over contiguous memory as an axpy (i-k-j order), which the compiler vectorizes without reassociating a
// reduction, and each element's sum keeps a fixed order, so results do not depend on the thread count.
// OpenMP over tiles of output rows only.
#include <algorithm>
#include <vector>

#include "kernels/linear.h"

namespace vit::ref {

namespace {
// A tile of kRows output rows × kCols columns (8 KB of float) stays in L1 while one input row streams by.
constexpr i64 kRows = 8;
constexpr int kCols = 256;
// Below this many multiply-adds a call runs on one thread: forking costs more than it saves (and tiny
// calls are what finite-difference tests make by the thousand).
constexpr i64 kMinParallelWork = i64{1} << 16;

// acc[r][0:len] += Σ_q a[r·a_row + q·a_step] · w[q·w_step + 0:len] for the tile's rows, q = 0..Q-1 in order:
// the one kernel of all three products. Q > 1 keeps acc in registers across Q input rows (fewer loads and
// stores of acc) while summing in exactly the order of Q separate passes.
template <int Q, class T>
inline void axpy_rows(T* __restrict acc, i64 acc_stride, const T* a, i64 a_row, i64 a_step, i64 rows,
                      const T* __restrict w, i64 w_step, int len) {
  for (i64 r = 0; r < rows; ++r) {
    T s[Q];
    for (int q = 0; q < Q; ++q) s[q] = a[r * a_row + q * a_step];
    T* __restrict o = acc + r * acc_stride;
    if constexpr (Q == 4) {
      const T *w0 = w, *w1 = w + w_step, *w2 = w + 2 * w_step, *w3 = w + 3 * w_step;
      for (int j = 0; j < len; ++j) o[j] = o[j] + s[0] * w0[j] + s[1] * w1[j] + s[2] * w2[j] + s[3] * w3[j];
    } else {
      static_assert(Q == 1);
      for (int j = 0; j < len; ++j) o[j] += s[0] * w[j];
    }
  }
}

// Runs q = 0..count-1 of the product in groups of four, then the rest one by one.
template <class T>
inline void axpy_rows_n(T* acc, i64 acc_stride, const T* a, i64 a_row, i64 a_step, i64 rows, const T* w, i64 w_step,
                        int len, i64 count) {
  i64 q = 0;
  for (; q + 4 <= count; q += 4)
    axpy_rows<4>(acc, acc_stride, a + q * a_step, a_row, a_step, rows, w + q * w_step, w_step, len);
  for (; q < count; ++q)
    axpy_rows<1>(acc, acc_stride, a + q * a_step, a_row, a_step, rows, w + q * w_step, w_step, len);
}
}  // namespace

template <class T>
void linear_forward(T* out, const T* x, const T* weight, const T* bias, i64 M, int K, int N, const T* residual) {
  // weight^T (K, N) so that out's row is built from contiguous weight rows.
  std::vector<T> wt((size_t)K * N);
  const bool par = M * K * N >= kMinParallelWork;
#pragma omp parallel for schedule(static) if (par)
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) wt[(size_t)k * N + n] = weight[(size_t)n * K + k];
  const i64 tiles = (M + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (par)
  for (i64 t = 0; t < tiles; ++t) {
    const i64 r0 = t * kRows, rows = std::min(kRows, M - r0);
    for (int j0 = 0; j0 < N; j0 += kCols) {
      const int len = std::min(kCols, N - j0);
      for (i64 r = 0; r < rows; ++r)
        for (int j = 0; j < len; ++j) {
          const i64 o = (r0 + r) * N + j0 + j;
          out[o] = (bias ? bias[j0 + j] : T(0)) + (residual ? residual[o] : T(0));
        }
      axpy_rows_n(out + r0 * N + j0, N, x + r0 * K, K, 1, rows, wt.data() + j0, N, len, K);
    }
  }
}

template <class T>
void linear_backward(T* dx, T* dweight, T* dbias, const T* dout, const T* x, const T* weight, i64 M, int K, int N,
                     bool dx_accumulate) {
  const bool par = M * K * N >= kMinParallelWork;
  // dx (M, K) = dout (M, N) · weight (N, K): tiles of dx rows, weight rows stream by.
  if (dx) {
    const i64 tiles = (M + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (par)
    for (i64 t = 0; t < tiles; ++t) {
      const i64 r0 = t * kRows, rows = std::min(kRows, M - r0);
      for (int j0 = 0; j0 < K; j0 += kCols) {
        const int len = std::min(kCols, K - j0);
        if (!dx_accumulate)
          for (i64 r = 0; r < rows; ++r) std::fill_n(dx + (r0 + r) * K + j0, len, T(0));
        axpy_rows_n(dx + r0 * K + j0, K, dout + r0 * N, N, 1, rows, weight + j0, K, len, N);
      }
    }
  }
  // dweight (N, K) += dout^T (N, M) · x (M, K): tiles of dweight rows, x rows stream by. The sum over M
  // is formed in a local tile first and then added, so a large pre-filled dweight does not swamp it.
  {
    const i64 tiles = (N + kRows - 1) / kRows;
#pragma omp parallel for schedule(static) if (par)
    for (i64 t = 0; t < tiles; ++t) {
      const i64 n0 = t * kRows, rows = std::min<i64>(kRows, N - n0);
      std::vector<T> acc((size_t)kRows * kCols);
      for (int j0 = 0; j0 < K; j0 += kCols) {
        const int len = std::min(kCols, K - j0);
        std::fill(acc.begin(), acc.end(), T(0));
        axpy_rows_n(acc.data(), kCols, dout + n0, 1, N, rows, x + j0, K, len, M);
        for (i64 r = 0; r < rows; ++r)
          for (int j = 0; j < len; ++j) dweight[(n0 + r) * K + j0 + j] += acc[(size_t)r * kCols + j];
      }
    }
  }
  // dbias (N) += column sums of dout: column chunks in parallel, rows in order.
  if (dbias) {
    const int chunks = (N + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (par)
    for (int c = 0; c < chunks; ++c) {
      const int j0 = c * kCols, len = std::min(kCols, N - j0);
      std::vector<T> acc(len, T(0));
      for (i64 i = 0; i < M; ++i) {
        const T* __restrict d = dout + i * N + j0;
        for (int j = 0; j < len; ++j) acc[j] += d[j];
      }
      for (int j = 0; j < len; ++j) dbias[j0 + j] += acc[j];
    }
  }
}

template void linear_forward<float>(float*, const float*, const float*, const float*, i64, int, int, const float*);
template void linear_forward<double>(double*, const double*, const double*, const double*, i64, int, int,
                                     const double*);
template void linear_backward<float>(float*, float*, float*, const float*, const float*, const float*, i64, int, int,
                                     bool);
template void linear_backward<double>(double*, double*, double*, const double*, const double*, const double*, i64, int,
                                      int, bool);

}  // namespace vit::ref
