// Layer norm benchmark at ViT-B/16 batch 256 (50432 x 768, bf16): checks the CUDA kernels against the CPU
// reference on the full tensor first, then times forward, backward and forward + backward (L2 flushed,
// median) and prints BENCH lines with µs and GB/s. Target: forward + backward under 200 µs on an H100
// (PyTorch: 424 µs). Also times dx accumulation and the general path (misaligned pointers) for reference.
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/rng.h"
#include "kernels/layernorm.h"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {
// Zero-mean, unit-variance uniform values (cheap to draw for 39M elements), rounded to bf16.
std::vector<float> rand_bf(size_t n, uint64_t seed, float scale, float shift) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = __bfloat162float(__float2bfloat16(shift + scale * 3.4641016f * (rng::uniform(seed, 1, i) - 0.5f)));
  return v;
}

int run() {
  const i64 rows = 50432;
  const int C = 768;
  const size_t n = (size_t)rows * C;
  const float eps = 1e-6f;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("layernorm benchmark on %s: rows=%lld C=%d bf16\n", prop.name, (long long)rows, C);

  const auto x = rand_bf(n, 1, 1.5f, 0.2f), g = rand_bf(n, 2, 1.f, 0.f);
  const auto w = rand_bf(C, 3, 0.2f, 1.f), b = rand_bf(C, 4, 0.1f, 0.f);
  gpu::DeviceBuffer<bf16> d_x(n), d_g(n), d_out(n), d_dx(n), d_w(C), d_b(C);
  d_x.upload(to_bf(x));
  d_g.upload(to_bf(g));
  d_w.upload(to_bf(w));
  d_b.upload(to_bf(b));
  gpu::DeviceBuffer<float> d_mean(rows), d_rstd(rows), d_dw(C), d_db(C);
  gpu::DeviceBuffer<float> scratch(gpu::layernorm_backward_scratch_floats(rows, C));
  CUDA_CHECK(cudaMemset(d_dw.get(), 0, d_dw.bytes()));
  CUDA_CHECK(cudaMemset(d_db.get(), 0, d_db.bytes()));

  auto fwd = [&] {
    gpu::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(), rows, C, eps, 0);
  };
  auto bwd = [&](bool acc) {
    gpu::layernorm_backward(d_dx.get(), d_dw.get(), d_db.get(), d_g.get(), d_x.get(), d_w.get(), d_mean.get(),
                            d_rstd.get(), rows, C, acc, scratch.get(), 0);
  };

  // Correctness first: the whole tensor against the CPU reference (float, same bf16 inputs).
  fwd();
  bwd(false);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out(n), mean(rows), rstd(rows), dx(n), dw(C, 0.f), db(C, 0.f);
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C, eps);
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), mean.data(), rstd.data(), rows,
                          C, false);
  const double e_out = rel_err(to_f(d_out.download()), out), e_dx = rel_err(to_f(d_dx.download()), dx);
  const double e_dw = rel_err(d_dw.download(), dw), e_db = rel_err(d_db.download(), db);
  const double e_rstd = rel_err(d_rstd.download(), rstd);
  std::printf("check: out %.2e  rstd %.2e  dx %.2e  dweight %.2e  dbias %.2e\n", e_out, e_rstd, e_dx, e_dw, e_db);
  if (!(e_out < 5e-3 && e_dx < 5e-3 && e_rstd < 1e-5 && e_dw < 1e-4 && e_db < 1e-4)) {
    std::printf("FAILED: the CUDA layer norm does not match the CPU reference\n");
    return 1;
  }

  bench::Timer timer;
  const double act = (double)n * sizeof(bf16), stats = (double)rows * 2 * sizeof(float);
  const double fwd_bytes = 2 * act + stats;      // read x, write out, write mean/rstd
  const double bwd_bytes = 3 * act + stats;      // read x and dout, write dx, read mean/rstd
  const double us_f = timer.median_us(fwd);
  const double us_b = timer.median_us([&] { bwd(false); });
  const double us_fb = timer.median_us([&] {
    fwd();
    bwd(false);
  });
  const double us_ba = timer.median_us([&] { bwd(true); });
  bench::report("layernorm_fwd 50432x768", us_f, 0, fwd_bytes);
  bench::report("layernorm_bwd 50432x768", us_b, 0, bwd_bytes);
  bench::report("layernorm_fwd+bwd 50432x768", us_fb, 0, fwd_bytes + bwd_bytes);
  bench::report("layernorm_bwd dx+= 50432x768", us_ba, 0, bwd_bytes + act);

  // General path for reference: the same rows seen through pointers one element off 16-byte alignment.
  const i64 rows_g = rows - 1;
  const double act_g = (double)rows_g * C * sizeof(bf16);
  const double us_gf = timer.median_us([&] {
    gpu::layernorm_forward(d_out.get() + 1, d_mean.get(), d_rstd.get(), d_x.get() + 1, d_w.get(), d_b.get(), rows_g, C,
                           eps, 0);
  });
  const double us_gb = timer.median_us([&] {
    gpu::layernorm_backward(d_dx.get() + 1, d_dw.get(), d_db.get(), d_g.get() + 1, d_x.get() + 1, d_w.get(),
                            d_mean.get(), d_rstd.get(), rows_g, C, false, scratch.get(), 0);
  });
  bench::report("layernorm_fwd general path", us_gf, 0, 2 * act_g + stats);
  bench::report("layernorm_bwd general path", us_gb, 0, 3 * act_g + stats);
  std::printf("layernorm fwd+bwd %.1f us: %s the 200 us target (PyTorch 424 us)\n", us_fb,
              us_fb < 200 ? "meets" : "MISSES");
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
