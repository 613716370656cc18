// CPU twin of the softmax cross-entropy (see softmax_xent.h). Statistics in double whatever T is, so the
// float instance is as good an oracle as the float64 one; rows are independent (OpenMP over rows).
#include <algorithm>
#include <cmath>

#include "engine/check.h"
#include "kernels/softmax_xent.h"

namespace vit::ref {

namespace {
constexpr i64 kMinParallelWork = i64{1} << 15;  // below this, one thread (forking costs more)

void check_labels(const int* labels, int B, int K) {
  for (int i = 0; i < B; ++i)
    VIT_ASSERT(labels[i] >= 0 && labels[i] < K, "softmax_xent: label ", labels[i], " of row ", i, " outside [0, ", K,
               ")");
}
}  // namespace

template <class T>
void softmax_xent(T* losses, T* dlogits, const T* logits, const int* labels, int B, int K, double smoothing,
                  double dscale) {
  check_labels(labels, B, K);
  const double s = smoothing, uniform = smoothing / K;
#pragma omp parallel for schedule(static) if ((i64)B * K >= kMinParallelWork)
  for (int i = 0; i < B; ++i) {
    const T* z = logits + (i64)i * K;
    const int y = labels[i];
    double mx = -INFINITY;
    for (int k = 0; k < K; ++k) mx = std::max(mx, (double)z[k]);
    double sum_exp = 0, sum_z = 0;
    for (int k = 0; k < K; ++k) {
      sum_exp += std::exp((double)z[k] - mx);
      sum_z += z[k];
    }
    const double lse = mx + std::log(sum_exp);
    // -(1-s)·(z_y - lse) - (s/K)·Σ_k (z_k - lse)
    losses[i] = (T)(lse - (1 - s) * z[y] - uniform * sum_z);
    if (dlogits) {
      T* d = dlogits + (i64)i * K;
      for (int k = 0; k < K; ++k) {
        const double target = uniform + (k == y ? 1 - s : 0.0);
        d[k] = (T)(dscale * (std::exp((double)z[k] - lse) - target));
      }
    }
  }
}

template <class T>
int topk_correct(const T* logits, const int* labels, int B, int K, int k) {
  check_labels(labels, B, K);
  int correct = 0;
#pragma omp parallel for schedule(static) reduction(+ : correct) if ((i64)B * K >= kMinParallelWork)
  for (int i = 0; i < B; ++i) {
    const T* z = logits + (i64)i * K;
    const int y = labels[i];
    // Rank of the label: how many other classes score at least as high (a tie goes against the label).
    int ahead = 0;
    for (int j = 0; j < K; ++j) ahead += (j != y && z[j] >= z[y]);
    correct += ahead < k;
  }
  return correct;
}

template void softmax_xent<float>(float*, float*, const float*, const int*, int, int, double, double);
template void softmax_xent<double>(double*, double*, const double*, const int*, int, int, double, double);
template int topk_correct<float>(const float*, const int*, int, int, int);
template int topk_correct<double>(const double*, const int*, int, int, int);

}  // namespace vit::ref
