// qk_norm CPU reference: float64 finite-difference gradients of qkv and all four parameters (parameter
// gradients accumulated into non-zero buffers, dqkv fully overwritten), v passed through exactly in both
// directions, agreement with layernorm run on the gathered q and k rows, and float against double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/layernorm.h"
#include "kernels/qk_norm.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::minus;
using vit::test::randn;
using vit::test::rel_err;

namespace {
constexpr double kEps = 1e-6;  // timm's qk_norm LayerNorm eps

struct Params {
  std::vector<double> qw, qb, kw, kb;
};
Params make_params(int hd, uint64_t seed) {
  Params p{randn(hd, seed, 0.5), randn(hd, seed + 1), randn(hd, seed + 2, 0.5), randn(hd, seed + 3)};
  for (auto& v : p.qw) v += 1.0;
  for (auto& v : p.kw) v -= 1.0;  // q and k weights of different sign: a swapped pair would show
  return p;
}

// Rows of one part (0 = q, 1 = k, 2 = v) of a (BT, 3, H, hd) tensor, gathered into (BT·H, hd).
std::vector<double> gather_part(const std::vector<double>& qkv, i64 BT, int H, int hd, int part) {
  std::vector<double> r((size_t)BT * H * hd);
  for (i64 bt = 0; bt < BT; ++bt)
    for (int h = 0; h < H; ++h)
      for (int c = 0; c < hd; ++c) r[(bt * H + h) * hd + c] = qkv[((bt * 3 + part) * H + h) * hd + c];
  return r;
}

struct GradErrors {
  double qkv, qw, qb, kw, kb;
  double worst() const { return std::max({qkv, qw, qb, kw, kb}); }
};

GradErrors qk_gradcheck(i64 BT, int H, int hd, uint64_t seed) {
  const size_t n = (size_t)BT * 3 * H * hd, ns = (size_t)2 * BT * H;
  auto x = randn(n, seed, 2.0);
  for (auto& v : x) v += 0.5;  // a non-zero mean exercises the centring
  auto p = make_params(hd, seed + 1);
  const auto wout = randn(n, seed + 5);
  std::vector<double> out(n), mean(ns), rstd(ns);
  auto loss = [&] {
    ref::qk_norm_forward(out.data(), mean.data(), rstd.data(), x.data(), p.qw.data(), p.qb.data(), p.kw.data(),
                         p.kb.data(), BT, H, hd, kEps);
    return dot(out, wout);
  };
  loss();
  // v passes through the forward bit for bit.
  CHECK(gather_part(out, BT, H, hd, 2) == gather_part(x, BT, H, hd, 2));

  std::vector<double> dx(n, 1e30);  // (=): every element must be overwritten
  const auto dqw0 = randn(hd, seed + 6), dqb0 = randn(hd, seed + 7);  // parameter grads must accumulate
  const auto dkw0 = randn(hd, seed + 8), dkb0 = randn(hd, seed + 9);
  auto dqw = dqw0, dqb = dqb0, dkw = dkw0, dkb = dkb0;
  ref::qk_norm_backward(dx.data(), dqw.data(), dqb.data(), dkw.data(), dkb.data(), wout.data(), x.data(), p.qw.data(),
                        p.kw.data(), mean.data(), rstd.data(), BT, H, hd);
  // v's gradient is dout, bit for bit.
  CHECK(gather_part(dx, BT, H, hd, 2) == gather_part(wout, BT, H, hd, 2));

  GradErrors e{};
  e.qkv = grad_error(x, dx, loss);
  e.qw = grad_error(p.qw, minus(dqw, dqw0), loss);
  e.qb = grad_error(p.qb, minus(dqb, dqb0), loss);
  e.kw = grad_error(p.kw, minus(dkw, dkw0), loss);
  e.kb = grad_error(p.kb, minus(dkb, dkb0), loss);
  INFO("BT=", BT, " H=", H, " hd=", hd, " | dqkv ", e.qkv, " dqw ", e.qw, " dqb ", e.qb, " dkw ", e.kw, " dkb ", e.kb);
  CHECK(e.qkv < 1e-6);
  CHECK(e.qw < 1e-6);
  CHECK(e.qb < 1e-6);
  CHECK(e.kw < 1e-6);
  CHECK(e.kb < 1e-6);
  return e;
}
}  // namespace

TEST_CASE("qk_norm ref: finite-difference gradients of qkv and all parameters (float64)") {
  GradErrors worst{};
  uint64_t seed = 400;
  for (i64 BT : {1, 5, 7})
    for (int H : {1, 3})
      for (int hd : {4, 8}) {
        const GradErrors e = qk_gradcheck(BT, H, hd, seed += 20);
        worst = {std::max(worst.qkv, e.qkv), std::max(worst.qw, e.qw), std::max(worst.qb, e.qb),
                 std::max(worst.kw, e.kw), std::max(worst.kb, e.kb)};
      }
  INFO("qk_norm worst relative errors: dqkv ", worst.qkv, " dqw ", worst.qw, " dqb ", worst.qb, " dkw ", worst.kw,
          " dkb ", worst.kb);
  CHECK(worst.worst() < 1e-6);
}

