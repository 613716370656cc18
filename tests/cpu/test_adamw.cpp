#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "kernels/adamw.h"

using namespace vit;

TEST_CASE("adamw ref: two steps against the formula worked by hand, with bias correction") {
  // lr, beta1, beta2, eps, weight_decay, step
  const AdamWParams base{0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, 1};
  const double lr = base.lr, b1 = base.beta1, b2 = base.beta2, eps = base.eps, wd = base.weight_decay;
  const double scale = 0.5;  // e.g. a clipping factor
  std::vector<double> p = {0.3, -1.2, 2.0}, m(3, 0.0), v(3, 0.0);
  const std::vector<double> g1 = {0.4, -0.1, 0.0}, g2 = {-0.2, 0.3, 1.5};
  const auto p0 = p;

  AdamWParams a = base;
  ref::adamw_step(p.data(), g1.data(), m.data(), v.data(), 3, a, scale);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    // Step 1: m̂ = g and v̂ = g², so the step is lr · g / (|g| + eps) on top of the decay.
    const double g = scale * g1[i];
    const double expected = p0[i] * (1 - lr * wd) - lr * g / (std::abs(g) + eps);
    CHECK(p[i] == doctest::Approx(expected).epsilon(1e-12));
    CHECK(m[i] == doctest::Approx((1 - b1) * g).epsilon(1e-12));
    CHECK(v[i] == doctest::Approx((1 - b2) * g * g).epsilon(1e-12));
  }
  const auto p1 = p;
  a.step = 2;
  ref::adamw_step(p.data(), g2.data(), m.data(), v.data(), 3, a, scale);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    const double ga = scale * g1[i], gb = scale * g2[i];
    const double m2 = b1 * (1 - b1) * ga + (1 - b1) * gb;
    const double v2 = b2 * (1 - b2) * ga * ga + (1 - b2) * gb * gb;
    const double mhat = m2 / (1 - b1 * b1), vhat = v2 / (1 - b2 * b2);
    const double expected = p1[i] * (1 - lr * wd) - lr * mhat / (std::sqrt(vhat) + eps);
    CHECK(p[i] == doctest::Approx(expected).epsilon(1e-12));
    CHECK(m[i] == doctest::Approx(m2).epsilon(1e-12));
    CHECK(v[i] == doctest::Approx(v2).epsilon(1e-12));
  }
}

TEST_CASE("adamw ref: weight decay is decoupled from the moments") {
  const i64 n = 37;
  const auto p0 = test::randn(n, 41), g = test::randn(n, 42), m0 = test::randn(n, 43, 0.1);
  auto v0 = test::randn(n, 44, 0.1);
  for (auto& x : v0) x = x * x;
  AdamWParams a{1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 7};
  auto p_plain = p0, m_plain = m0, v_plain = v0;
  ref::adamw_step(p_plain.data(), g.data(), m_plain.data(), v_plain.data(), n, a, 1.0);
  a.weight_decay = 0.1f;
  auto p_wd = p0, m_wd = m0, v_wd = v0;
  ref::adamw_step(p_wd.data(), g.data(), m_wd.data(), v_wd.data(), n, a, 1.0);
  // Decay never enters m or v (that is what distinguishes AdamW from Adam with L2) ...
  CHECK(test::rel_err(m_wd, m_plain) == 0.0);
  CHECK(test::rel_err(v_wd, v_plain) == 0.0);
  // ... and only shrinks the weight by lr·wd·p, independent of the gradient.
  std::vector<double> diff = test::minus(p_wd, p_plain), expected(n);
  for (i64 i = 0; i < n; ++i) expected[i] = -(double)a.lr * a.weight_decay * p0[i];
  CHECK(test::rel_err(diff, expected) < 1e-9);

  // A zero gradient on zero moments moves the weight by the decay alone.
  std::vector<double> p = p0, zeros(n, 0.0), m(n, 0.0), v(n, 0.0);
  a.step = 1;
  ref::adamw_step(p.data(), zeros.data(), m.data(), v.data(), n, a, 1.0);
  for (i64 i = 0; i < n; ++i) expected[i] = p0[i] * (1 - (double)a.lr * a.weight_decay);
  CHECK(test::rel_err(p, expected) < 1e-15);
}

TEST_CASE("adamw ref: float instance agrees with double") {
  const i64 n = 1001;
  const auto p0 = test::randn(n, 51), g = test::randn(n, 52);
  const AdamWParams a{3e-4f, 0.9f, 0.999f, 1e-8f, 0.05f, 3};
  std::vector<double> p = p0, m(n, 0.01), v(n, 0.02);
  std::vector<float> pf(p0.begin(), p0.end()), gf(g.begin(), g.end()), mf(n, 0.01f), vf(n, 0.02f);
  ref::adamw_step(p.data(), g.data(), m.data(), v.data(), n, a, 0.7);
  ref::adamw_step(pf.data(), gf.data(), mf.data(), vf.data(), n, a, 0.7);
  CHECK(test::rel_err(std::vector<double>(pf.begin(), pf.end()), p) < 1e-6);
  CHECK(test::rel_err(std::vector<double>(mf.begin(), mf.end()), m) < 1e-6);
  CHECK(test::rel_err(std::vector<double>(vf.begin(), vf.end()), v) < 1e-6);
}
