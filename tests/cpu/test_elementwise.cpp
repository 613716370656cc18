// Elementwise CPU references: residual add, layer scale (finite differences, dgamma accumulates), dropout
// and drop path (reproducible masks, kept fraction, backward reuses the mask, p = 0 and p = 1), float
// against double.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/rng.h"
#include "kernels/elementwise.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::minus;
using vit::test::randn;
using vit::test::rel_err;

TEST_CASE("elementwise ref: add, also in place") {
  const i64 n = 23;
  auto a = randn(n, 700), b = randn(n, 701);
  std::vector<double> out(n);
  ref::add(out.data(), a.data(), b.data(), n);
  for (i64 i = 0; i < n; ++i) CHECK(out[i] == a[i] + b[i]);
  auto a2 = a;
  ref::add(a2.data(), a2.data(), b.data(), n);  // out aliases a
  CHECK(a2 == out);
}

TEST_CASE("elementwise ref: layer scale finite-difference gradients (float64)") {
  for (auto [rows, C] : {std::pair<i64, int>{1, 5}, {5, 37}, {17, 3}}) {
    const size_t n = (size_t)rows * C;
    auto x = randn(n, 710 + rows), gamma = randn(C, 720 + C);
    const auto w = randn(n, 730 + rows);
    std::vector<double> out(n), dx(n, 1e30);
    auto loss = [&] {
      ref::layer_scale_forward(out.data(), x.data(), gamma.data(), rows, C);
      return dot(out, w);
    };
    loss();
    for (size_t i = 0; i < n; ++i) CHECK(out[i] == x[i] * gamma[i % C]);
    const auto dg0 = randn(C, 740 + C);
    auto dg = dg0;
    ref::layer_scale_backward(dx.data(), dg.data(), w.data(), x.data(), gamma.data(), rows, C);
    const double ex = grad_error(x, dx, loss), eg = grad_error(gamma, minus(dg, dg0), loss);
    INFO("rows=", rows, " C=", C, " dx=", ex, " dgamma=", eg);
    CHECK(ex < 1e-6);
    CHECK(eg < 1e-6);
  }
}

TEST_CASE("elementwise ref: dropout masks") {
  const i64 n = 100000;
  const float p = 0.3f;
  const auto x = randn(n, 750);
  std::vector<double> a(n), b(n), c(n), d(n);
  ref::dropout_forward(a.data(), x.data(), n, p, 42, 7);
  ref::dropout_forward(b.data(), x.data(), n, p, 42, 7);
  CHECK(a == b);  // same (seed, site): same mask
  ref::dropout_forward(c.data(), x.data(), n, p, 43, 7);
  ref::dropout_forward(d.data(), x.data(), n, p, 42, 8);
  CHECK(a != c);  // another seed or another site: another mask
  CHECK(a != d);
  i64 kept = 0;
  const double scale = 1.0 / (1.0 - (double)p);
  bool values_ok = true;
  for (i64 i = 0; i < n; ++i) {
    const bool k = rng::uniform(42, 7, i) >= p;
    kept += k;
    values_ok &= a[i] == (k ? x[i] * scale : 0.0);
  }
  CHECK(values_ok);
  // Kept fraction within 5 standard deviations of 1 - p.
  const double frac = (double)kept / n, sd = std::sqrt(p * (1 - p) / n);
  CHECK(std::abs(frac - (1 - p)) < 5 * sd);

  // Backward: the same mask and scale (dropout is linear, so dx = dout · mask · scale exactly).
  const auto g = randn(n, 751);
  std::vector<double> dx(n, 1e30);
  ref::dropout_backward(dx.data(), g.data(), n, p, 42, 7);
  bool same_mask = true;
  for (i64 i = 0; i < n; ++i) same_mask &= (a[i] != 0) == (dx[i] != 0) && dx[i] == (a[i] != 0 ? g[i] * scale : 0.0);
  CHECK(same_mask);

  // A small finite-difference check ties backward to forward.
  const i64 m = 37;
  auto xs = randn(m, 752);
  const auto ws = randn(m, 753);
  std::vector<double> os(m), dxs(m);
  auto loss = [&] {
    ref::dropout_forward(os.data(), xs.data(), m, 0.5f, 9, 1);
    return dot(os, ws);
  };
  ref::dropout_backward(dxs.data(), ws.data(), m, 0.5f, 9, 1);
  const double e = grad_error(xs, dxs, loss);
  INFO("dropout dx rel err ", e);
  CHECK(e < 1e-6);
}

