#include <doctest/doctest.h>

#include <cmath>

#include "engine/lr_schedule.h"

using namespace vit;

TEST_CASE("lr schedule: warm-up, cosine to the floor, linear, constant") {
  SchedulerConfig s;
  s.name = "cosine";
  s.warmup_steps = 10;
  s.min_lr = 1e-5;
  const double base = 1e-3;
  CHECK(lr_at(s, base, 0, 110) == doctest::Approx(base / 10));
  CHECK(lr_at(s, base, 9, 110) == doctest::Approx(base));
  CHECK(lr_at(s, base, 10, 110) == doctest::Approx(base));
  // halfway through the decay: the midpoint between base and floor
  CHECK(lr_at(s, base, 60, 110) == doctest::Approx((base + 1e-5) / 2));
  CHECK(lr_at(s, base, 110, 110) == doctest::Approx(1e-5));
  CHECK(lr_at(s, base, 500, 110) == doctest::Approx(1e-5));  // past the end stays at the floor
  for (int64_t t = 11; t < 110; ++t) CHECK(lr_at(s, base, t, 110) <= lr_at(s, base, t - 1, 110));
  s.name = "linear";
  CHECK(lr_at(s, base, 60, 110) == doctest::Approx((base + 1e-5) / 2));
  CHECK(lr_at(s, base, 35, 110) == doctest::Approx(1e-5 + (base - 1e-5) * 0.75));
  s.name = "constant";
  CHECK(lr_at(s, base, 100, 110) == doctest::Approx(base));
  s.name = "bogus";
  CHECK_THROWS_WITH_AS(lr_at(s, base, 50, 110), doctest::Contains("scheduler.name"), std::exception);
}
