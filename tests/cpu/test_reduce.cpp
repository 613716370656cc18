#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gradcheck.h"
#include "kernels/reduce.h"

using namespace vit;

TEST_CASE("reduce ref: sum_squares in double over sizes around the chunking") {
  for (i64 n : {i64{0}, i64{1}, i64{7}, i64{32768}, i64{100003}}) {
    CAPTURE(n);
    const auto x = test::randn(n, 60 + n);
    // Compensated (Kahan) sum as the independent reference.
    double s = 0, c = 0;
    for (double e : x) {
      const double y = e * e - c, t = s + y;
      c = (t - s) - y;
      s = t;
    }
    CHECK(ref::sum_squares(x.data(), n) == doctest::Approx(s).epsilon(1e-13));
    const std::vector<float> xf(x.begin(), x.end());
    double sf = 0;
    for (float e : xf) sf += (double)e * e;
    CHECK(ref::sum_squares(xf.data(), n) == doctest::Approx(sf).epsilon(1e-13));
  }
}

TEST_CASE("reduce ref: clip_scale clips to max_norm like clip_grad_norm_") {
  // A gradient of norm 10 (3-4-5 triangle scaled): clipping to 1 leaves norm 1 · 10 / (10 + 1e-6).
  std::vector<double> g = {6.0, 8.0};
  const double norm = std::sqrt(ref::sum_squares(g.data(), 2));
  CHECK(norm == doctest::Approx(10.0).epsilon(1e-15));
  const double c = ref::clip_scale(norm, 1.0);
  CHECK(c == doctest::Approx(1.0 / (10.0 + 1e-6)).epsilon(1e-15));
  for (auto& e : g) e *= c;
  CHECK(std::sqrt(ref::sum_squares(g.data(), 2)) == doctest::Approx(10.0 / (10.0 + 1e-6)).epsilon(1e-14));
  // Within the norm: untouched. Disabled (max_norm <= 0): untouched.
  CHECK(ref::clip_scale(0.5, 1.0) == 1.0);
  // Exactly at the norm the 1e-6 shows.
  CHECK(ref::clip_scale(1.0, 1.0) == doctest::Approx(1.0 / (1.0 + 1e-6)).epsilon(1e-15));
  CHECK(ref::clip_scale(50.0, 0.0) == 1.0);
  CHECK(ref::clip_scale(50.0, -1.0) == 1.0);
  // Non-finite norms as torch: an infinite norm zeroes the step, a NaN norm stays NaN.
  CHECK(ref::clip_scale(INFINITY, 1.0) == 0.0);
  CHECK(std::isnan(ref::clip_scale(NAN, 1.0)));
}
