// Attention CPU reference: forward against a naive softmax written out here, float64 finite-difference
// gradients of q, k and v on odd shapes (backward through the saved lse), dqkv fully overwritten, and the
// float instantiation against the double one.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/attention.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::numeric_grad;
using vit::test::randn;
using vit::test::rel_err;

namespace {

struct Shape {
  int B, T, H, d;
  size_t qkv() const { return (size_t)B * T * 3 * H * d; }
  size_t out() const { return (size_t)B * T * H * d; }
  size_t stat() const { return (size_t)B * H * T; }
  size_t iqkv(int b, int t, int part, int h, int c) const {
    return ((((size_t)b * T + t) * 3 + part) * H + h) * d + c;
  }
};

// The q (part 0), k (1) or v (2) entries of a tensor in the qkv layout, in order.
std::vector<double> part_of(const std::vector<double>& x, const Shape& s, int part) {
  std::vector<double> r;
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h)
        for (int c = 0; c < s.d; ++c) r.push_back(x[s.iqkv(b, t, part, h, c)]);
  return r;
}

// softmax(scale · q kᵀ) v and log Σ exp written out directly, without the reference's max subtraction.
void naive_attention(std::vector<double>& out, std::vector<double>& lse, const std::vector<double>& qkv, const Shape& s,
                     double scale) {
  out.assign(s.out(), 0.0);
  lse.assign(s.stat(), 0.0);
  std::vector<double> e(s.T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int i = 0; i < s.T; ++i) {
        double z = 0;
        for (int j = 0; j < s.T; ++j) {
          double qk = 0;
          for (int c = 0; c < s.d; ++c) qk += qkv[s.iqkv(b, i, 0, h, c)] * qkv[s.iqkv(b, j, 1, h, c)];
          e[j] = std::exp(scale * qk);
          z += e[j];
        }
        for (int j = 0; j < s.T; ++j)
          for (int c = 0; c < s.d; ++c)
            out[(((size_t)b * s.T + i) * s.H + h) * s.d + c] += e[j] / z * qkv[s.iqkv(b, j, 2, h, c)];
        lse[((size_t)b * s.H + h) * s.T + i] = std::log(z);
      }
}

}  // namespace

TEST_CASE("attention ref: forward matches a naive softmax, in double and in float") {
  for (const Shape s : {Shape{1, 1, 1, 4}, Shape{2, 5, 3, 8}, Shape{2, 17, 3, 8}, Shape{1, 33, 2, 16}}) {
    for (const double in_scale : {1.0, 4.0}) {  // 4.0 gives peaked softmax rows (scores of ±10 and more)
      const double scale = 1.0 / std::sqrt((double)s.d);
      const auto qkv = randn(s.qkv(), 1000 + s.T * 10 + s.d, in_scale);
      std::vector<double> out(s.out(), NAN), lse(s.stat(), NAN), nout, nlse;
      ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale);
      naive_attention(nout, nlse, qkv, s, scale);
      INFO("B=", s.B, " T=", s.T, " H=", s.H, " d=", s.d, " input scale ", in_scale);
      CHECK(rel_err(out, nout) < 1e-12);
      CHECK(rel_err(lse, nlse) < 1e-12);

      // float instantiation on the same (float-representable) inputs: float storage, double sums.
      std::vector<float> qf(qkv.begin(), qkv.end()), of(s.out(), NAN), lf(s.stat(), NAN);
      ref::attention_forward(of.data(), lf.data(), qf.data(), s.B, s.T, s.H, s.d, scale);
      std::vector<double> qd(qf.begin(), qf.end());
      naive_attention(nout, nlse, qd, s, scale);
      CHECK(rel_err(std::vector<double>(of.begin(), of.end()), nout) < 1e-6);
      CHECK(rel_err(std::vector<double>(lf.begin(), lf.end()), nlse) < 1e-6);
    }
  }
  // A single key: the output is v itself and lse the one scaled score.
  const Shape s{1, 1, 2, 4};
  const auto qkv = randn(s.qkv(), 77);
  std::vector<double> out(s.out()), lse(s.stat());
  ref::attention_forward(out.data(), lse.data(), qkv.data(), 1, 1, 2, 4, 0.5);
  for (int h = 0; h < 2; ++h) {
    double qk = 0;
    for (int c = 0; c < 4; ++c) {
      CHECK(out[h * 4 + c] == doctest::Approx(qkv[s.iqkv(0, 0, 2, h, c)]).epsilon(1e-14));
      qk += qkv[s.iqkv(0, 0, 0, h, c)] * qkv[s.iqkv(0, 0, 1, h, c)];
    }
    CHECK(lse[h] == doctest::Approx(0.5 * qk).epsilon(1e-12));
  }
}

