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
