// GPU linear (cuBLASLt through engine/gemm.h) against the CPU twin run in float on the same bf16 values.
// Tolerances: bf16 outputs (out, gelu_out, dx) carry one bf16 rounding (≤ 2^-9 relative per element), so
// their relative error norm is ~2e-3: checked at 1e-2. fp32 gradients (dweight, dbias) sum exact bf16
// products in fp32 in a different order than the CPU: ~1e-6, checked at 1e-4.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/gemm.h"
#include "gpu_test_util.h"
#include "kernels/gelu.h"
#include "kernels/linear.h"

using namespace vit;
using namespace vit::test;

namespace {

struct Shape {
  i64 M;
  int K, N;
};

// a + b and a - b elementwise, for "+=" expectations.
std::vector<float> plus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + b[i];
  return r;
}
std::vector<float> minus_f(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

void check_linear(gpu::GemmContext& ctx, Shape s, bool with_bias, uint64_t seed) {
  CAPTURE(s.M);
  CAPTURE(s.K);
  CAPTURE(s.N);
  CAPTURE(with_bias);
  const float wscale = 1.f / std::sqrt((float)s.K);
  const auto x = bf_round(randn_f(s.M * s.K, seed)), w = bf_round(randn_f((i64)s.N * s.K, seed + 1, wscale));
  const auto b = bf_round(randn_f(s.N, seed + 2)), dout = bf_round(randn_f(s.M * s.N, seed + 3));
  const auto dw0 = randn_f(w.size(), seed + 4), db0 = randn_f(s.N, seed + 5);
  const auto dx0 = bf_round(randn_f(x.size(), seed + 6));

  // CPU twin.
  std::vector<float> out_ref(s.M * s.N), dx_ref(x.size()), dw_ref(w.size(), 0.f), db_ref(s.N, 0.f);
  ref::linear_forward(out_ref.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, s.M, s.K, s.N);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dout.data(), x.data(), w.data(), s.M, s.K, s.N,
                       false);

  auto x_d = to_device(to_bf(x)), w_d = to_device(to_bf(w)), b_d = to_device(to_bf(b));
  auto dout_d = to_device(to_bf(dout));
  gpu::DeviceBuffer<bf16> out_d(s.M * s.N), dx_d(x.size());
  auto dweight_d = to_device(dw0), dbias_d = to_device(db0);

  out_d.poison();
  gpu::linear_forward(ctx, out_d.get(), x_d.get(), w_d.get(), with_bias ? b_d.get() : nullptr, s.M, s.K, s.N, 0);
  CHECK(rel_err(to_f(out_d.download()), out_ref) < 1e-2);

  // A residual added in the epilogue: out = x W^T + b + r, into a separate buffer and in place (out = r).
  {
    const auto r = bf_round(randn_f(s.M * s.N, seed + 7));
    std::vector<float> res_ref(out_ref.size());
    ref::linear_forward(res_ref.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, s.M, s.K, s.N, r.data());
    CHECK(rel_err(minus_f(res_ref, r), out_ref) < 1e-5);  // the twin itself: exactly the linear plus r
    auto r_d = to_device(to_bf(r));
    gpu::DeviceBuffer<bf16> sum_d(s.M * s.N);
    sum_d.poison();
    gpu::linear_forward(ctx, sum_d.get(), x_d.get(), w_d.get(), with_bias ? b_d.get() : nullptr, s.M, s.K, s.N, 0,
                        nullptr, false, r_d.get());
    CHECK(rel_err(to_f(sum_d.download()), res_ref) < 1e-2);
    // In place cuBLASLt may order the sum differently (split-K), so against the twin, not bit for bit.
    gpu::linear_forward(ctx, r_d.get(), x_d.get(), w_d.get(), with_bias ? b_d.get() : nullptr, s.M, s.K, s.N, 0,
                        nullptr, false, r_d.get());
    CHECK(rel_err(to_f(r_d.download()), res_ref) < 1e-2);
  }

  dx_d.poison();
  gpu::linear_backward(ctx, dx_d.get(), dweight_d.get(), with_bias ? dbias_d.get() : nullptr, dout_d.get(), x_d.get(),
                       w_d.get(), s.M, s.K, s.N, false, 0);
  CHECK(rel_err(to_f(dx_d.download()), dx_ref) < 1e-2);
  const auto dw_gpu = dweight_d.download(), db_gpu = dbias_d.download();
  CHECK(rel_err(minus_f(dw_gpu, dw0), dw_ref) < 1e-4);  // what was added ...
  CHECK(rel_err(dw_gpu, plus(dw0, dw_ref)) < 1e-5);     // ... onto what was there
  if (with_bias) {
    CHECK(rel_err(minus_f(db_gpu, db0), db_ref) < 1e-4);
  } else {
    CHECK(db_gpu == db0);  // a null dbias leaves the buffer alone
  }

  // dx_accumulate adds onto what is there (fp32 sum, one rounding); dweight/dbias add a second time.
  auto dxacc_d = to_device(to_bf(dx0));
  gpu::linear_backward(ctx, dxacc_d.get(), dweight_d.get(), with_bias ? dbias_d.get() : nullptr, dout_d.get(),
                       x_d.get(), w_d.get(), s.M, s.K, s.N, true, 0);
  CHECK(rel_err(to_f(dxacc_d.download()), plus(dx0, dx_ref)) < 1e-2);
  const auto dw_gpu2 = dweight_d.download(), db_gpu2 = dbias_d.download();
  CHECK(rel_err(minus_f(dw_gpu2, dw_gpu), dw_ref) < 1e-4);
  // Re-run from the same starting value (dx == nullptr skips dx): identical bits, so the dweight GEMM and
  // the column sums are deterministic.
  dweight_d.upload(dw_gpu);
  dbias_d.upload(db_gpu);
  gpu::linear_backward(ctx, nullptr, dweight_d.get(), with_bias ? dbias_d.get() : nullptr, dout_d.get(), x_d.get(),
                       w_d.get(), s.M, s.K, s.N, false, 0);
  CHECK(dweight_d.download() == dw_gpu2);
  CHECK(dbias_d.download() == db_gpu2);
  CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace

TEST_CASE("gpu linear: forward/backward vs CPU twin at odd M - parameter gradients accumulate") {
  gpu::GemmContext ctx;
  // M odd and not a multiple of any tile; K, N multiples of 8 (the cuBLASLt bf16 requirement). M = 2000
  // makes the bias gradient take the two-stage (partials + finish) path, M = 37 the direct one; N = 520 is
  // not a multiple of the column-sum kernel's 128 columns.
  uint64_t seed = 1000;
  for (Shape s : {Shape{37, 72, 40}, Shape{1, 8, 8}, Shape{2000, 64, 24}, Shape{301, 256, 520}})
    for (bool with_bias : {true, false}) check_linear(ctx, s, with_bias, seed += 10);
}

TEST_CASE("gpu linear: a ViT block's MLP shape (fc1 768 -> 3072, fc2 3072 -> 768) at 2 images") {
  gpu::GemmContext ctx;
  check_linear(ctx, Shape{394, 768, 3072}, true, 2000);
  check_linear(ctx, Shape{394, 3072, 768}, true, 2100);
}

TEST_CASE("gpu linear: GELU output, fused epilogue (tanh) and separate kernel (tanh, erf)") {
  const Shape s{37, 72, 40};
  const auto x = bf_round(randn_f(s.M * s.K, 3001)), w = bf_round(randn_f((i64)s.N * s.K, 3002, 0.3f));
  const auto b = bf_round(randn_f(s.N, 3003));
  auto x_d = to_device(to_bf(x)), w_d = to_device(to_bf(w)), b_d = to_device(to_bf(b));
  gpu::DeviceBuffer<bf16> out_d(s.M * s.N), gelu_d(s.M * s.N);
  for (bool fuse : {true, false})
    for (bool tanh_approx : {true, false})
      for (bool with_bias : {true, false}) {
        CAPTURE(fuse);
        CAPTURE(tanh_approx);
        CAPTURE(with_bias);
        gpu::GemmContext ctx(fuse);
        std::vector<float> pre(s.M * s.N), act(s.M * s.N);
        ref::linear_forward(pre.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, s.M, s.K, s.N);
        ref::gelu_forward(act.data(), pre.data(), (i64)pre.size(), tanh_approx);
        out_d.poison();
        gelu_d.poison();
        gpu::linear_forward(ctx, out_d.get(), x_d.get(), w_d.get(), with_bias ? b_d.get() : nullptr, s.M, s.K, s.N, 0,
                            gelu_d.get(), tanh_approx);
        CHECK(rel_err(to_f(out_d.download()), pre) < 1e-2);  // the pre-activation, kept for backward
        CHECK(rel_err(to_f(gelu_d.download()), act) < 1e-2);
        // Plans: a repeated call reuses its plan.
        const size_t plans = ctx.plan_count();
        gpu::linear_forward(ctx, out_d.get(), x_d.get(), w_d.get(), with_bias ? b_d.get() : nullptr, s.M, s.K, s.N, 0,
                            gelu_d.get(), tanh_approx);
        CHECK(ctx.plan_count() == plans);
        CHECK(plans == 1);
        // The right GELU (erf vs tanh routing, which is ours when the GELU runs as a separate kernel): the two
        // forms agree to ~5e-4 absolute, invisible in the norm above, but differ by 10-40% relative for x in
        // [-4.5, -3]. There, the bf16 pre-activation's rounding moves GELU by at most ~3% (its log-slope is about
        // -12), so compare with the CPU's GELU of the GPU's own bf16 pre-activation elementwise at 6%. Not for
        // the fused epilogue: it applies GELU to the unrounded fp32 value, and cuBLASLt's tanh may be a fast
        // approximation whose ~5e-4 absolute error is large relative to GELU's tiny tail values.
        if (fuse && tanh_approx) continue;
        const auto pre_gpu = to_f(out_d.download()), act_gpu = to_f(gelu_d.download());
        std::vector<float> own(act.size());
        ref::gelu_forward(own.data(), pre_gpu.data(), (i64)own.size(), tanh_approx);
        int tail = 0, tail_ok = 0;
        for (size_t i = 0; i < own.size(); ++i)
          if (pre_gpu[i] >= -4.5f && pre_gpu[i] <= -3.f) {
            ++tail;
            tail_ok += std::abs(act_gpu[i] - own[i]) <= 0.06f * std::abs(own[i]);
          }
        CHECK(tail >= 20);  // the inputs reach the tail (pre-activations have a std of ~2.7)
        CHECK(tail_ok == tail);
      }
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST_CASE("gpu linear: plans are built once per problem and reused") {
  gpu::GemmContext ctx;
  const Shape s{37, 72, 40};
  gpu::DeviceBuffer<bf16> x(s.M * s.K), w((i64)s.N * s.K), b(s.N), out(s.M * s.N), dout(s.M * s.N), dx(s.M * s.K);
  gpu::DeviceBuffer<float> dw((i64)s.N * s.K), db(s.N);
  for (auto* buf : {&x, &w, &b, &dout}) buf->poison(0);
  dw.poison(0);
  db.poison(0);
  CHECK(ctx.plan_count() == 0);
  gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), s.M, s.K, s.N, 0);
  CHECK(ctx.plan_count() == 1);
  gpu::linear_backward(ctx, dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), s.M, s.K, s.N, false, 0);
  CHECK(ctx.plan_count() == 3);  // + dweight GEMM + dx GEMM
  for (int i = 0; i < 5; ++i) {
    gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), s.M, s.K, s.N, 0);
    gpu::linear_backward(ctx, dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), s.M, s.K, s.N, false, 0);
  }
  CHECK(ctx.plan_count() == 3);
  gpu::linear_backward(ctx, dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), s.M, s.K, s.N, true, 0);
  CHECK(ctx.plan_count() == 3);  // beta is an argument, not part of the plan
  gpu::linear_forward(ctx, out.get(), x.get(), w.get(), nullptr, s.M, s.K, s.N, 0);
  CHECK(ctx.plan_count() == 4);  // another epilogue is another plan
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST_CASE("gpu linear: shapes and pointers cuBLASLt cannot take fail with a clear error") {
  gpu::GemmContext ctx;
  gpu::DeviceBuffer<bf16> x(64 * 80), w(80 * 80), out(64 * 80);
  // K or N not a multiple of 8.
  CHECK_THROWS_WITH_AS(gpu::linear_forward(ctx, out.get(), x.get(), w.get(), nullptr, 5, 70, 40, 0),
                       doctest::Contains("multiples of 8"), vit::Error);
  CHECK_THROWS_AS(gpu::linear_forward(ctx, out.get(), x.get(), w.get(), nullptr, 5, 72, 10, 0), vit::Error);
  gpu::DeviceBuffer<float> dw(80 * 80);
  CHECK_THROWS_AS(
      gpu::linear_backward(ctx, nullptr, dw.get(), nullptr, out.get(), x.get(), w.get(), 5, 72, 36, false, 0),
      vit::Error);
  // A pointer off the 16-byte grid.
  CHECK_THROWS_WITH_AS(gpu::linear_forward(ctx, out.get(), x.get() + 1, w.get(), nullptr, 5, 72, 40, 0),
                       doctest::Contains("16-byte aligned"), vit::Error);
  CHECK(ctx.plan_count() == 0);
}

