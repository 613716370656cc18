// GPU gradient-norm reductions against the CPU twin. Tolerance for sum_squares: fp32 partial sums in a
// tree (relative rounding ~1e-7 · log n) against double: 1e-5. Results must be bit-identical run to run.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/reduce.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("gpu sum_squares: adds Σx² into *out, deterministic, any size and alignment") {
  gpu::DeviceBuffer<float> scratch(gpu::sum_squares_scratch_floats());
  for (i64 n : {i64{1}, i64{7}, i64{1000}, i64{(1 << 20) + 3}, i64{5'000'001}}) {
    for (int offset : {0, 1}) {
      CAPTURE(n);
      CAPTURE(offset);
      const auto x = randn_f(n + offset, 8000 + n);
      const double want = 2.5 + ref::sum_squares(x.data() + offset, n);
      auto x_d = to_device(x);
      auto out_d = to_device(std::vector<float>{2.5f});
      scratch.poison();
      gpu::sum_squares(out_d.get(), x_d.get() + offset, n, scratch.get(), 0);
      const float got = out_d.download()[0];
      CHECK(std::abs(got - want) / want < 1e-5);
      out_d.upload({2.5f});
      gpu::sum_squares(out_d.get(), x_d.get() + offset, n, scratch.get(), 0);
      CHECK(out_d.download()[0] == got);
    }
  }
}

TEST_CASE("gpu clip_scale: norm and clip factor as the CPU twin") {
  for (float sumsq : {100.f, 0.25f, 1.f, 0.f, 3.5e7f}) {
    for (float max_norm : {1.f, 0.f, -1.f, 5.f}) {
      CAPTURE(sumsq);
      CAPTURE(max_norm);
      auto s_d = to_device(std::vector<float>{sumsq});
      gpu::DeviceBuffer<float> scale_d(1), norm_d(1);
      scale_d.poison();
      norm_d.poison();
      gpu::clip_scale(scale_d.get(), norm_d.get(), s_d.get(), max_norm, 0);
      const double norm = std::sqrt((double)sumsq);
      CHECK(norm_d.download()[0] == doctest::Approx(norm).epsilon(1e-6));
      CHECK(scale_d.download()[0] == doctest::Approx(ref::clip_scale(norm, max_norm)).epsilon(1e-6));
    }
  }
  // A NaN norm stays NaN (as torch), an infinite one zeroes the step; norm may be null.
  auto s_d = to_device(std::vector<float>{NAN, INFINITY});
  gpu::DeviceBuffer<float> scale_d(2);
  gpu::clip_scale(scale_d.get(), nullptr, s_d.get(), 1.f, 0);
  gpu::clip_scale(scale_d.get() + 1, nullptr, s_d.get() + 1, 1.f, 0);
  const auto sc = scale_d.download();
  CHECK(std::isnan(sc[0]));
  CHECK(sc[1] == 0.f);
}