TEST_CASE("elementwise ref: dropout p = 0 copies exactly, p = 1 zeroes") {
  const i64 n = 1001;
  const auto xd = randn(n, 760);
  std::vector<float> x(xd.begin(), xd.end()), out(n, 1e30f), dx(n, 1e30f);
  ref::dropout_forward(out.data(), x.data(), n, 0.f, 5, 5);
  CHECK(std::memcmp(out.data(), x.data(), n * sizeof(float)) == 0);
  ref::dropout_backward(dx.data(), x.data(), n, 0.f, 5, 5);
  CHECK(std::memcmp(dx.data(), x.data(), n * sizeof(float)) == 0);
  ref::dropout_forward(out.data(), x.data(), n, 1.f, 5, 5);
  bool zeros = true;
  for (float v : out) zeros &= v == 0.f;
  CHECK(zeros);
}

TEST_CASE("elementwise ref: drop path keeps or drops whole samples") {
  const int B = 2000;
  const i64 per = 7;
  const float p = 0.25f;
  const auto x = randn((size_t)B * per, 770);
  std::vector<double> out(x.size()), out2(x.size()), dx(x.size(), 1e30);
  ref::drop_path_forward(out.data(), x.data(), B, per, p, 11, 3);
  ref::drop_path_forward(out2.data(), x.data(), B, per, p, 11, 3);
  CHECK(out == out2);
  const double scale = 1.0 / (1.0 - (double)p);
  int kept = 0;
  bool whole = true;
  for (int b = 0; b < B; ++b) {
    const bool k = rng::uniform(11, 3, b) >= p;
    kept += k;
    for (i64 j = 0; j < per; ++j) whole &= out[b * per + j] == (k ? x[b * per + j] * scale : 0.0);
  }
  CHECK(whole);
  const double frac = (double)kept / B, sd = std::sqrt(p * (1 - p) / B);
  CHECK(std::abs(frac - (1 - p)) < 5 * sd);

  const auto g = randn(x.size(), 771);
  ref::drop_path_backward(dx.data(), g.data(), B, per, p, 11, 3);
  bool same_mask = true;
  for (size_t i = 0; i < x.size(); ++i) same_mask &= dx[i] == (out[i] != 0 ? g[i] * scale : 0.0);
  CHECK(same_mask);

  // Finite differences on a small case, and p = 0 as an exact copy.
  const int b2 = 5;
  const i64 per2 = 3;
  auto xs = randn(b2 * per2, 772);
  const auto ws = randn(b2 * per2, 773);
  std::vector<double> os(xs.size()), dxs(xs.size());
  auto loss = [&] {
    ref::drop_path_forward(os.data(), xs.data(), b2, per2, 0.4f, 13, 2);
    return dot(os, ws);
  };
  ref::drop_path_backward(dxs.data(), ws.data(), b2, per2, 0.4f, 13, 2);
  const double e = grad_error(xs, dxs, loss);
  INFO("drop path dx rel err ", e);
  CHECK(e < 1e-6);
  ref::drop_path_forward(os.data(), xs.data(), b2, per2, 0.f, 13, 2);
  CHECK(os == xs);
}

TEST_CASE("elementwise ref: float matches double") {
  const i64 rows = 17;
  const int C = 29;
  const size_t n = (size_t)rows * C;
  const auto x0 = randn(n, 780), g0 = randn(C, 781), d0 = randn(n, 782);
  std::vector<float> xf(x0.begin(), x0.end()), gf(g0.begin(), g0.end()), df(d0.begin(), d0.end());
  std::vector<double> xd(xf.begin(), xf.end()), gd(gf.begin(), gf.end()), dd(df.begin(), df.end());
  std::vector<float> of(n), dxf(n), dgf(C, 1.f);
  std::vector<double> od(n), dxd(n), dgd(C, 1.0);
  auto D = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  ref::layer_scale_forward(of.data(), xf.data(), gf.data(), rows, C);
  ref::layer_scale_forward(od.data(), xd.data(), gd.data(), rows, C);
  CHECK(rel_err(D(of), od) < 1e-5);
  ref::layer_scale_backward(dxf.data(), dgf.data(), df.data(), xf.data(), gf.data(), rows, C);
  ref::layer_scale_backward(dxd.data(), dgd.data(), dd.data(), xd.data(), gd.data(), rows, C);
  CHECK(rel_err(D(dxf), dxd) < 1e-5);
  CHECK(rel_err(D(dgf), dgd) < 1e-5);
  ref::add(of.data(), xf.data(), df.data(), (i64)n);
  ref::add(od.data(), xd.data(), dd.data(), (i64)n);
  CHECK(rel_err(D(of), od) < 1e-5);
  ref::dropout_forward(of.data(), xf.data(), (i64)n, 0.2f, 1, 2);
  ref::dropout_forward(od.data(), xd.data(), (i64)n, 0.2f, 1, 2);
  CHECK(rel_err(D(of), od) < 1e-5);
  ref::drop_path_backward(dxf.data(), df.data(), (int)rows, C, 0.5f, 3, 4);
  ref::drop_path_backward(dxd.data(), dd.data(), (int)rows, C, 0.5f, 3, 4);
  CHECK(rel_err(D(dxf), dxd) < 1e-5);
}
