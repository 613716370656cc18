// Cross attention CPU reference (timm's AttentionPoolLatent core): forward against a naive softmax written
// out here, float64 finite-difference gradients of q, k and v on odd shapes (backward through the saved lse),
// dq and dkv fully overwritten, and the float instantiation against the double one.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cross_attention.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::numeric_grad;
using vit::test::randn;
using vit::test::rel_err;

namespace {

struct Shape {
  int B, L, T, H, d;
  size_t q() const { return (size_t)B * L * H * d; }  // also out, dout, dq
  size_t kv() const { return (size_t)B * T * 2 * H * d; }
  size_t stat() const { return (size_t)B * H * L; }
  size_t iq(int b, int l, int h, int c) const { return (((size_t)b * L + l) * H + h) * d + c; }
  size_t ikv(int b, int t, int part, int h, int c) const {
    return ((((size_t)b * T + t) * 2 + part) * H + h) * d + c;
  }
};

// The k (part 0) or v (1) entries of a tensor in the kv layout, in order.
std::vector<double> part_of(const std::vector<double>& x, const Shape& s, int part) {
  std::vector<double> r;
  for (int b = 0; b < s.B; ++b)
    for (int t = 0; t < s.T; ++t)
      for (int h = 0; h < s.H; ++h)
        for (int c = 0; c < s.d; ++c) r.push_back(x[s.ikv(b, t, part, h, c)]);
  return r;
}

// softmax(scale · q kᵀ) v and log Σ exp written out directly, without the reference's max subtraction.
void naive_cross_attention(std::vector<double>& out, std::vector<double>& lse, const std::vector<double>& q,
                           const std::vector<double>& kv, const Shape& s, double scale) {
  out.assign(s.q(), 0.0);
  lse.assign(s.stat(), 0.0);
  std::vector<double> e(s.T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h)
      for (int l = 0; l < s.L; ++l) {
        double z = 0;
        for (int j = 0; j < s.T; ++j) {
          double qk = 0;
          for (int c = 0; c < s.d; ++c) qk += q[s.iq(b, l, h, c)] * kv[s.ikv(b, j, 0, h, c)];
          e[j] = std::exp(scale * qk);
          z += e[j];
        }
        for (int j = 0; j < s.T; ++j)
          for (int c = 0; c < s.d; ++c) out[s.iq(b, l, h, c)] += e[j] / z * kv[s.ikv(b, j, 1, h, c)];
        lse[((size_t)b * s.H + h) * s.L + l] = std::log(z);
      }
}

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST_CASE("cross attention ref: forward matches a naive softmax, in double and in float") {
  for (const Shape s : {Shape{1, 1, 1, 1, 4}, Shape{2, 1, 5, 3, 8}, Shape{2, 2, 17, 3, 8}, Shape{1, 3, 33, 2, 16}}) {
    for (const double in_scale : {1.0, 4.0}) {  // 4.0 gives peaked softmax rows (scores of ±10 and more)
      const double scale = 1.0 / std::sqrt((double)s.d);
      const auto q = randn(s.q(), 1100 + s.T * 10 + s.L, in_scale);
      const auto kv = randn(s.kv(), 1200 + s.T * 10 + s.d, in_scale);
      std::vector<double> out(s.q(), NAN), lse(s.stat(), NAN), nout, nlse;
      ref::cross_attention_forward(out.data(), lse.data(), q.data(), kv.data(), s.B, s.L, s.T, s.H, s.d, scale);
      naive_cross_attention(nout, nlse, q, kv, s, scale);
      INFO("B=", s.B, " L=", s.L, " T=", s.T, " H=", s.H, " d=", s.d, " input scale ", in_scale);
      CHECK(rel_err(out, nout) < 1e-12);
      CHECK(rel_err(lse, nlse) < 1e-12);

      // float instantiation on the same (float-representable) inputs: float storage, double sums.
      std::vector<float> qf(q.begin(), q.end()), kvf(kv.begin(), kv.end()), of(s.q(), NAN), lf(s.stat(), NAN);
      ref::cross_attention_forward(of.data(), lf.data(), qf.data(), kvf.data(), s.B, s.L, s.T, s.H, s.d, scale);
      naive_cross_attention(nout, nlse, as_double(qf), as_double(kvf), s, scale);
      CHECK(rel_err(as_double(of), nout) < 1e-6);
      CHECK(rel_err(as_double(lf), nlse) < 1e-6);
    }
  }
  // A single key: every latent's output is v itself and lse its one scaled score.
  const Shape s{1, 2, 1, 2, 4};
  const auto q = randn(s.q(), 77), kv = randn(s.kv(), 78);
  std::vector<double> out(s.q()), lse(s.stat());
  ref::cross_attention_forward(out.data(), lse.data(), q.data(), kv.data(), 1, 2, 1, 2, 4, 0.5);
  for (int l = 0; l < 2; ++l)
    for (int h = 0; h < 2; ++h) {
      double qk = 0;
      for (int c = 0; c < 4; ++c) {
        CHECK(out[s.iq(0, l, h, c)] == doctest::Approx(kv[s.ikv(0, 0, 1, h, c)]).epsilon(1e-14));
        qk += q[s.iq(0, l, h, c)] * kv[s.ikv(0, 0, 0, h, c)];
      }
      CHECK(lse[h * 2 + l] == doctest::Approx(0.5 * qk).epsilon(1e-12));
    }
}

TEST_CASE("cross attention ref: finite-difference gradients of q, k, v through the saved lse") {
  double worst = 0;
  uint64_t seed = 4000;
  for (int B : {1, 2})
    for (int L : {1, 2})
      for (int H : {1, 3})
        for (int T : {1, 5, 17})
          for (int d : {4, 8}) {
            const Shape s{B, L, T, H, d};
            const double scale = 1.0 / std::sqrt((double)d) * 1.3;  // not the default, so scale is exercised
            auto q = randn(s.q(), ++seed);
            auto kv = randn(s.kv(), ++seed);
            const auto w = randn(s.q(), ++seed);  // loss = Σ w ⊙ out, so dout = w
            std::vector<double> out(s.q()), lse(s.stat());
            auto loss = [&] {
              ref::cross_attention_forward(out.data(), lse.data(), q.data(), kv.data(), B, L, T, H, d, scale);
              return dot(out, w);
            };
            loss();
            std::vector<double> dq(s.q(), NAN), dkv(s.kv(), NAN);  // (=): every entry must be written
            ref::cross_attention_backward(dq.data(), dkv.data(), w.data(), q.data(), kv.data(), out.data(), lse.data(),
                                          B, L, T, H, d, scale);
            const auto nq = numeric_grad(q, loss);
            const auto nkv = numeric_grad(kv, loss);
            const double eq = rel_err(dq, nq);
            const double ek = rel_err(part_of(dkv, s, 0), part_of(nkv, s, 0));
            const double ev = rel_err(part_of(dkv, s, 1), part_of(nkv, s, 1));
            INFO("B=", B, " L=", L, " T=", T, " H=", H, " d=", d, " dq=", eq, " dk=", ek, " dv=", ev);
            // With T = 1 the output is v whatever q and k are: dq = dk = 0 exactly, and rel_err against a
            // zero reference demands an exactly zero result (the finite differences of a constant are 0).
            CHECK(eq < 1e-6);
            CHECK(ek < 1e-6);
            CHECK(ev < 1e-6);
            worst = std::max({worst, eq, ek, ev});
          }
  MESSAGE("cross attention ref: worst finite-difference relative error ", worst);
}

TEST_CASE("cross attention ref: float backward agrees with double") {
  const Shape s{2, 3, 23, 3, 16};
  const double scale = 0.25;
  const auto q = randn(s.q(), 5001), kv = randn(s.kv(), 5002), dout = randn(s.q(), 5003);
  std::vector<double> out(s.q()), lse(s.stat()), dq(s.q()), dkv(s.kv());
  ref::cross_attention_forward(out.data(), lse.data(), q.data(), kv.data(), s.B, s.L, s.T, s.H, s.d, scale);
  ref::cross_attention_backward(dq.data(), dkv.data(), dout.data(), q.data(), kv.data(), out.data(), lse.data(), s.B,
                                s.L, s.T, s.H, s.d, scale);
  std::vector<float> qf(q.begin(), q.end()), kvf(kv.begin(), kv.end()), gf(dout.begin(), dout.end()), of(s.q()),
      lf(s.stat()), dqf(s.q(), NAN), dkvf(s.kv(), NAN);
  ref::cross_attention_forward(of.data(), lf.data(), qf.data(), kvf.data(), s.B, s.L, s.T, s.H, s.d, scale);
  ref::cross_attention_backward(dqf.data(), dkvf.data(), gf.data(), qf.data(), kvf.data(), of.data(), lf.data(), s.B,
                                s.L, s.T, s.H, s.d, scale);
  // float inputs are rounded to 2^-24 relative; sums run in double, so ~1e-7 is expected.
  CHECK(rel_err(as_double(of), out) < 1e-6);
  CHECK(rel_err(as_double(dqf), dq) < 1e-5);
  for (int part = 0; part < 2; ++part)
    CHECK(rel_err(part_of(as_double(dkvf), s, part), part_of(dkv, s, part)) < 1e-5);
}

TEST_CASE("cross attention ref: identical latent rows give identical rows and L times the key gradients") {
  // With L latent rows that are identical, every output row and every lse must be identical, and the key
  // gradients must be L times those of one row fed the same dout (dk, dv are sums over the latent rows).
  const Shape s1{2, 1, 9, 2, 8}, s3{2, 3, 9, 2, 8};
  const double scale = 0.4;
  const auto q1 = randn(s1.q(), 6001), kv = randn(s1.kv(), 6002), g1 = randn(s1.q(), 6003);
  std::vector<double> q3(s3.q()), g3(s3.q());
  for (int b = 0; b < 2; ++b)
    for (int l = 0; l < 3; ++l)
      for (int h = 0; h < 2; ++h)
        for (int c = 0; c < 8; ++c) {
          q3[s3.iq(b, l, h, c)] = q1[s1.iq(b, 0, h, c)];
          g3[s3.iq(b, l, h, c)] = g1[s1.iq(b, 0, h, c)];
        }
  std::vector<double> o1(s1.q()), l1(s1.stat()), dq1(s1.q()), dkv1(s1.kv());
  std::vector<double> o3(s3.q()), l3(s3.stat()), dq3(s3.q()), dkv3(s3.kv());
  ref::cross_attention_forward(o1.data(), l1.data(), q1.data(), kv.data(), 2, 1, 9, 2, 8, scale);
  ref::cross_attention_forward(o3.data(), l3.data(), q3.data(), kv.data(), 2, 3, 9, 2, 8, scale);
  ref::cross_attention_backward(dq1.data(), dkv1.data(), g1.data(), q1.data(), kv.data(), o1.data(), l1.data(), 2, 1, 9,
                                2, 8, scale);
  ref::cross_attention_backward(dq3.data(), dkv3.data(), g3.data(), q3.data(), kv.data(), o3.data(), l3.data(), 2, 3, 9,
                                2, 8, scale);
  for (int b = 0; b < 2; ++b)
    for (int l = 0; l < 3; ++l)
      for (int h = 0; h < 2; ++h) {
        CHECK(l3[((size_t)b * 2 + h) * 3 + l] == doctest::Approx(l1[(size_t)b * 2 + h]).epsilon(1e-14));
        for (int c = 0; c < 8; ++c) {
          CHECK(o3[s3.iq(b, l, h, c)] == doctest::Approx(o1[s1.iq(b, 0, h, c)]).epsilon(1e-14));
          CHECK(dq3[s3.iq(b, l, h, c)] == doctest::Approx(dq1[s1.iq(b, 0, h, c)]).epsilon(1e-12));
        }
      }
  std::vector<double> three(dkv1.size());
  for (size_t i = 0; i < dkv1.size(); ++i) three[i] = 3 * dkv1[i];
  CHECK(rel_err(dkv3, three) < 1e-13);
}
