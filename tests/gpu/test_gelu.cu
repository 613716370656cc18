// GELU CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs), erf and tanh forms,
// vector and scalar paths (lengths not multiples of 8, misaligned pointers).
//
// Tolerance: outputs are bf16, one rounding of an fp32 value (≤ 2^-9 relative per element, ≈1.1e-3 RMS);
// the device erff/tanhf/__expf differ from the host's by a few fp32 ulps, far below that. 5e-3 in norm.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/gelu.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("gelu gpu: forward and backward match the CPU reference") {
  uint64_t seed = 9100;
  for (bool tanh_approx : {false, true})
    for (i64 n : {1, 7, 8, 1001, 65539})
      for (int off : {0, 1}) {
        const auto x = bf_round(randn_f(n, seed++, 3.f)), g = bf_round(randn_f(n, seed++));
        std::vector<float> out(n), dx(n);
        ref::gelu_forward(out.data(), x.data(), n, tanh_approx);
        ref::gelu_backward(dx.data(), g.data(), x.data(), n, tanh_approx);
        // Allocate n + 1 and start at `off`: off = 1 misaligns every pointer (scalar path).
        std::vector<bf16> xh(n + 1), gh(n + 1);
        for (i64 i = 0; i < n; ++i) xh[i + off] = to_bf(x[i]), gh[i + off] = to_bf(g[i]);
        auto d_x = to_device(xh), d_g = to_device(gh);
        gpu::DeviceBuffer<bf16> d_out(n + 1), d_dx(n + 1);
        d_out.poison();
        d_dx.poison();
        gpu::gelu_forward(d_out.get() + off, d_x.get() + off, n, tanh_approx, 0);
        gpu::gelu_backward(d_dx.get() + off, d_g.get() + off, d_x.get() + off, n, tanh_approx, 0);
        const auto ho = to_f(d_out.download()), hd = to_f(d_dx.download());
        const std::vector<float> go(ho.begin() + off, ho.begin() + off + n), gd(hd.begin() + off, hd.begin() + off + n);
        const double eo = rel_err(go, out), ed = rel_err(gd, dx);
        INFO("tanh=", tanh_approx, " n=", n, " offset=", off, " fwd ", eo, " bwd ", ed);
        CHECK(eo < 5e-3);
        CHECK(ed < 5e-3);
        // The one element outside [off, off + n) must still hold the poison (no out-of-bounds write).
        const size_t outside = off == 0 ? (size_t)n : 0;
        CHECK(std::isnan(ho[outside]));
        CHECK(std::isnan(hd[outside]));
      }
}

// The fused GELU backward + bias gradient: dx as gelu_backward writes it (bit for bit), and the column sums
// of that dx added onto an existing gradient. Shapes: one chunk and many (rows up to 9000), columns not a
// multiple of the block's 256 nor of 8 (scalar path), a misaligned start (scalar path). The bias gradient sums
// the stored bf16 dx in fp32: checked against the CPU sum of the GPU's own dx at 1e-5, and against the
// float reference (unrounded dx) at the bf16 tolerance.
TEST_CASE("gelu gpu: backward with the bias gradient = gelu_backward + column sums, accumulating") {
  uint64_t seed = 9300;
  struct S {
    i64 rows;
    int cols, off;
  };
  for (bool tanh_approx : {false, true})
    for (S s : {S{1, 8, 0}, S{37, 264, 0}, S{9000, 3072, 0}, S{300, 13, 0}, S{129, 520, 1}}) {
      CAPTURE(tanh_approx);
      CAPTURE(s.rows);
      CAPTURE(s.cols);
      CAPTURE(s.off);
      const i64 n = s.rows * s.cols;
      const auto x = bf_round(randn_f(n, seed++, 3.f)), g = bf_round(randn_f(n, seed++));
      const auto db0 = randn_f(s.cols, seed++);
      std::vector<float> dx_ref(n), db_ref = db0;
      ref::gelu_backward_bias(dx_ref.data(), db_ref.data(), g.data(), x.data(), s.rows, s.cols, tanh_approx);
      std::vector<bf16> xh(n + 1), gh(n + 1);
      for (i64 i = 0; i < n; ++i) xh[i + s.off] = to_bf(x[i]), gh[i + s.off] = to_bf(g[i]);
      auto d_x = to_device(xh), d_g = to_device(gh);
      auto d_db = to_device(db0);
      gpu::DeviceBuffer<bf16> d_dx(n + 1), d_plain(n + 1);
      gpu::DeviceBuffer<float> scratch(std::max<i64>(1, gpu::gelu_backward_bias_scratch_floats(s.rows, s.cols)));
      d_dx.poison();
      d_plain.poison();
      scratch.poison();
      gpu::gelu_backward_bias(d_dx.get() + s.off, d_db.get(), d_g.get() + s.off, d_x.get() + s.off, s.rows, s.cols,
                              tanh_approx, scratch.get(), 0);
      gpu::gelu_backward(d_plain.get() + s.off, d_g.get() + s.off, d_x.get() + s.off, n, tanh_approx, 0);
      const auto hdx = d_dx.download(), hplain = d_plain.download();
      int same = 0;
      for (i64 i = 0; i < n; ++i) same += to_f(hdx[i + s.off]) == to_f(hplain[i + s.off]);
      CHECK(same == n);  // the same dx as the plain kernel
      const size_t outside = s.off == 0 ? (size_t)n : 0;
      CHECK(std::isnan(to_f(hdx[outside])));
      std::vector<float> gdx(n), db_own = db0;
      for (i64 i = 0; i < n; ++i) gdx[i] = to_f(hdx[i + s.off]);
      for (i64 r = 0; r < s.rows; ++r)
        for (int c = 0; c < s.cols; ++c) db_own[c] += gdx[r * s.cols + c];
      const auto db = d_db.download();
      std::vector<float> added(s.cols), added_own(s.cols), added_ref(s.cols);
      for (int c = 0; c < s.cols; ++c)
        added[c] = db[c] - db0[c], added_own[c] = db_own[c] - db0[c], added_ref[c] = db_ref[c] - db0[c];
      CHECK(rel_err(added, added_own) < 1e-5);
      CHECK(rel_err(added, added_ref) < 5e-3);
      CHECK(rel_err(gdx, dx_ref) < 5e-3);
      // Deterministic: the same call again from the same start gives the same bits.
      d_db.upload(db0);
      gpu::gelu_backward_bias(d_dx.get() + s.off, d_db.get(), d_g.get() + s.off, d_x.get() + s.off, s.rows, s.cols,
                              tanh_approx, scratch.get(), 0);
      CHECK(d_db.download() == db);
    }
}