TEST_CASE("attention ref: finite-difference gradients of q, k, v through the saved lse") {
  double worst = 0;
  uint64_t seed = 2000;
  for (int B : {1, 2})
    for (int H : {1, 3})
      for (int T : {1, 5, 17})
        for (int d : {4, 8}) {
          const Shape s{B, T, H, d};
          const double scale = 1.0 / std::sqrt((double)d) * 1.3;  // not the default, so scale is exercised
          auto qkv = randn(s.qkv(), ++seed);
          const auto w = randn(s.out(), ++seed);  // L = Σ w ⊙ out, so dout = w
          std::vector<double> out(s.out()), lse(s.stat());
          auto loss = [&] {
            ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, d, scale);
            return dot(out, w);
          };
          loss();
          std::vector<double> dqkv(s.qkv(), NAN);  // (=): every entry must be written
          ref::attention_backward(dqkv.data(), w.data(), qkv.data(), out.data(), lse.data(), B, T, H, d, scale);
          const auto num = numeric_grad(qkv, loss);
          const double eq = rel_err(part_of(dqkv, s, 0), part_of(num, s, 0));
          const double ek = rel_err(part_of(dqkv, s, 1), part_of(num, s, 1));
          const double ev = rel_err(part_of(dqkv, s, 2), part_of(num, s, 2));
          INFO("B=", B, " T=", T, " H=", H, " d=", d, " dq=", eq, " dk=", ek, " dv=", ev);
          // With T = 1 the output is v whatever q and k are: dq = dk = 0 exactly, and rel_err against a
          // zero reference demands an exactly zero result.
          CHECK(eq < 1e-6);
          CHECK(ek < 1e-6);
          CHECK(ev < 1e-6);
          worst = std::max({worst, eq, ek, ev});
        }
  MESSAGE("attention ref: worst finite-difference relative error ", worst);
}

TEST_CASE("attention ref: float backward agrees with double") {
  const Shape s{2, 23, 3, 16};
  const double scale = 0.25;
  const auto qkv = randn(s.qkv(), 3001), dout = randn(s.out(), 3002);
  std::vector<double> out(s.out()), lse(s.stat()), dqkv(s.qkv());
  ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale);
  ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.H, s.d, scale);
  std::vector<float> qf(qkv.begin(), qkv.end()), gf(dout.begin(), dout.end()), of(s.out()), lf(s.stat()),
      dqf(s.qkv(), NAN);
  ref::attention_forward(of.data(), lf.data(), qf.data(), s.B, s.T, s.H, s.d, scale);
  ref::attention_backward(dqf.data(), gf.data(), qf.data(), of.data(), lf.data(), s.B, s.T, s.H, s.d, scale);
  // float inputs are rounded to 2^-24 relative; sums run in double, so ~1e-7 is expected.
  CHECK(rel_err(std::vector<double>(of.begin(), of.end()), out) < 1e-6);
  for (int part = 0; part < 3; ++part)
    CHECK(rel_err(part_of(std::vector<double>(dqf.begin(), dqf.end()), s, part), part_of(dqkv, s, part)) < 1e-5);
}
