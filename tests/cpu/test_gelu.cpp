// GELU CPU reference: values against Φ computed another way, float64 finite-difference gradients for the
// erf and tanh forms, float against double.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/gelu.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::randn;
using vit::test::rel_err;

TEST_CASE("gelu ref: values") {
  std::vector<double> x = {-6.0, -2.5, -1.0, -0.1, 0.0, 0.3, 1.0, 2.0, 7.0}, exact(x.size()), approx(x.size());
  ref::gelu_forward(exact.data(), x.data(), (i64)x.size(), false);
  ref::gelu_forward(approx.data(), x.data(), (i64)x.size(), true);
  for (size_t i = 0; i < x.size(); ++i) {
    const double phi = 0.5 * std::erfc(-x[i] / std::sqrt(2.0));  // Φ(x) through erfc, not erf
    CHECK(exact[i] == doctest::Approx(x[i] * phi).epsilon(1e-14));
    CHECK(std::abs(approx[i] - exact[i]) < 1e-3);  // the tanh form is a close approximation
  }
}

TEST_CASE("gelu ref: finite-difference gradients (float64)") {
  for (bool tanh_approx : {false, true})
    for (i64 n : {1, 17, 301}) {
      auto x = randn((size_t)n, 400 + n, 2.5);
      const auto w = randn((size_t)n, 500 + n);
      std::vector<double> out((size_t)n), dx((size_t)n, 1e30);
      auto loss = [&] {
        ref::gelu_forward(out.data(), x.data(), n, tanh_approx);
        return dot(out, w);
      };
      ref::gelu_backward(dx.data(), w.data(), x.data(), n, tanh_approx);
      const double e = grad_error(x, dx, loss);
      INFO("tanh=", tanh_approx, " n=", n, " rel err ", e);
      CHECK(e < 1e-6);
    }
}

TEST_CASE("gelu ref: float matches double") {
  const i64 n = 1001;
  const auto xd0 = randn(n, 601, 3.0), gd0 = randn(n, 602);
  std::vector<float> xf(xd0.begin(), xd0.end()), gf(gd0.begin(), gd0.end()), of(n), dxf(n);
  std::vector<double> xd(xf.begin(), xf.end()), gd(gf.begin(), gf.end()), od(n), dxd(n);
  for (bool tanh_approx : {false, true}) {
    ref::gelu_forward(od.data(), xd.data(), n, tanh_approx);
    ref::gelu_forward(of.data(), xf.data(), n, tanh_approx);
    ref::gelu_backward(dxd.data(), gd.data(), xd.data(), n, tanh_approx);
    ref::gelu_backward(dxf.data(), gf.data(), xf.data(), n, tanh_approx);
    CHECK(rel_err(std::vector<double>(of.begin(), of.end()), od) < 1e-5);
    CHECK(rel_err(std::vector<double>(dxf.begin(), dxf.end()), dxd) < 1e-5);
  }
}

TEST_CASE("gelu ref: backward with the bias gradient = backward + column sums of dx") {
  const i64 rows = 29;
  const int cols = 13;
  const size_t n = (size_t)rows * cols;
  for (bool tanh_approx : {false, true}) {
    const auto x = randn(n, 81, 2.0), g = randn(n, 82), db0 = randn(cols, 83);
    std::vector<double> dx(n), plain(n), db = db0;
    ref::gelu_backward_bias(dx.data(), db.data(), g.data(), x.data(), rows, cols, tanh_approx);
    ref::gelu_backward(plain.data(), g.data(), x.data(), (i64)n, tanh_approx);
    CHECK(dx == plain);
    std::vector<double> want = db0;
    for (i64 r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) want[c] += plain[r * cols + c];
    CHECK(rel_err(db, want) < 1e-13);
  }
}
