#include "engine/eval_metrics.h"

#include <algorithm>
#include <cmath>

namespace vit {

void accumulate_eval(EvalSums& s, const float* logits, const int* labels, const unsigned char* valid, int B, int K) {
  for (int r = 0; r < B; ++r) {
    const int y = labels[r];
    if (!valid[r] || y < 0 || y >= K) continue;
    const float* row = logits + (int64_t)r * K;
    double mx = -INFINITY;
    for (int k = 0; k < K; ++k) mx = std::max(mx, (double)row[k]);
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp((double)row[k] - mx);
    const double ly = row[y];
    s.loss += (mx + std::log(se)) - ly;
    int above = 0;  // other classes at least as likely as the label
    for (int k = 0; k < K; ++k)
      if (k != y && (double)row[k] >= ly) ++above;
    s.top1 += above < 1;
    s.top5 += above < 5;
    s.count += 1;
  }
}

}  // namespace vit
