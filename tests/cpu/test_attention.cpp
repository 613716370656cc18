// Attention CPU reference: forward against a naive softmax written out here, float64 finite-difference
// gradients of q, k and v on odd shapes (backward through the saved lse), dqkv fully overwritten, and the
// float instantiation against the double one. Attention dropout: the mask as documented in
// attention_dropout.h (rebuilt here from rng::bits), its statistics, reproducibility and independence of seed
// and site, the forward against the naive softmax with that mask, finite-difference gradients with the mask
// fixed, and p = 0 (or a p that rounds to threshold 0) giving the plain results bit for bit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
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

// The mask written out from attention_dropout.h's definition: one rng::bits word per 2×2 block of (i, j),
// the 16-bit uniform at slot 2·(i mod 2) + (j mod 2), kept when >= round(p · 65536).
bool mask_keep(const AttnDropout& dr, int H, int b, int h, int i, int j) {
  const uint64_t bh = (uint64_t)b * H + h;
  const uint64_t word = rng::bits(dr.seed, dr.site, bh << 40 | (uint64_t)(i / 2) << 20 | (uint64_t)(j / 2));
  const uint32_t u = (uint32_t)(word >> (16 * (2 * (i % 2) + j % 2))) & 0xFFFF;
  return u >= (uint32_t)std::lround(dr.p * 65536.0);
}

// The naive attention with that mask: out_i = Σ_j e_ij / z_i · Z_ij · s · v_j, s = 65536 / (65536 − threshold).
void naive_dropped(std::vector<double>& out, const std::vector<double>& qkv, const Shape& s, double scale,
                   const AttnDropout& dr) {
  const double keep_scale = 65536.0 / (65536.0 - std::lround(dr.p * 65536.0));
  out.assign(s.out(), 0.0);
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
        for (int j = 0; j < s.T; ++j) {
          if (!mask_keep(dr, s.H, b, h, i, j)) continue;
          for (int c = 0; c < s.d; ++c)
            out[(((size_t)b * s.T + i) * s.H + h) * s.d + c] += e[j] / z * keep_scale * qkv[s.iqkv(b, j, 2, h, c)];
        }
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

// ---- attention dropout ----

TEST_CASE("attention dropout: the mask follows its documented definition and keeps 1 - p of the entries") {
  // Over B·H·T² = 4·8·197² = 1.24M entries the kept fraction is binomial: its standard deviation is
  // sqrt(q (1 − q) / N) with q the resolved keep probability 1 − round(p · 65536) / 65536; 5 sigma bound
  // (a false failure about once in 3.5 million runs, and the draws are fixed, so it never flakes).
  const int B = 4, H = 8, T = 197;
  for (const float p : {0.02f, 0.1f, 0.5f, 0.9f}) {
    const AttnDropout dr{p, 1234, 77};
    const uint32_t thr = attn_mask::threshold(p);
    CHECK(thr == (uint32_t)std::lround(p * 65536.0));
    CHECK(attn_mask::keep_scale(thr) == 65536.0 / (65536.0 - thr));
    const double q = 1.0 - thr / 65536.0;
    int64_t kept = 0, n = 0, mismatches = 0;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < T; ++i)
          for (int j = 0; j < T; ++j) {
            const bool k = attn_mask::keep(dr, thr, (i64)b * H + h, i, j);
            mismatches += k != mask_keep(dr, H, b, h, i, j);
            kept += k;
            ++n;
          }
    const double frac = (double)kept / n, sigma = std::sqrt(q * (1 - q) / n);
    INFO("p = ", p, " kept ", frac, " expected ", q, " sigma ", sigma);
    CHECK(mismatches == 0);
    CHECK(std::abs(frac - q) < 5 * sigma);
  }
}

