// GELU benchmark at the ViT-B/16 MLP hidden size, batch 256 (50432 x 3072 bf16): checks the CUDA kernels
// against the CPU reference on a 1M-element slice first, then times forward and backward for the erf and
// tanh forms (L2 flushed, median) and prints BENCH lines with µs and GB/s.
#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/rng.h"
#include "kernels/gelu.h"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {
// Uniform values of standard deviation `scale` (cheap to draw), rounded to bf16.
std::vector<float> rand_bf(size_t n, uint64_t seed, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = __bfloat162float(__float2bfloat16(scale * 3.4641016f * (rng::uniform(seed, 1, i) - 0.5f)));
  return v;
}

int run() {
  const i64 n = (i64)50432 * 3072;
  const i64 chunk = 1 << 20;  // checked slice; the full buffer repeats it
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("gelu benchmark on %s: n=%lld (50432 x 3072) bf16\n", prop.name, (long long)n);

  const auto x = rand_bf(chunk, 1, 2.f), g = rand_bf(chunk, 2, 1.f);
  gpu::DeviceBuffer<bf16> d_x(n), d_g(n), d_out(n), d_dx(n);
  const auto xb = to_bf(x), gb = to_bf(g);
  for (i64 off = 0; off < n; off += chunk) {
    const size_t len = (size_t)std::min(chunk, n - off);
    CUDA_CHECK(cudaMemcpy(d_x.get() + off, xb.data(), len * sizeof(bf16), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_g.get() + off, gb.data(), len * sizeof(bf16), cudaMemcpyHostToDevice));
  }

  bool ok = true;
  for (bool tanh_approx : {false, true}) {
    gpu::gelu_forward(d_out.get(), d_x.get(), chunk, tanh_approx, 0);
    gpu::gelu_backward(d_dx.get(), d_g.get(), d_x.get(), chunk, tanh_approx, 0);
    std::vector<bf16> ho(chunk), hd(chunk);
    CUDA_CHECK(cudaMemcpy(ho.data(), d_out.get(), chunk * sizeof(bf16), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(hd.data(), d_dx.get(), chunk * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> out(chunk), dx(chunk);
    ref::gelu_forward(out.data(), x.data(), chunk, tanh_approx);
    ref::gelu_backward(dx.data(), g.data(), x.data(), chunk, tanh_approx);
    const double eo = rel_err(to_f(ho), out), ed = rel_err(to_f(hd), dx);
    std::printf("check (%s): fwd %.2e  bwd %.2e\n", tanh_approx ? "tanh" : "erf", eo, ed);
    ok &= eo < 5e-3 && ed < 5e-3;
  }
  if (!ok) {
    std::printf("FAILED: the CUDA GELU does not match the CPU reference\n");
    return 1;
  }

  bench::Timer timer;
  const double act = (double)n * sizeof(bf16);
  for (bool tanh_approx : {false, true}) {
    const double us_f = timer.median_us([&] { gpu::gelu_forward(d_out.get(), d_x.get(), n, tanh_approx, 0); }, 20);
    const double us_b =
        timer.median_us([&] { gpu::gelu_backward(d_dx.get(), d_g.get(), d_x.get(), n, tanh_approx, 0); }, 20);
    bench::report(tanh_approx ? "gelu_fwd tanh 50432x3072" : "gelu_fwd erf 50432x3072", us_f, 0, 2 * act);
    bench::report(tanh_approx ? "gelu_bwd tanh 50432x3072" : "gelu_bwd erf 50432x3072", us_b, 0, 3 * act);
  }
  // The backward fused with fc1's bias gradient (what the model runs) vs the plain backward: the difference
  // is what the column sums cost inside the pass (a separate pass over dx costs ~85-110 us, run 35).
  {
    const i64 rows = 50432, cols = 3072;
    gpu::DeviceBuffer<float> db(cols), scratch(gpu::gelu_backward_bias_scratch_floats(rows, cols));
    db.poison(0);
    const double us = timer.median_us(
        [&] { gpu::gelu_backward_bias(d_dx.get(), db.get(), d_g.get(), d_x.get(), rows, cols, false, scratch.get(), 0); },
        20);
    bench::report("gelu_bwd erf + bias gradient 50432x3072", us, 0, 3 * act);
  }
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
