// CPU twin of the gradient-norm reductions (see reduce.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/reduce.h"

namespace vit::ref {

template <class T>
double sum_squares(const T* x, i64 n) {
  // Fixed-size chunks summed in parallel, then combined in chunk order: the result does not depend on
  // the thread count.
  constexpr i64 kChunk = 1 << 15;
  const i64 chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (i64 c = 0; c < chunks; ++c) {
    const i64 end = std::min(n, (c + 1) * kChunk);
    double s = 0;
    for (i64 i = c * kChunk; i < end; ++i) s += (double)x[i] * x[i];
    partial[c] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

double clip_scale(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  // As torch: clamp(max_norm / (norm + 1e-6), max=1). A NaN norm stays NaN (so the step is visibly bad)
  // and an infinite one gives 0.
  const double c = max_norm / (norm + 1e-6);
  return c > 1.0 ? 1.0 : c;
}

template double sum_squares<float>(const float*, i64);
template double sum_squares<double>(const double*, i64);

}  // namespace vit::ref