TEST_CASE("attention dropout: masks are reproducible and change with the seed and the site") {
  const int B = 2, H = 3, T = 37;
  const float p = 0.3f;
  const uint32_t thr = attn_mask::threshold(p);
  auto mask = [&](uint64_t seed, uint64_t site) {
    std::vector<char> m;
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < T; ++i)
          for (int j = 0; j < T; ++j) m.push_back(attn_mask::keep({p, seed, site}, thr, (i64)b * H + h, i, j));
    return m;
  };
  // Two independent masks differ in 2 p (1 − p) = 42% of the entries: demand at least 30% (over 8214 entries
  // that is more than 12 sigma away from the expected value, so a mask that ignored seed or site fails).
  auto differ = [](const std::vector<char>& a, const std::vector<char>& b) {
    size_t n = 0;
    for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
    return (double)n / a.size();
  };
  const auto m0 = mask(5, 9);
  CHECK(mask(5, 9) == m0);
  CHECK(differ(mask(6, 9), m0) > 0.3);
  CHECK(differ(mask(5, 10), m0) > 0.3);
  // Every (b, h) has its own mask too (the counter's head field): compare head (0, 0) with (1, 2).
  std::vector<char> h00(m0.begin(), m0.begin() + T * T), h12(m0.end() - T * T, m0.end());
  CHECK(differ(h00, h12) > 0.3);
}

TEST_CASE("attention dropout: forward matches the naive softmax with the mask, lse stays the undropped one") {
  for (const Shape s : {Shape{1, 1, 2, 4}, Shape{2, 5, 3, 8}, Shape{2, 17, 3, 8}, Shape{1, 33, 2, 16}}) {
    const double scale = 1.0 / std::sqrt((double)s.d);
    const auto qkv = randn(s.qkv(), 4000 + s.T);
    const AttnDropout dr{0.25f, 99, 3};
    std::vector<double> out(s.out(), NAN), lse(s.stat(), NAN), plain_out(s.out()), plain_lse(s.stat()), nout;
    ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale, dr);
    ref::attention_forward(plain_out.data(), plain_lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale);
    naive_dropped(nout, qkv, s, scale, dr);
    INFO("B=", s.B, " T=", s.T, " H=", s.H, " d=", s.d);
    CHECK(rel_err(out, nout) < 1e-12);
    CHECK(std::memcmp(lse.data(), plain_lse.data(), lse.size() * sizeof(double)) == 0);
    if (s.T > 1) CHECK(rel_err(out, plain_out) > 1e-3);  // the mask did something
  }
}

TEST_CASE("attention dropout: p = 0, and a p that rounds to threshold 0, give the plain results bit for bit") {
  const Shape s{2, 19, 3, 8};
  const double scale = 0.3;
  const auto qkv = randn(s.qkv(), 4100), dout = randn(s.out(), 4101);
  auto run = [&](const AttnDropout& dr, std::vector<double>& out, std::vector<double>& lse,
                 std::vector<double>& dqkv) {
    out.assign(s.out(), NAN);
    lse.assign(s.stat(), NAN);
    dqkv.assign(s.qkv(), NAN);
    ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale, dr);
    ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.H, s.d, scale,
                            dr);
  };
  auto same = [](const std::vector<double>& a, const std::vector<double>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
  };
  std::vector<double> o0, l0, g0, o1, l1, g1, o2, l2, g2;
  run(AttnDropout{}, o0, l0, g0);
  run(AttnDropout{0.f, 5, 6}, o1, l1, g1);     // p = 0 with a seed: no mask
  run(AttnDropout{4e-6f, 5, 6}, o2, l2, g2);   // the masked code path with threshold 0: keeps all, scale 1
  CHECK(attn_mask::threshold(4e-6f) == 0u);
  CHECK(same(o0, o1));
  CHECK(same(l0, l1));
  CHECK(same(g0, g1));
  CHECK(same(o0, o2));
  CHECK(same(l0, l2));
  CHECK(same(g0, g2));
}

TEST_CASE("attention dropout: finite-difference gradients of q, k, v with the mask fixed") {
  // A fixed (seed, site) makes the mask part of the function, so central differences apply as without it.
  double worst = 0;
  uint64_t seed = 5000;
  for (const float p : {0.2f, 0.5f})
    for (int B : {1, 2})
      for (int H : {1, 3})
        for (int T : {2, 5, 17})
          for (int d : {4, 8}) {
            const Shape s{B, T, H, d};
            const double scale = 1.0 / std::sqrt((double)d) * 1.3;
            const AttnDropout dr{p, seed, 11};
            auto qkv = randn(s.qkv(), ++seed);
            const auto w = randn(s.out(), ++seed);
            std::vector<double> out(s.out()), lse(s.stat());
            auto loss = [&] {
              ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, d, scale, dr);
              return dot(out, w);
            };
            loss();
            std::vector<double> dqkv(s.qkv(), NAN);  // (=): every entry must be written
            ref::attention_backward(dqkv.data(), w.data(), qkv.data(), out.data(), lse.data(), B, T, H, d, scale, dr);
            const auto num = numeric_grad(qkv, loss);
            const double eq = rel_err(part_of(dqkv, s, 0), part_of(num, s, 0));
            const double ek = rel_err(part_of(dqkv, s, 1), part_of(num, s, 1));
            const double ev = rel_err(part_of(dqkv, s, 2), part_of(num, s, 2));
            INFO("p=", p, " B=", B, " T=", T, " H=", H, " d=", d, " dq=", eq, " dk=", ek, " dv=", ev);
            CHECK(eq < 1e-6);
            CHECK(ek < 1e-6);
            CHECK(ev < 1e-6);
            worst = std::max({worst, eq, ek, ev});
          }
  MESSAGE("attention dropout ref: worst finite-difference relative error ", worst);
}

