// Patch dropout: the kept subset is a uniformly random set of `keep` distinct patches per sample, prefix
// tokens always kept, reproducible from the seed; forward gathers and backward scatters exactly.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <vector>

#include "kernels/patch_drop.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;

TEST_CASE("patch drop: keep count, distinct indices, reproducible, uniform over patches") {
  CHECK(patch_drop_keep(196, 0.05) == 186);
  CHECK(patch_drop_keep(196, 0.5) == 98);
  CHECK(patch_drop_keep(3, 0.99) == 1);  // timm keeps at least one
  const int B = 400, Np = 17, keep = patch_drop_keep(Np, 0.3);
  std::vector<int> a((size_t)B * keep), b((size_t)B * keep), c((size_t)B * keep);
  ref::patch_keep_indices(a.data(), B, Np, keep, 5, 9);
  ref::patch_keep_indices(b.data(), B, Np, keep, 5, 9);
  ref::patch_keep_indices(c.data(), B, Np, keep, 6, 9);
  CHECK(a == b);
  CHECK(a != c);
  std::vector<int> hits(Np, 0);
  for (int s = 0; s < B; ++s) {
    std::set<int> seen(a.begin() + (size_t)s * keep, a.begin() + (size_t)(s + 1) * keep);
    CHECK(seen.size() == (size_t)keep);
    CHECK(*seen.begin() >= 0);
    CHECK(*seen.rbegin() < Np);
    for (int i : seen) hits[i]++;
  }
  // Each patch is kept with probability keep/Np: binomial(B, keep/Np) counts, within 5 sigma.
  const double p = (double)keep / Np, mean = B * p, sd = std::sqrt(B * p * (1 - p));
  for (int i = 0; i < Np; ++i) CHECK(std::abs(hits[i] - mean) < 5 * sd);
}

TEST_CASE("patch drop: forward keeps prefix rows and gathers the chosen patches - backward scatters (FD exact)") {
  const int B = 2, prefix = 2, Np = 7, D = 3, keep = 4;
  std::vector<int> idx((size_t)B * keep);
  ref::patch_keep_indices(idx.data(), B, Np, keep, 1, 2);
  auto x = test::randn((size_t)B * (prefix + Np) * D, 3);
  std::vector<double> out((size_t)B * (prefix + keep) * D, NAN);
  ref::patch_drop_forward<double>(out.data(), x.data(), idx.data(), B, prefix, Np, keep, D);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < prefix + keep; ++t) {
      const int src = t < prefix ? t : prefix + idx[(size_t)b * keep + t - prefix];
      for (int c = 0; c < D; ++c)
        CHECK(out[((size_t)b * (prefix + keep) + t) * D + c] == x[((size_t)b * (prefix + Np) + src) * D + c]);
    }
  auto w = test::randn(out.size(), 4);
  std::vector<double> dx(x.size(), NAN);
  ref::patch_drop_backward<double>(dx.data(), w.data(), idx.data(), B, prefix, Np, keep, D);
  auto loss = [&] {
    std::vector<double> o(out.size());
    ref::patch_drop_forward<double>(o.data(), x.data(), idx.data(), B, prefix, Np, keep, D);
    return test::dot(o, w);
  };
  CHECK(test::grad_error(x, dx, loss) < 1e-9);
}