TEST_CASE("gpu linear: autotuned and untuned plans agree, and VIT_GEMM_AUTOTUNE is checked") {
  // Tuning times the candidates with D in a temporary: the accumulating calls above (dweight +=, dx +=,
  // a residual in place) would show a candidate's run landing in the caller's D. Here: both settings on
  // the ViT-B MLP shape at 2 images give the CPU twin's results.
  for (bool tune : {false, true}) {
    CAPTURE(tune);
    gpu::GemmContext ctx;
    ctx.set_autotune(tune);
    check_linear(ctx, Shape{394, 3072, 768}, true, 2300);
    if (!tune) CHECK(ctx.tuned_count() == 0);
  }
  const char* old = std::getenv("VIT_GEMM_AUTOTUNE");
  const std::string saved = old ? old : "";
  setenv("VIT_GEMM_AUTOTUNE", "0", 1);
  CHECK_FALSE(gpu::GemmContext().autotune());
  setenv("VIT_GEMM_AUTOTUNE", "1", 1);
  CHECK(gpu::GemmContext().autotune());
  setenv("VIT_GEMM_AUTOTUNE", "yes", 1);
  CHECK_THROWS_WITH_AS(gpu::GemmContext(), doctest::Contains("VIT_GEMM_AUTOTUNE must be 0"), vit::Error);
  if (old)
    setenv("VIT_GEMM_AUTOTUNE", saved.c_str(), 1);
  else
    unsetenv("VIT_GEMM_AUTOTUNE");
}
