// Global pooling CPU reference: values, float64 finite-difference gradients (dx written over the whole
// tensor, zeros where the pool did not read), float against double.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "kernels/pool.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::randn;
using vit::test::rel_err;

TEST_CASE("pool ref: token and average values") {
  const int B = 3, Tn = 7, D = 5;
  const auto x = randn((size_t)B * Tn * D, 900);
  std::vector<double> out((size_t)B * D);
  ref::pool_forward(out.data(), x.data(), B, Tn, D, PoolMode::token, 1);
  for (int b = 0; b < B; ++b)
    for (int d = 0; d < D; ++d) CHECK(out[b * D + d] == x[(size_t)b * Tn * D + d]);
  for (int n_prefix : {0, 1, 5}) {
    ref::pool_forward(out.data(), x.data(), B, Tn, D, PoolMode::avg, n_prefix);
    for (int b = 0; b < B; ++b)
      for (int d = 0; d < D; ++d) {
        double s = 0;
        for (int t = n_prefix; t < Tn; ++t) s += x[((size_t)b * Tn + t) * D + d];
        CHECK(out[b * D + d] == doctest::Approx(s / (Tn - n_prefix)).epsilon(1e-14));
      }
  }
}

TEST_CASE("pool ref: finite-difference gradients (float64)") {
  double worst = 0;
  for (auto [mode, n_prefix] : {std::pair{PoolMode::token, 1}, {PoolMode::token, 0}, {PoolMode::avg, 0},
                                {PoolMode::avg, 1}, {PoolMode::avg, 5}, {PoolMode::avg, 6}})
    for (int B : {1, 3}) {
      const int Tn = 7, D = 5;
      auto x = randn((size_t)B * Tn * D, 910 + B + n_prefix);
      const auto w = randn((size_t)B * D, 920 + B);
      std::vector<double> out(w.size()), dx(x.size(), 1e30);  // garbage: backward must write every element
      auto loss = [&] {
        ref::pool_forward(out.data(), x.data(), B, Tn, D, mode, n_prefix);
        return dot(out, w);
      };
      ref::pool_backward(dx.data(), w.data(), B, Tn, D, mode, n_prefix);
      const double e = grad_error(x, dx, loss);
      INFO("mode=", (int)mode, " n_prefix=", n_prefix, " B=", B, " rel err ", e);
      CHECK(e < 1e-6);
      worst = std::max(worst, e);
    }
  INFO("worst ", worst);
  CHECK(worst < 1e-6);
}

TEST_CASE("pool ref: float matches double") {
  const int B = 4, Tn = 11, D = 13;
  const auto x0 = randn((size_t)B * Tn * D, 930), g0 = randn((size_t)B * D, 931);
  std::vector<float> xf(x0.begin(), x0.end()), gf(g0.begin(), g0.end()), of(B * D), dxf(xf.size());
  std::vector<double> xd(xf.begin(), xf.end()), gd(gf.begin(), gf.end()), od(B * D), dxd(xd.size());
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  for (PoolMode mode : {PoolMode::token, PoolMode::avg}) {
    ref::pool_forward(of.data(), xf.data(), B, Tn, D, mode, 2);
    ref::pool_forward(od.data(), xd.data(), B, Tn, D, mode, 2);
    CHECK(rel_err(d(of), od) < 1e-5);
    ref::pool_backward(dxf.data(), gf.data(), B, Tn, D, mode, 2);
    ref::pool_backward(dxd.data(), gd.data(), B, Tn, D, mode, 2);
    CHECK(rel_err(d(dxf), dxd) < 1e-5);
  }
}
