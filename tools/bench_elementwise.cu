// Elementwise benchmark at ViT-B/16 batch 256 (50432 x 768 bf16 activations; casts over the 86.6M
// parameters of ViT-B): checks each CUDA kernel against the CPU reference on the full tensor first, then
// times it (L2 flushed, median) and prints BENCH lines with µs and GB/s.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/rng.h"
#include "kernels/elementwise.h"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {
// Uniform values of unit standard deviation (cheap to draw for 39M elements), rounded to bf16.
std::vector<float> rand_bf(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = __bfloat162float(__float2bfloat16(3.4641016f * (rng::uniform(seed, 1, i) - 0.5f)));
  return v;
}

bool check(const char* what, double err, double tol) {
  std::printf("check %-28s rel err %.2e (tolerance %.0e)\n", what, err, tol);
  return err < tol;
}

int run() {
  const int B = 256, Tn = 197, C = 768;
  const i64 rows = (i64)B * Tn;
  const size_t n = (size_t)rows * C;
  const float p = 0.1f;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("elementwise benchmark on %s: %lld x %d bf16\n", prop.name, (long long)rows, C);

  const auto a = rand_bf(n, 1), b = rand_bf(n, 2), gamma = rand_bf(C, 3);
  gpu::DeviceBuffer<bf16> d_a(n), d_b(n), d_out(n), d_dx(n), d_gamma(C);
  d_a.upload(to_bf(a));
  d_b.upload(to_bf(b));
  d_gamma.upload(to_bf(gamma));
  gpu::DeviceBuffer<float> d_dgamma(C), scratch(gpu::layer_scale_backward_scratch_floats(rows, C));
  CUDA_CHECK(cudaMemset(d_dgamma.get(), 0, d_dgamma.bytes()));

  // Correctness on the full tensors, against the CPU reference on the same bf16 inputs.
  bool ok = true;
  std::vector<float> out(n), dx(n), dgamma(C, 0.f);
  gpu::add(d_out.get(), d_a.get(), d_b.get(), (i64)n, 0);
  ref::add(out.data(), a.data(), b.data(), (i64)n);
  ok &= check("add", rel_err(to_f(d_out.download()), out), 5e-3);
  gpu::layer_scale_forward(d_out.get(), d_a.get(), d_gamma.get(), rows, C, 0);
  ref::layer_scale_forward(out.data(), a.data(), gamma.data(), rows, C);
  ok &= check("layer_scale_forward", rel_err(to_f(d_out.download()), out), 5e-3);
  gpu::layer_scale_backward(d_dx.get(), d_dgamma.get(), d_b.get(), d_a.get(), d_gamma.get(), rows, C, scratch.get(), 0);
  ref::layer_scale_backward(dx.data(), dgamma.data(), b.data(), a.data(), gamma.data(), rows, C);
  ok &= check("layer_scale_backward dx", rel_err(to_f(d_dx.download()), dx), 5e-3);
  ok &= check("layer_scale_backward dgamma", rel_err(d_dgamma.download(), dgamma), 1e-4);
  gpu::dropout_forward(d_out.get(), d_a.get(), (i64)n, p, 7, 3, 0);
  ref::dropout_forward(out.data(), a.data(), (i64)n, p, 7, 3);
  ok &= check("dropout_forward", rel_err(to_f(d_out.download()), out), 5e-3);
  gpu::drop_path_forward(d_out.get(), d_a.get(), B, (i64)Tn * C, p, 7, 4, 0);
  ref::drop_path_forward(out.data(), a.data(), B, (i64)Tn * C, p, 7, 4);
  ok &= check("drop_path_forward", rel_err(to_f(d_out.download()), out), 5e-3);
  if (!ok) {
    std::printf("FAILED: a CUDA elementwise kernel does not match the CPU reference\n");
    return 1;
  }

  bench::Timer timer;
  const double act = (double)n * sizeof(bf16);
  bench::report("add 50432x768", timer.median_us([&] { gpu::add(d_out.get(), d_a.get(), d_b.get(), (i64)n, 0); }), 0,
                3 * act);
  bench::report("layer_scale_fwd 50432x768",
                timer.median_us([&] { gpu::layer_scale_forward(d_out.get(), d_a.get(), d_gamma.get(), rows, C, 0); }), 0,
                2 * act);
  bench::report("layer_scale_bwd 50432x768", timer.median_us([&] {
                  gpu::layer_scale_backward(d_dx.get(), d_dgamma.get(), d_b.get(), d_a.get(), d_gamma.get(), rows, C,
                                            scratch.get(), 0);
                }),
                0, 3 * act);
  bench::report("dropout_fwd p=0.1 50432x768",
                timer.median_us([&] { gpu::dropout_forward(d_out.get(), d_a.get(), (i64)n, p, 7, 3, 0); }), 0, 2 * act);
  bench::report("drop_path_fwd p=0.1 256x197x768", timer.median_us([&] {
                  gpu::drop_path_forward(d_out.get(), d_a.get(), B, (i64)Tn * C, p, 7, 4, 0);
                }),
                0, (2 - p) * act);  // dropped samples are not read

  // Casts over ViT-B's parameter count (fp32 master weights <-> bf16).
  const i64 np = 86'567'656;
  gpu::DeviceBuffer<float> d_f(np);
  gpu::DeviceBuffer<bf16> d_h(np);
  CUDA_CHECK(cudaMemset(d_f.get(), 0, d_f.bytes()));
  {
    // Correctness on a slice: bit-exact round to nearest even.
    const std::vector<float> src = [&] {
      std::vector<float> v(1 << 16);
      for (size_t i = 0; i < v.size(); ++i) v[i] = 100.f * (rng::uniform(9, 1, i) - 0.5f);
      return v;
    }();
    CUDA_CHECK(cudaMemcpy(d_f.get(), src.data(), src.size() * sizeof(float), cudaMemcpyHostToDevice));
    gpu::cast_f32_to_bf16(d_h.get(), d_f.get(), (i64)src.size(), 0);
    std::vector<bf16> got(src.size());
    CUDA_CHECK(cudaMemcpy(got.data(), d_h.get(), got.size() * sizeof(bf16), cudaMemcpyDeviceToHost));
    const auto want = to_bf(src);
    if (std::memcmp(got.data(), want.data(), got.size() * sizeof(bf16)) != 0) {
      std::printf("FAILED: cast_f32_to_bf16 is not round-to-nearest-even\n");
      return 1;
    }
  }
  bench::report("cast_f32_to_bf16 86.6M",
                timer.median_us([&] { gpu::cast_f32_to_bf16(d_h.get(), d_f.get(), np, 0); }), 0, 6.0 * np);
  bench::report("cast_bf16_to_f32 86.6M",
                timer.median_us([&] { gpu::cast_bf16_to_f32(d_f.get(), d_h.get(), np, 0); }), 0, 6.0 * np);
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