TEST_CASE("qk_norm ref: equals layernorm on the gathered q and k rows") {
  const i64 BT = 5;
  const int H = 3, hd = 12;
  const size_t n = (size_t)BT * 3 * H * hd, nr = (size_t)BT * H;
  auto x = randn(n, 501, 1.5);
  for (auto& v : x) v -= 2.0;
  const auto p = make_params(hd, 502);
  const auto g = randn(n, 507);
  std::vector<double> out(n), mean(2 * nr), rstd(2 * nr), dx(n);
  std::vector<double> dqw(hd, 0.25), dqb(hd, -0.5), dkw(hd, 0.75), dkb(hd, 1.0);
  ref::qk_norm_forward(out.data(), mean.data(), rstd.data(), x.data(), p.qw.data(), p.qb.data(), p.kw.data(),
                       p.kb.data(), BT, H, hd, kEps);
  ref::qk_norm_backward(dx.data(), dqw.data(), dqb.data(), dkw.data(), dkb.data(), g.data(), x.data(), p.qw.data(),
                        p.kw.data(), mean.data(), rstd.data(), BT, H, hd);
  for (int part : {0, 1}) {
    const auto& w = part == 0 ? p.qw : p.kw;
    const auto& b = part == 0 ? p.qb : p.kb;
    const auto xr = gather_part(x, BT, H, hd, part), gr = gather_part(g, BT, H, hd, part);
    std::vector<double> o(nr * hd), m(nr), r(nr), d(nr * hd), dw(hd, part == 0 ? 0.25 : 0.75),
        db(hd, part == 0 ? -0.5 : 1.0);
    ref::layernorm_forward(o.data(), m.data(), r.data(), xr.data(), w.data(), b.data(), (i64)nr, hd, kEps);
    ref::layernorm_backward(d.data(), dw.data(), db.data(), gr.data(), xr.data(), w.data(), m.data(), r.data(),
                            (i64)nr, hd, false);
    INFO("part ", part);
    CHECK(rel_err(gather_part(out, BT, H, hd, part), o) < 1e-14);
    CHECK(rel_err(std::vector<double>(mean.begin() + part * nr, mean.begin() + (part + 1) * nr), m) < 1e-14);
    CHECK(rel_err(std::vector<double>(rstd.begin() + part * nr, rstd.begin() + (part + 1) * nr), r) < 1e-14);
    CHECK(rel_err(gather_part(dx, BT, H, hd, part), d) < 1e-14);
    CHECK(rel_err(part == 0 ? dqw : dkw, dw) < 1e-14);
    CHECK(rel_err(part == 0 ? dqb : dkb, db) < 1e-14);
  }
}

TEST_CASE("qk_norm ref: float matches double") {
  const i64 BT = 7;
  const int H = 3, hd = 20;
  const size_t n = (size_t)BT * 3 * H * hd, ns = (size_t)2 * BT * H;
  const auto pd = make_params(hd, 602);
  auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  // Same (float-representable) inputs on both sides, so only the arithmetic differs.
  const auto xf = f(randn(n, 601, 2.0)), gf = f(randn(n, 607));
  const auto qwf = f(pd.qw), qbf = f(pd.qb), kwf = f(pd.kw), kbf = f(pd.kb);
  const auto xd = d(xf), gd = d(gf), qwd = d(qwf), qbd = d(qbf), kwd = d(kwf), kbd = d(kbf);
  std::vector<double> od(n), md(ns), rd(ns), dxd(n), dqwd(hd, 0.5), dqbd(hd, -0.5), dkwd(hd, 0.5), dkbd(hd, -0.5);
  std::vector<float> of(n), mf(ns), rf(ns), dxf(n), dqwf(hd, 0.5f), dqbf(hd, -0.5f), dkwf(hd, 0.5f), dkbf(hd, -0.5f);
  ref::qk_norm_forward(od.data(), md.data(), rd.data(), xd.data(), qwd.data(), qbd.data(), kwd.data(), kbd.data(), BT,
                       H, hd, kEps);
  ref::qk_norm_forward(of.data(), mf.data(), rf.data(), xf.data(), qwf.data(), qbf.data(), kwf.data(), kbf.data(), BT,
                       H, hd, kEps);
  ref::qk_norm_backward(dxd.data(), dqwd.data(), dqbd.data(), dkwd.data(), dkbd.data(), gd.data(), xd.data(),
                        qwd.data(), kwd.data(), md.data(), rd.data(), BT, H, hd);
  ref::qk_norm_backward(dxf.data(), dqwf.data(), dqbf.data(), dkwf.data(), dkbf.data(), gf.data(), xf.data(),
                        qwf.data(), kwf.data(), mf.data(), rf.data(), BT, H, hd);
  CHECK(rel_err(d(of), od) < 1e-5);
  CHECK(rel_err(d(mf), md) < 1e-5);
  CHECK(rel_err(d(rf), rd) < 1e-5);
  CHECK(rel_err(d(dxf), dxd) < 1e-5);
  CHECK(rel_err(d(dqwf), dqwd) < 1e-5);
  CHECK(rel_err(d(dqbf), dqbd) < 1e-5);
  CHECK(rel_err(d(dkwf), dkwd) < 1e-5);
  CHECK(rel_err(d(dkbf), dkbd) < 1e-5);
}
