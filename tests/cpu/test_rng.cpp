#include <doctest/doctest.h>

#include <cmath>

#include "engine/rng.h"

using namespace vit;

TEST_CASE("rng: counter-based values are reproducible and well distributed") {
  CHECK(rng::bits(1, 2, 3) == rng::bits(1, 2, 3));
  CHECK(rng::bits(1, 2, 3) != rng::bits(1, 2, 4));
  CHECK(rng::bits(1, 2, 3) != rng::bits(2, 2, 3));
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = rng::normal(5, 9, i);
    s += x;
    s2 += x * x;
  }
  CHECK(std::abs(s / n) < 0.01);
  CHECK(std::abs(s2 / n - 1.0) < 0.02);
  double u = 0;
  for (int i = 0; i < n; ++i) u += rng::uniform(3, 4, i);
  CHECK(std::abs(u / n - 0.5) < 0.005);
  for (int i = 0; i < 1000; ++i) {
    double t = rng::trunc_normal(1, 1, i, 0.0, 1.0, -0.5, 0.5);
    CHECK(t >= -0.5);
    CHECK(t <= 0.5);
  }
}
