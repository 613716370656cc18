// qk_norm benchmark at ViT-B/16 batch 256 (qkv = (50432, 3, 12, 64) bf16): checks the CUDA kernels against
// the CPU reference on the full tensor first, then times forward, backward and forward + backward (L2
// flushed, median) and prints BENCH lines with µs and GB/s, next to a device-to-device copy of the qkv
// tensor (the floor for forward, which reads and writes it once) and the general path (misaligned).
#include <cstdio>
#include <vector>

#include "engine/rng.h"
#include "kernels/qk_norm.h"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {
// Zero-mean, unit-variance uniform values (cheap to draw for 116M elements), shifted, rounded to bf16.
std::vector<float> rand_bf(size_t n, uint64_t seed, float scale, float shift) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = __bfloat162float(__float2bfloat16(shift + scale * 3.4641016f * (rng::uniform(seed, 1, i) - 0.5f)));
  return v;
}

int run() {
  const i64 BT = 50432;
  const int H = 12, hd = 64;
  const size_t n = (size_t)BT * 3 * H * hd, ns = (size_t)2 * BT * H;
  const float eps = 1e-6f;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("qk_norm benchmark on %s: qkv (%lld, 3, %d, %d) bf16\n", prop.name, (long long)BT, H, hd);

  const auto x = rand_bf(n, 1, 1.5f, 0.2f), g = rand_bf(n, 2, 1.f, 0.f);
  const auto qw = rand_bf(hd, 3, 0.2f, 1.f), qb = rand_bf(hd, 4, 0.1f, 0.f);
  const auto kw = rand_bf(hd, 5, 0.2f, 1.f), kb = rand_bf(hd, 6, 0.1f, 0.f);
  gpu::DeviceBuffer<bf16> d_x(n), d_g(n), d_out(n), d_dx(n), d_qw(hd), d_qb(hd), d_kw(hd), d_kb(hd);
  d_x.upload(to_bf(x));
  d_g.upload(to_bf(g));
  d_qw.upload(to_bf(qw));
  d_qb.upload(to_bf(qb));
  d_kw.upload(to_bf(kw));
  d_kb.upload(to_bf(kb));
  gpu::DeviceBuffer<float> d_mean(ns), d_rstd(ns), d_dqw(hd), d_dqb(hd), d_dkw(hd), d_dkb(hd);
  gpu::DeviceBuffer<float> scratch(gpu::qk_norm_backward_scratch_floats(BT, H, hd));
  for (auto* b : {&d_dqw, &d_dqb, &d_dkw, &d_dkb}) CUDA_CHECK(cudaMemset(b->get(), 0, b->bytes()));

  auto fwd = [&] {
    gpu::qk_norm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_qw.get(), d_qb.get(), d_kw.get(),
                         d_kb.get(), BT, H, hd, eps, 0);
  };
  auto bwd = [&] {
    gpu::qk_norm_backward(d_dx.get(), d_dqw.get(), d_dqb.get(), d_dkw.get(), d_dkb.get(), d_g.get(), d_x.get(),
                          d_qw.get(), d_kw.get(), d_mean.get(), d_rstd.get(), BT, H, hd, scratch.get(), 0);
  };

  // Correctness first: the whole tensor against the CPU reference (float, same bf16 inputs).
  d_out.poison();
  d_dx.poison();
  fwd();
  bwd();
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out(n), mean(ns), rstd(ns), dx(n), dqw(hd, 0.f), dqb(hd, 0.f), dkw(hd, 0.f), dkb(hd, 0.f);
  ref::qk_norm_forward(out.data(), mean.data(), rstd.data(), x.data(), qw.data(), qb.data(), kw.data(), kb.data(), BT,
                       H, hd, eps);
  ref::qk_norm_backward(dx.data(), dqw.data(), dqb.data(), dkw.data(), dkb.data(), g.data(), x.data(), qw.data(),
                        kw.data(), mean.data(), rstd.data(), BT, H, hd);
  const double e_out = rel_err(to_f(d_out.download()), out), e_dx = rel_err(to_f(d_dx.download()), dx);
  const double e_rstd = rel_err(d_rstd.download(), rstd);
  const double e_qw = rel_err(d_dqw.download(), dqw), e_qb = rel_err(d_dqb.download(), dqb);
  const double e_kw = rel_err(d_dkw.download(), dkw), e_kb = rel_err(d_dkb.download(), dkb);
  std::printf("check: out %.2e  rstd %.2e  dqkv %.2e  dqw %.2e  dqb %.2e  dkw %.2e  dkb %.2e\n", e_out, e_rstd, e_dx,
              e_qw, e_qb, e_kw, e_kb);
  // Same tolerances as tests/gpu/test_qk_norm.cu (one bf16 rounding on activations; fp32 sums of 605k rows).
  if (!(e_out < 5e-3 && e_dx < 5e-3 && e_rstd < 1e-5 && e_qw < 1e-4 && e_qb < 1e-4 && e_kw < 1e-4 && e_kb < 1e-4)) {
    std::printf("FAILED: the CUDA qk_norm does not match the CPU reference\n");
    return 1;
  }

  bench::Timer timer;
  const double act = (double)n * sizeof(bf16), stats = (double)ns * 2 * sizeof(float);
  const double fwd_bytes = 2 * act + stats;                 // read qkv, write out, write mean/rstd
  const double bwd_bytes = act + 2.0 / 3 * act + act + stats;  // read dout and q/k of qkv, write dqkv, read stats
  const double us_copy = timer.median_us(
      [&] { CUDA_CHECK(cudaMemcpyAsync(d_out.get(), d_x.get(), d_x.bytes(), cudaMemcpyDeviceToDevice, 0)); });
  const double us_f = timer.median_us(fwd);
  const double us_b = timer.median_us(bwd);
  const double us_fb = timer.median_us([&] {
    fwd();
    bwd();
  });
  bench::report("qkv copy (floor) 50432x2304", us_copy, 0, 2 * act);
  bench::report("qk_norm_fwd 50432x3x12x64", us_f, 0, fwd_bytes);
  bench::report("qk_norm_bwd 50432x3x12x64", us_b, 0, bwd_bytes);
  bench::report("qk_norm_fwd+bwd 50432x3x12x64", us_fb, 0, fwd_bytes + bwd_bytes);

  // General path for reference: the first BT − 1 tokens seen through pointers one element off alignment.
  const i64 BT_g = BT - 1;
  const double act_g = (double)BT_g * 3 * H * hd * sizeof(bf16), stats_g = (double)BT_g * H * 4 * sizeof(float);
  const double us_gf = timer.median_us([&] {
    gpu::qk_norm_forward(d_out.get() + 1, d_mean.get(), d_rstd.get(), d_x.get() + 1, d_qw.get(), d_qb.get(),
                         d_kw.get(), d_kb.get(), BT_g, H, hd, eps, 0);
  });
  const double us_gb = timer.median_us([&] {
    gpu::qk_norm_backward(d_dx.get() + 1, d_dqw.get(), d_dqb.get(), d_dkw.get(), d_dkb.get(), d_g.get() + 1,
                          d_x.get() + 1, d_qw.get(), d_kw.get(), d_mean.get(), d_rstd.get(), BT_g, H, hd,
                          scratch.get(), 0);
  });
  bench::report("qk_norm_fwd general path", us_gf, 0, 2 * act_g + stats_g);
  bench::report("qk_norm_bwd general path", us_gb, 0, (2 + 2.0 / 3) * act_g + stats_g);
  return 0;
}
}  // namespace

int main() {
  try {
    return run();
  } catch (const vit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