TEST_CASE("attention dropout: float backward agrees with double, bad p and shapes are refused") {
  const Shape s{2, 23, 3, 16};
  const double scale = 0.25;
  const AttnDropout dr{0.1f, 42, 8};
  const auto qkv = randn(s.qkv(), 4201), dout = randn(s.out(), 4202);
  std::vector<double> out(s.out()), lse(s.stat()), dqkv(s.qkv());
  ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale, dr);
  ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.H, s.d, scale, dr);
  std::vector<float> qf(qkv.begin(), qkv.end()), gf(dout.begin(), dout.end()), of(s.out()), lf(s.stat()),
      dqf(s.qkv(), NAN);
  ref::attention_forward(of.data(), lf.data(), qf.data(), s.B, s.T, s.H, s.d, scale, dr);
  ref::attention_backward(dqf.data(), gf.data(), qf.data(), of.data(), lf.data(), s.B, s.T, s.H, s.d, scale, dr);
  CHECK(rel_err(std::vector<double>(of.begin(), of.end()), out) < 1e-6);
  for (int part = 0; part < 3; ++part)
    CHECK(rel_err(part_of(std::vector<double>(dqf.begin(), dqf.end()), s, part), part_of(dqkv, s, part)) < 1e-5);

  for (const float bad : {-0.1f, 1.f, 0.999999f})
    CHECK_THROWS_AS(ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.d, scale,
                                           AttnDropout{bad, 1, 1}),
                    vit::Error);
  CHECK_NOTHROW(attn_mask::check(AttnDropout{0.99f, 1, 1}, 1, attn_mask::kMaxT, 1));
  CHECK_THROWS_AS(attn_mask::check(AttnDropout{0.1f, 1, 1}, 1, attn_mask::kMaxT + 1, 1), vit::Error);
  CHECK_NOTHROW(attn_mask::check(AttnDropout{0.1f, 1, 1}, 1 << 13, 4, 1 << 11));  // B·H = 2^24
  CHECK_THROWS_AS(attn_mask::check(AttnDropout{0.1f, 1, 1}, (1 << 13) + 1, 4, 1 << 11), vit::Error);
}

TEST_CASE("attention ref: qkv_bias_grad is the gradient of a bias added to every qkv row (finite differences)") {
  const int B = 2, T = 5, H = 2, d = 4;
  const size_t ncol = 3 * H * d, n = (size_t)B * T * ncol, nout = (size_t)B * T * H * d;
  const auto qkv0 = randn(n, 91), wout = randn(nout, 92);
  auto bias = randn(ncol, 93, 0.5);
  std::vector<double> out(nout), lse((size_t)B * H * T), qkv(n);
  auto loss = [&] {
    for (size_t r = 0; r < (size_t)B * T; ++r)
      for (size_t c = 0; c < ncol; ++c) qkv[r * ncol + c] = qkv0[r * ncol + c] + bias[c];
    ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, d, 0.5);
    return test::dot(out, wout);
  };
  loss();
  std::vector<double> dqkv(n);
  ref::attention_backward(dqkv.data(), wout.data(), qkv.data(), out.data(), lse.data(), B, T, H, d, 0.5);
  const auto db0 = randn(ncol, 94);
  auto db = db0;
  ref::qkv_bias_grad(db.data(), dqkv.data(), B, T, H, d);
  for (size_t c = 0; c < ncol; ++c) db[c] -= db0[c];  // what was added
  CHECK(test::grad_error(bias, db, loss) < 1e-6);
}
