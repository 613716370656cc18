// GPU softmax cross-entropy and top-k against the CPU twin (float, on the same bf16 logits).
// Tolerances: losses are fp32 sums of up to 1e5 exponentials (relative rounding ~1e-6): 1e-5.
// dlogits are bf16 (one rounding, ≤ 2^-9 relative per element): relative error norm 1e-2.
// Top-k counts compare exactly: both sides compare the same bf16 values.
#include <doctest/doctest.h>

#include <vector>

#include "gpu_test_util.h"
#include "kernels/softmax_xent.h"

using namespace vit;
using namespace vit::test;

namespace {

std::vector<int> random_labels(int B, int K, uint64_t seed) {
  std::vector<int> y(B);
  for (int i = 0; i < B; ++i) y[i] = (int)(rng::bits(seed, 3, i) % (uint64_t)K);
  y[0] = K - 1;  // the edges
  if (B > 1) y[1] = 0;
  return y;
}

}  // namespace

TEST_CASE("gpu softmax_xent: losses and dlogits vs CPU twin for K = 5, 13, 1000, 1001, 100000") {
  struct Case {
    int B, K;
    float scale;  // logit spread: 8 gives peaky rows
  };
  uint64_t seed = 5000;
  for (Case c : {Case{37, 5, 1.f}, Case{37, 13, 8.f}, Case{37, 1000, 2.f}, Case{19, 1001, 8.f}, Case{5, 100000, 3.f}}) {
    for (float smoothing : {0.f, 0.1f}) {
      CAPTURE(c.B);
      CAPTURE(c.K);
      CAPTURE(smoothing);
      seed += 10;
      const auto z = bf_round(randn_f((size_t)c.B * c.K, seed, c.scale));
      const auto y = random_labels(c.B, c.K, seed);
      const float dscale = 1.f / c.B;
      std::vector<float> loss_ref(c.B), dl_ref(z.size());
      ref::softmax_xent(loss_ref.data(), dl_ref.data(), z.data(), y.data(), c.B, c.K, smoothing, dscale);

      auto z_d = to_device(to_bf(z));
      auto y_d = to_device(y);
      gpu::DeviceBuffer<float> loss_d(c.B);
      gpu::DeviceBuffer<bf16> dl_d(z.size());
      loss_d.poison();
      dl_d.poison();
      gpu::softmax_xent(loss_d.get(), dl_d.get(), z_d.get(), y_d.get(), c.B, c.K, smoothing, dscale, 0);
      const auto loss = loss_d.download();
      CHECK(rel_err(loss, loss_ref) < 1e-5);
      CHECK(rel_err(to_f(dl_d.download()), dl_ref) < 1e-2);
      // Evaluation mode (no dlogits): the same losses, bit for bit.
      loss_d.poison();
      gpu::softmax_xent(loss_d.get(), nullptr, z_d.get(), y_d.get(), c.B, c.K, smoothing, dscale, 0);
      CHECK(loss_d.download() == loss);
    }
  }
}

TEST_CASE("gpu topk_correct: counts with ties vs CPU twin, added onto the counters") {
  uint64_t seed = 6000;
  for (int K : {5, 13, 1000, 100000}) {
    CAPTURE(K);
    const int B = K >= 100000 ? 9 : 61;
    seed += 10;
    auto z = bf_round(randn_f((size_t)B * K, seed));
    const auto y = random_labels(B, K, seed);
    // Ties: some rows copy the label's logit onto another class, one row is constant, one row gives the
    // label the maximum and one more class the same maximum.
    for (int i = 0; i < B; i += 3) z[(size_t)i * K + (y[i] + 1) % K] = z[(size_t)i * K + y[i]];
    for (int k = 0; k < K; ++k) z[(size_t)2 * K + k] = 0.5f;
    float mx = z[(size_t)4 * K];
    for (int k = 0; k < K; ++k) mx = std::max(mx, z[(size_t)4 * K + k]);
    z[(size_t)4 * K + y[4]] = mx;
    z[(size_t)4 * K + (y[4] + 2) % K] = mx;

    const int top1 = ref::topk_correct(z.data(), y.data(), B, K, 1),
              top5 = ref::topk_correct(z.data(), y.data(), B, K, 5);
    auto z_d = to_device(to_bf(z));
    auto y_d = to_device(y);
    auto counts_d = to_device(std::vector<int>{3, 7});
    gpu::topk_correct(counts_d.get(), z_d.get(), y_d.get(), B, K, 0);
    const auto counts = counts_d.download();
    CHECK(counts[0] == 3 + top1);
    CHECK(counts[1] == 7 + top5);
    if (K == 5) CHECK(top5 == B);  // everything is in the top 5 of 5
  }
}
