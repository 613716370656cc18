#include <doctest/doctest.h>

#include <cmath>

#include "engine/eval_metrics.h"

using namespace vit;

TEST_CASE("eval metrics: top-1 / top-5 with ties, loss, invalid and padded rows on a hand-made batch") {
  const int K = 7;
  // Row 0: label 2 is the unique maximum -> top-1 and top-5.
  // Row 1: label 0 ties with class 3 for the maximum -> a tie counts against the label: not top-1, top-5.
  // Row 2: label 6 is the 6th largest -> neither.
  // Row 3: label 1 is the 5th largest -> top-5 only.
  // Row 4: padding (valid 0); row 5: label -1 (an undecodable val file): not counted.
  const float logits[6][K] = {{0, 1, 5, 2, 0, 0, 0},
                              {4, 1, 0, 4, 0, 0, 0},
                              {6, 5, 4, 3, 2, 1, 0.5f},
                              {9, 5, 8, 7, 6, 1, 0},
                              {0, 0, 0, 0, 0, 0, 9},
                              {1, 2, 3, 4, 5, 6, 7}};
  const int labels[6] = {2, 0, 6, 1, 6, -1};
  const unsigned char valid[6] = {1, 1, 1, 1, 0, 1};
  EvalSums s;
  accumulate_eval(s, &logits[0][0], labels, valid, 6, K);
  CHECK(s.count == 4);
  CHECK(s.top1 == 1);
  CHECK(s.top5 == 3);
  double expect = 0;
  for (int r = 0; r < 4; ++r) {
    double se = 0;
    for (int k = 0; k < K; ++k) se += std::exp((double)logits[r][k]);
    expect += std::log(se) - logits[r][labels[r]];
  }
  CHECK(s.loss == doctest::Approx(expect).epsilon(1e-12));
  // Sums over split batches equal the sum over the whole batch.
  EvalSums a, b;
  accumulate_eval(a, &logits[0][0], labels, valid, 3, K);
  accumulate_eval(b, &logits[3][0], labels + 3, valid + 3, 3, K);
  CHECK(a.count + b.count == s.count);
  CHECK(a.top1 + b.top1 == s.top1);
  CHECK(a.top5 + b.top5 == s.top5);
  CHECK(a.loss + b.loss == doctest::Approx(s.loss));
}
