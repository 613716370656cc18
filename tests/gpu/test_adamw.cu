// GPU AdamW against the CPU twin (float). Tolerance: the same fp32 operations in the same order, except
// that the GPU contracts multiply-adds into FMAs: a few ulps, checked at 1e-6 relative error norm.
// The bf16 copy must be exactly the bf16 rounding of the updated fp32 weight.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/adamw.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("gpu adamw: fp32 update, bf16 copy, grad_scale from device memory, vector and scalar paths") {
  const i64 n = 10007;  // not a multiple of 4 or of the block
  // offset 1 puts every fp32 pointer off the 16-byte grid: the scalar path.
  for (int offset : {0, 1}) {
    for (bool with_copy : {true, false}) {
      CAPTURE(offset);
      CAPTURE(with_copy);
      const auto p0 = randn_f(n, 7001), g = randn_f(n, 7002), m0 = randn_f(n, 7003, 0.01f);
      auto v0 = randn_f(n, 7004, 0.01f);
      for (auto& e : v0) e = e * e;
      const AdamWParams hp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 3};
      const float scale = 0.37f;

      auto p = p0, m = m0, v = v0;
      ref::adamw_step(p.data(), g.data(), m.data(), v.data(), n, hp, scale);

      auto pad = [&](const std::vector<float>& h) {
        std::vector<float> r(offset, 0.f);
        r.insert(r.end(), h.begin(), h.end());
        return to_device(r);
      };
      auto p_d = pad(p0), g_d = pad(g), m_d = pad(m0), v_d = pad(v0);
      gpu::DeviceBuffer<bf16> pb_d(n + offset);
      pb_d.poison();
      auto scale_d = to_device(std::vector<float>{scale});
      gpu::adamw_step(p_d.get() + offset, with_copy ? pb_d.get() + offset : nullptr, g_d.get() + offset,
                      m_d.get() + offset, v_d.get() + offset, n, hp, scale_d.get(), 0);
      auto unpad = [&](const gpu::DeviceBuffer<float>& d) {
        auto h = d.download();
        return std::vector<float>(h.begin() + offset, h.end());
      };
      const auto p_gpu = unpad(p_d);
      CHECK(rel_err(p_gpu, p) < 1e-6);
      CHECK(rel_err(unpad(m_d), m) < 1e-6);
      CHECK(rel_err(unpad(v_d), v) < 1e-6);
      // What moved, too: the update p - p0 (~5e-4) to 1e-3, so the test is not just "p ≈ p0". A one-ulp
      // difference in p (~6e-8 for |p| ~ 1, from FMA contraction) is ~1e-4 of the update.
      std::vector<float> upd_gpu(n), upd_ref(n);
      for (i64 i = 0; i < n; ++i) {
        upd_gpu[i] = p_gpu[i] - p0[i];
        upd_ref[i] = p[i] - p0[i];
      }
      CHECK(rel_err(upd_gpu, upd_ref) < 1e-3);
      const auto pb = pb_d.download();
      int exact = 0;
      for (i64 i = 0; i < n; ++i) {
        const bf16 want = to_bf(p_gpu[i]);
        // With the copy: exactly the rounded weight; without: the poison untouched.
        exact += with_copy ? (to_f(pb[offset + i]) == to_f(want)) : std::isnan(to_f(pb[offset + i]));
      }
      CHECK(exact == n);
    }
  }
}

TEST_CASE("gpu adamw: weight decay per run - one launch equals one launch per run, boundaries off the 4-grid") {
  // Runs alternate decay on / off with lengths that are not multiples of 4, so a 4-element group of the
  // vector path straddles run boundaries; lr·wd is large so a wrong decay flag shows far above the tolerance.
  const std::vector<i64> lengths = {5, 3, 768, 1, 770, 6, 2303, 9};
  DecayRuns runs;
  i64 n = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    n += lengths[r];
    REQUIRE(runs.push(n, r % 2 == 0));
  }
  CHECK(runs.count == (int)lengths.size());
  const auto p0 = randn_f(n, 7101), g = randn_f(n, 7102), m0 = randn_f(n, 7103, 0.01f);
  auto v0 = randn_f(n, 7104, 0.01f);
  for (auto& e : v0) e = e * e;
  const AdamWParams hp{1e-2f, 0.9f, 0.999f, 1e-8f, 5.f, 2};
  auto scale_d = to_device(std::vector<float>{0.5f});
  auto run_gpu = [&](bool one_launch) {
    auto p_d = to_device(p0), g_d = to_device(g), m_d = to_device(m0), v_d = to_device(v0);
    gpu::DeviceBuffer<bf16> pb_d(n);
    pb_d.poison();
    if (one_launch) {
      gpu::adamw_step(p_d.get(), pb_d.get(), g_d.get(), m_d.get(), v_d.get(), runs, hp, scale_d.get(), 0);
    } else {
      i64 b = 0;
      for (int r = 0; r < runs.count; ++r) {
        AdamWParams a = hp;
        if (!runs.decay[r]) a.weight_decay = 0;
        gpu::adamw_step(p_d.get() + b, pb_d.get() + b, g_d.get() + b, m_d.get() + b, v_d.get() + b, runs.end[r] - b,
                        a, scale_d.get(), 0);
        b = runs.end[r];
      }
    }
    return std::make_pair(p_d.download(), pb_d.download());
  };
  const auto [p_one, pb_one] = run_gpu(true);
  const auto [p_per, pb_per] = run_gpu(false);
  CHECK(p_one == p_per);  // same arithmetic per element: identical bits
  int same_copy = 0;
  for (i64 i = 0; i < n; ++i) same_copy += to_f(pb_one[i]) == to_f(pb_per[i]);
  CHECK(same_copy == n);
  // And against the CPU twin run per run.
  auto p = p0, m = m0, v = v0;
  i64 b = 0;
  for (int r = 0; r < runs.count; ++r) {
    AdamWParams a = hp;
    if (!runs.decay[r]) a.weight_decay = 0;
    ref::adamw_step(p.data() + b, g.data() + b, m.data() + b, v.data() + b, runs.end[r] - b, a, 0.5);
    b = runs.end[r];
  }
  CHECK(rel_err(p_one, p) < 1e-6);
}

TEST_CASE("adamw runs: merging, the kMax limit") {
  DecayRuns r;
  CHECK(r.push(4, true));
  CHECK(r.push(9, true));  // same flag: merged
  CHECK(r.count == 1);
  CHECK(r.size() == 9);
  for (int i = 1; i < DecayRuns::kMax; ++i) CHECK(r.push(9 + i, i % 2 == 0));
  CHECK(r.count == DecayRuns::kMax);
  CHECK_FALSE(r.push(100, DecayRuns::kMax % 2 == 0));  // a new run past kMax is refused, nothing appended
  CHECK(r.size() == 9 + DecayRuns::kMax - 1);
}
