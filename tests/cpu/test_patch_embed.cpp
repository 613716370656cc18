// Patchify CPU reference: patches times the flattened conv weight must equal a direct strided convolution
// computed here by hand, for several patch sizes and non-square images; float equals double exactly.
#include <doctest/doctest.h>

#include <vector>

#include "kernels/patch_embed.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;
using vit::test::randn;
using vit::test::rel_err;

namespace {
struct PatchCase {
  int B, C, H, W, p, D;
};
}  // namespace

TEST_CASE("patchify ref: patches @ weightᵀ equals the strided convolution") {
  for (PatchCase k : {PatchCase{2, 3, 8, 12, 4, 5}, PatchCase{1, 1, 5, 5, 5, 3}, PatchCase{3, 2, 3, 6, 1, 4},
                      PatchCase{1, 3, 14, 7, 7, 2}}) {
    const int Hp = k.H / k.p, Wp = k.W / k.p, K = k.C * k.p * k.p;
    const auto imgd = randn((size_t)k.B * k.C * k.H * k.W, 1000 + k.p);
    const std::vector<float> img(imgd.begin(), imgd.end());
    const auto weight = randn((size_t)k.D * K, 1001 + k.p);  // timm conv weight (D, C, p, p), flattened
    std::vector<double> patches((size_t)k.B * Hp * Wp * K, 1e30);
    ref::patchify(patches.data(), img.data(), k.B, k.C, k.H, k.W, k.p);

    // tokens[b, hp·Wp + wp, d] = Σ_k patches[row, k] · weight[d, k]  (the GEMM the model runs)
    // conv[b, d, hp, wp] = Σ_{c,ky,kx} weight[d, c, ky, kx] · img[b, c, hp·p + ky, wp·p + kx]
    std::vector<double> gemm, conv;
    for (int b = 0; b < k.B; ++b)
      for (int hp = 0; hp < Hp; ++hp)
        for (int wp = 0; wp < Wp; ++wp)
          for (int d = 0; d < k.D; ++d) {
            const size_t row = ((size_t)b * Hp + hp) * Wp + wp;
            double g = 0, c = 0;
            for (int i = 0; i < K; ++i) g += patches[row * K + i] * weight[(size_t)d * K + i];
            for (int ch = 0; ch < k.C; ++ch)
              for (int ky = 0; ky < k.p; ++ky)
                for (int kx = 0; kx < k.p; ++kx)
                  c += weight[(((size_t)d * k.C + ch) * k.p + ky) * k.p + kx] *
                       img[(((size_t)b * k.C + ch) * k.H + hp * k.p + ky) * k.W + wp * k.p + kx];
            gemm.push_back(g);
            conv.push_back(c);
          }
    const double e = rel_err(gemm, conv);
    INFO("B=", k.B, " C=", k.C, " H=", k.H, " W=", k.W, " p=", k.p, " rel err ", e);
    CHECK(e < 1e-14);
    // Every patch element is one image pixel (a permutation: the sums of both agree exactly).
    double si = 0, sp = 0;
    for (float v : img) si += v;
    for (double v : patches) sp += v;
    CHECK(sp == doctest::Approx(si).epsilon(1e-12));
  }
}

TEST_CASE("patchify ref: float matches double exactly") {
  const int B = 2, C = 3, H = 6, W = 9, p = 3;
  const auto imgd = randn((size_t)B * C * H * W, 1010);
  const std::vector<float> img(imgd.begin(), imgd.end());
  std::vector<float> pf(img.size());
  std::vector<double> pd(img.size());
  ref::patchify(pf.data(), img.data(), B, C, H, W, p);
  ref::patchify(pd.data(), img.data(), B, C, H, W, p);
  CHECK(rel_err(std::vector<double>(pf.begin(), pf.end()), pd) == 0.0);
}
