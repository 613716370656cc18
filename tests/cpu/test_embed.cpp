// Token assembly CPU reference: the layout against a hand-built concatenation, float64 finite-difference
// gradients for every combination of class token, register tokens and position embedding (parameter
// gradients accumulated into non-zero buffers), float against double.
#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "kernels/embed.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::dot;
using vit::test::grad_error;
using vit::test::minus;
using vit::test::randn;
using vit::test::rel_err;

namespace {
// The shapes of every variant: cls on/off, R = 0..3, pos all / patch-only / none, B = 1 or 3.
struct Variant {
  EmbedShape s;
  bool pos;
};
std::vector<Variant> variants() {
  std::vector<Variant> v;
  for (bool cls : {true, false})
    for (int R : {0, 3})
      for (int pos_mode : {0, 1, 2})  // 0: all tokens, 1: no_embed_class, 2: none
        for (int B : {1, 3}) v.push_back({EmbedShape{B, 5, 7, R, cls, pos_mode == 1}, pos_mode != 2});
  return v;
}
}  // namespace

TEST_CASE("embed ref: layout and position embedding") {
  for (const auto& [s, has_pos] : variants()) {
    const int P = s.prefix(), Tn = s.tokens(), D = s.D;
    const auto patch = randn((size_t)s.B * s.Np * D, 800), cls = randn(D, 801), reg = randn((size_t)s.R * D, 802);
    const auto pos = randn((size_t)s.pos_tokens() * D, 803);
    std::vector<double> x((size_t)s.B * Tn * D);
    ref::embed_forward(x.data(), patch.data(), s.cls ? cls.data() : nullptr, s.R ? reg.data() : nullptr,
                       has_pos ? pos.data() : nullptr, s);
    // Build the expected tensor as timm does: concatenate, then add pos (to all, or to the patches first).
    bool ok = true;
    for (int b = 0; b < s.B; ++b)
      for (int t = 0; t < Tn; ++t)
        for (int d = 0; d < D; ++d) {
          double e = 0;
          if (s.cls && t == 0) e = cls[d];
          else if (t < P) e = reg[(size_t)(t - (s.cls ? 1 : 0)) * D + d];
          else e = patch[((size_t)b * s.Np + (t - P)) * D + d];
          if (has_pos && !s.no_embed_class) e += pos[(size_t)t * D + d];
          if (has_pos && s.no_embed_class && t >= P) e += pos[(size_t)(t - P) * D + d];
          ok &= x[((size_t)b * Tn + t) * D + d] == e;
        }
    INFO("cls=", s.cls, " R=", s.R, " pos=", has_pos, " no_embed_class=", s.no_embed_class, " B=", s.B);
    CHECK(ok);
  }
}

TEST_CASE("embed ref: finite-difference gradients (float64)") {
  double worst = 0;
  uint64_t seed = 810;
  for (const auto& [s, has_pos] : variants()) {
    const int Tn = s.tokens(), D = s.D;
    auto patch = randn((size_t)s.B * s.Np * D, seed++), cls = randn(D, seed++), reg = randn((size_t)s.R * D, seed++);
    auto pos = randn((size_t)s.pos_tokens() * D, seed++);
    const auto w = randn((size_t)s.B * Tn * D, seed++);
    std::vector<double> x(w.size());
    const double* pcls = s.cls ? cls.data() : nullptr;
    const double* preg = s.R ? reg.data() : nullptr;
    const double* ppos = has_pos ? pos.data() : nullptr;
    auto loss = [&] {
      ref::embed_forward(x.data(), patch.data(), pcls, preg, ppos, s);
      return dot(x, w);
    };
    std::vector<double> dpatch(patch.size(), 1e30);  // written (=)
    const auto dcls0 = randn(cls.size(), seed++), dreg0 = randn(reg.size(), seed++), dpos0 = randn(pos.size(), seed++);
    auto dcls = dcls0, dreg = dreg0, dpos = dpos0;
    ref::embed_backward(dpatch.data(), s.cls ? dcls.data() : nullptr, s.R ? dreg.data() : nullptr,
                        has_pos ? dpos.data() : nullptr, w.data(), s);
    INFO("cls=", s.cls, " R=", s.R, " pos=", has_pos, " no_embed_class=", s.no_embed_class, " B=", s.B);
    const double ep = grad_error(patch, dpatch, loss);
    CHECK(ep < 1e-6);
    worst = std::max(worst, ep);
    if (s.cls) {
      const double e = grad_error(cls, minus(dcls, dcls0), loss);
      CHECK(e < 1e-6);
      worst = std::max(worst, e);
    }
    if (s.R) {
      const double e = grad_error(reg, minus(dreg, dreg0), loss);
      CHECK(e < 1e-6);
      worst = std::max(worst, e);
    }
    if (has_pos) {
      const double e = grad_error(pos, minus(dpos, dpos0), loss);
      CHECK(e < 1e-6);
      worst = std::max(worst, e);
    }
  }
  INFO("worst relative error ", worst);
  CHECK(worst < 1e-6);
}

TEST_CASE("embed ref: float matches double") {
  const EmbedShape s{3, 6, 11, 2, true, false};
  const int Tn = s.tokens(), D = s.D;
  auto f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  auto d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  const auto patchf = f(randn((size_t)s.B * s.Np * D, 850)), clsf = f(randn(D, 851)), regf = f(randn(2 * D, 852));
  const auto posf = f(randn((size_t)Tn * D, 853)), dxf = f(randn((size_t)s.B * Tn * D, 854));
  std::vector<float> xf(dxf.size()), dpf(patchf.size()), dcf(D, 1.f), drf(2 * D, 1.f), dposf(posf.size(), 1.f);
  std::vector<double> xd(dxf.size()), dpd(patchf.size()), dcd(D, 1.0), drd(2 * D, 1.0), dposd(posf.size(), 1.0);
  ref::embed_forward(xf.data(), patchf.data(), clsf.data(), regf.data(), posf.data(), s);
  ref::embed_forward(xd.data(), d(patchf).data(), d(clsf).data(), d(regf).data(), d(posf).data(), s);
  CHECK(rel_err(d(xf), xd) < 1e-5);
  ref::embed_backward(dpf.data(), dcf.data(), drf.data(), dposf.data(), dxf.data(), s);
  ref::embed_backward(dpd.data(), dcd.data(), drd.data(), dposd.data(), d(dxf).data(), s);
  CHECK(rel_err(d(dpf), dpd) < 1e-5);
  CHECK(rel_err(d(dcf), dcd) < 1e-5);
  CHECK(rel_err(d(drf), drd) < 1e-5);
  CHECK(rel_err(d(dposf), dposd) < 1e-5);
}
