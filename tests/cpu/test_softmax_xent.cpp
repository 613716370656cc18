#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.h"
#include "kernels/softmax_xent.h"

using namespace vit;
using vit::test::randn;

TEST_CASE("softmax_xent ref: loss equals -Σ q log p for the smoothed target (K = 3 by hand)") {
  const std::vector<double> z = {1.0, 2.0, 0.5};
  const int K = 3, y = 0;
  // p = softmax(z) and the smoothed target q = (1 - s)·onehot(y) + s / K, written out for this example.
  const double e0 = std::exp(1.0), e1 = std::exp(2.0), e2 = std::exp(0.5), Z = e0 + e1 + e2;
  const double logp[3] = {std::log(e0 / Z), std::log(e1 / Z), std::log(e2 / Z)};
  for (double s : {0.0, 0.1, 0.3}) {
    CAPTURE(s);
    const double expected = -((1 - s + s / K) * logp[0] + (s / K) * logp[1] + (s / K) * logp[2]);
    double loss = NAN;
    std::vector<double> dl(K, NAN);
    ref::softmax_xent(&loss, dl.data(), z.data(), &y, 1, K, s, 1.0);
    CHECK(loss == doctest::Approx(expected).epsilon(1e-14));
    // dlogits = p - q.
    CHECK(dl[0] == doctest::Approx(e0 / Z - (1 - s + s / K)).epsilon(1e-14));
    CHECK(dl[1] == doctest::Approx(e1 / Z - s / K).epsilon(1e-14));
    CHECK(dl[2] == doctest::Approx(e2 / Z - s / K).epsilon(1e-14));
    // Shift invariance, and no overflow for large logits.
    const std::vector<double> zs = {1001.0, 1002.0, 1000.5};
    double loss_shifted = NAN;
    ref::softmax_xent(&loss_shifted, static_cast<double*>(nullptr), zs.data(), &y, 1, K, s, 1.0);
    CHECK(loss_shifted == doctest::Approx(expected).epsilon(1e-12));
  }
  // Without smoothing it is -log p_y.
  double loss = NAN;
  ref::softmax_xent(&loss, static_cast<double*>(nullptr), z.data(), &y, 1, K, 0.0, 1.0);
  CHECK(loss == doctest::Approx(-logp[0]).epsilon(1e-14));
}

TEST_CASE("softmax_xent ref: finite-difference dlogits, rows sum to zero, dscale scales") {
  struct Shape {
    int B, K;
  };
  for (Shape sh : {Shape{1, 7}, Shape{5, 13}, Shape{17, 3}}) {
    CAPTURE(sh.B);
    CAPTURE(sh.K);
    const uint64_t seed = 300 + sh.B * 31 + sh.K;
    auto z = randn((size_t)sh.B * sh.K, seed, 2.0);
    std::vector<int> labels(sh.B);
    for (int i = 0; i < sh.B; ++i) labels[i] = (int)((i * 7 + 3) % sh.K);
    const double s = 0.1, dscale = 1.0 / sh.B;
    std::vector<double> losses(sh.B);
    auto loss = [&] {
      ref::softmax_xent(losses.data(), static_cast<double*>(nullptr), z.data(), labels.data(), sh.B, sh.K, s, dscale);
      double t = 0;
      for (double l : losses) t += l;
      return dscale * t;
    };
    std::vector<double> dl(z.size(), std::numeric_limits<double>::quiet_NaN());
    ref::softmax_xent(losses.data(), dl.data(), z.data(), labels.data(), sh.B, sh.K, s, dscale);
    const auto losses_with_grad = losses;
    CHECK(test::grad_error(z, dl, loss) < 1e-6);
    loss();
    CHECK(test::rel_err(losses_with_grad, losses) == 0.0);  // computing dlogits does not change the loss
    for (int i = 0; i < sh.B; ++i) {
      double row = 0;
      for (int k = 0; k < sh.K; ++k) row += dl[(size_t)i * sh.K + k];
      CHECK(std::abs(row) < 1e-15);  // Σ_k (p_k - q_k) = 1 - 1
    }
    // dlogits is linear in dscale.
    std::vector<double> dl4(z.size());
    ref::softmax_xent(losses.data(), dl4.data(), z.data(), labels.data(), sh.B, sh.K, s, 4 * dscale);
    std::vector<double> dl_times4(dl.size());
    for (size_t i = 0; i < dl.size(); ++i) dl_times4[i] = 4 * dl[i];
    CHECK(test::rel_err(dl4, dl_times4) < 1e-15);
  }
}

TEST_CASE("softmax_xent ref: topk_correct on a hand-made batch with ties") {
  const int K = 6;
  // Each row with the label's rank worked out by hand: the number of other classes scoring >= the label.
  const std::vector<double> z = {
      0, 1, 5, 2, 3, 4,  // label 2: the unique maximum                  -> 0 ahead
      1, 5, 5, 0, 2, 3,  // label 1: tied with class 2 for the maximum   -> 1 ahead (a tie counts against)
      1, 2, 3, 4, 5, 0,  // label 0: classes 1..4 above it                -> 4 ahead
      0, 1, 2, 3, 4, 5,  // label 0: every other class above it           -> 5 ahead
      7, 7, 7, 7, 7, 7,  // label 3: all equal                            -> 5 ahead
      3, 3, 3, 3, 3, 0,  // label 0: tied with four others                -> 4 ahead
  };
  const std::vector<int> labels = {2, 1, 0, 0, 3, 0};
  const std::vector<int> ahead = {0, 1, 4, 5, 5, 4};
  for (int k = 1; k <= K; ++k) {
    CAPTURE(k);
    int expected = 0;
    for (int a : ahead) expected += a < k;
    CHECK(ref::topk_correct(z.data(), labels.data(), 6, K, k) == expected);
    const std::vector<float> zf(z.begin(), z.end());
    CHECK(ref::topk_correct(zf.data(), labels.data(), 6, K, k) == expected);
  }
  // The two counts the trainer reports.
  CHECK(ref::topk_correct(z.data(), labels.data(), 6, K, 1) == 1);
  CHECK(ref::topk_correct(z.data(), labels.data(), 6, K, 5) == 4);
}
