// Layer norm CPU reference: float64 finite-difference gradients (dx written and accumulated, dweight and
// dbias accumulated into non-zero buffers), forward statistics, and float against double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/layernorm.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::minus;
using vit::test::randn;
using vit::test::rel_err;

namespace {
constexpr double kEps = 1e-5;

struct LnCase {
  i64 rows;
  int C;
};

// One gradient check of every input of layer norm for one shape; returns the worst relative error.
double ln_gradcheck(i64 rows, int C, uint64_t seed, bool dx_accumulate) {
  const size_t n = (size_t)rows * C;
  auto x = randn(n, seed, 2.0);
  for (size_t i = 0; i < n; ++i) x[i] += 0.5;  // a non-zero mean exercises the centring
  auto w = randn(C, seed + 1, 0.5);
  for (auto& v : w) v += 1.0;
  auto bias = randn(C, seed + 2);
  const auto wout = randn(n, seed + 3);
  std::vector<double> out(n), mean(rows), rstd(rows);
  auto loss = [&] {
    ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(), rows, C, kEps);
    return dot(out, wout);
  };
  loss();
  const auto dx0 = dx_accumulate ? randn(n, seed + 4) : std::vector<double>(n, 1e30);  // (=) must overwrite
  const auto dw0 = randn(C, seed + 5), db0 = randn(C, seed + 6);  // parameter grads must accumulate
  auto dx = dx0, dw = dw0, db = db0;
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), wout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                          rows, C, dx_accumulate);
  const double ex = grad_error(x, dx_accumulate ? minus(dx, dx0) : dx, loss);
  const double ew = grad_error(w, minus(dw, dw0), loss);
  const double eb = grad_error(bias, minus(db, db0), loss);
  INFO("rows=", rows, " C=", C, " dx=", ex, " dweight=", ew, " dbias=", eb);
  CHECK(ex < 1e-6);
  CHECK(ew < 1e-6);
  CHECK(eb < 1e-6);
  return std::max({ex, ew, eb});
}
}  // namespace

TEST_CASE("layernorm ref: forward gives zero mean, unit variance before the affine") {
  const i64 rows = 5;
  const int C = 37;
  auto x = randn((size_t)rows * C, 101, 3.0);
  for (auto& v : x) v += 7.0;  // large mean: the two-pass variance must not lose it
  std::vector<double> w(C, 1.0), b(C, 0.0), out(x.size()), mean(rows), rstd(rows);
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C, kEps);
  for (i64 r = 0; r < rows; ++r) {
    double s = 0, q = 0, xs = 0;
    for (int c = 0; c < C; ++c) {
      s += out[r * C + c];
      q += out[r * C + c] * out[r * C + c];
      xs += x[r * C + c];
    }
    CHECK(std::abs(s / C) < 1e-12);
    CHECK(std::abs(q / C - 1.0) < 1e-5);  // var / (var + eps) with var ~ 9
    CHECK(mean[r] == doctest::Approx(xs / C).epsilon(1e-12));
    double var = 0;
    for (int c = 0; c < C; ++c) var += (x[r * C + c] - mean[r]) * (x[r * C + c] - mean[r]);
    CHECK(rstd[r] == doctest::Approx(1.0 / std::sqrt(var / C + kEps)).epsilon(1e-12));
  }
}

TEST_CASE("layernorm ref: finite-difference gradients (float64)") {
  double worst = 0;
  uint64_t seed = 200;
  for (LnCase s : {LnCase{1, 5}, LnCase{5, 37}, LnCase{17, 13}, LnCase{3, 64}})
    for (bool acc : {false, true}) worst = std::max(worst, ln_gradcheck(s.rows, s.C, seed += 10, acc));
  INFO("worst relative error ", worst);
  CHECK(worst < 1e-6);
}

TEST_CASE("layernorm ref: float matches double") {
  const i64 rows = 17;
  const int C = 45;
  const size_t n = (size_t)rows * C;
  auto xd = randn(n, 301, 2.0), wd = randn(C, 302), bd = randn(C, 303), gd = randn(n, 304);
  auto xf = std::vector<float>(xd.begin(), xd.end()), wf = std::vector<float>(wd.begin(), wd.end());
  auto bf = std::vector<float>(bd.begin(), bd.end()), gf = std::vector<float>(gd.begin(), gd.end());
  // Same (float-representable) inputs on both sides, so only the arithmetic differs.
  xd.assign(xf.begin(), xf.end());
  wd.assign(wf.begin(), wf.end());
  bd.assign(bf.begin(), bf.end());
  gd.assign(gf.begin(), gf.end());
  std::vector<double> od(n), md(rows), rd(rows), dxd(n), dwd(C, 0.5), dbd(C, -0.5);
  std::vector<float> of(n), mf(rows), rf(rows), dxf(n), dwf(C, 0.5f), dbf(C, -0.5f);
  ref::layernorm_forward(od.data(), md.data(), rd.data(), xd.data(), wd.data(), bd.data(), rows, C, kEps);
  ref::layernorm_forward(of.data(), mf.data(), rf.data(), xf.data(), wf.data(), bf.data(), rows, C, kEps);
  ref::layernorm_backward(dxd.data(), dwd.data(), dbd.data(), gd.data(), xd.data(), wd.data(), md.data(), rd.data(),
                          rows, C, false);
  ref::layernorm_backward(dxf.data(), dwf.data(), dbf.data(), gf.data(), xf.data(), wf.data(), mf.data(), rf.data(),
                          rows, C, false);
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  CHECK(rel_err(d(of), od) < 1e-5);
  CHECK(rel_err(d(rf), rd) < 1e-5);
  CHECK(rel_err(d(dxf), dxd) < 1e-5);
  CHECK(rel_err(d(dwf), dwd) < 1e-5);
  CHECK(rel_err(d(dbf), dbd) < 1e-5);
}

TEST_CASE("layernorm ref: dsum adds the column sums of dx as written (after an accumulate)") {
  const i64 rows = 37;
  const int C = 70;
  const size_t n = (size_t)rows * C;
  const auto x = randn(n, 71), w = randn(C, 72), b = randn(C, 73), g = randn(n, 74), dx0 = randn(n, 75);
  std::vector<double> out(n), mean(rows), rstd(rows);
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C, kEps);
  for (bool acc : {false, true}) {
    CAPTURE(acc);
    const auto ds0 = randn(C, 76);
    std::vector<double> dx = dx0, dw(C, 0.0), db(C, 0.0), ds = ds0, dx_plain = dx0, dw2(C, 0.0), db2(C, 0.0);
    ref::layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), mean.data(), rstd.data(),
                            rows, C, acc, ds.data());
    ref::layernorm_backward(dx_plain.data(), dw2.data(), db2.data(), g.data(), x.data(), w.data(), mean.data(),
                            rstd.data(), rows, C, acc);
    CHECK(dx == dx_plain);  // dsum changes nothing else
    CHECK(dw == dw2);
    std::vector<double> want = ds0;
    for (i64 r = 0; r < rows; ++r)
      for (int c = 0; c < C; ++c) want[c] += dx[r * C + c];
    CHECK(rel_err(ds, want) < 1e-13);
  }
}
