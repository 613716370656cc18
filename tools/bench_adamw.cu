// The optimizer step over all ViT-B/16 parameters (86.6 M, one flat fp32 buffer): gradient norm
// (sum_squares + clip_scale) and AdamW with the bf16 copy. Checks against the CPU twins on a 1 M slice
// first. Traffic per parameter: AdamW reads param, grad, m, v and writes param, m, v (28 bytes) plus the
// bf16 copy (2 bytes); sum_squares reads the gradient (4 bytes).
// Usage: bench_adamw [n]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/rng.h"
#include "kernels/adamw.h"
#include "kernels/reduce.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::gpu::DeviceBuffer;

namespace {

__global__ void fill_f32(float* p, i64 n, uint64_t seed, float lo, float hi) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    p[i] = lo + (hi - lo) * rng::uniform(seed, 0, i);
}
void fill(DeviceBuffer<float>& b, uint64_t seed, float lo, float hi) {
  fill_f32<<<1024, 256>>>(b.get(), (i64)b.size(), seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

const AdamWParams kHp{1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 10};

bool check(i64 n) {
  DeviceBuffer<float> p(n), g(n), m(n), v(n), sumsq(1), scale(1), scratch(gpu::sum_squares_scratch_floats());
  DeviceBuffer<bf16> pb(n);
  fill(p, 1, -1, 1);
  fill(g, 2, -1, 1);
  fill(m, 3, -0.1f, 0.1f);
  fill(v, 4, 0, 0.01f);
  auto ph = p.download(), gh = g.download(), mh = m.download(), vh = v.download();
  CUDA_CHECK(cudaMemset(sumsq.get(), 0, 4));
  gpu::sum_squares(sumsq.get(), g.get(), n, scratch.get(), 0);
  gpu::clip_scale(scale.get(), nullptr, sumsq.get(), 1.f, 0);
  gpu::adamw_step(p.get(), pb.get(), g.get(), m.get(), v.get(), n, kHp, scale.get(), 0);
  const double ss = ref::sum_squares(gh.data(), n), c = ref::clip_scale(std::sqrt(ss), 1.0);
  ref::adamw_step(ph.data(), gh.data(), mh.data(), vh.data(), n, kHp, c);
  const double e_ss = std::abs(sumsq.download()[0] - ss) / ss, e_scale = std::abs(scale.download()[0] - c) / c;
  const double e_p = rel_err(p.download(), ph), e_m = rel_err(m.download(), mh), e_v = rel_err(v.download(), vh);
  const bool ok = e_ss < 1e-5 && e_scale < 1e-5 && e_p < 1e-5 && e_m < 1e-5 && e_v < 1e-5;
  std::printf("CHECK n=%lld  rel err sumsq %.2e scale %.2e param %.2e m %.2e v %.2e  %s\n", (long long)n, e_ss, e_scale,
              e_p, e_m, e_v, ok ? "ok" : "FAILED");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const i64 n = argc > 1 ? std::atoll(argv[1]) : 86'567'656;  // vit_base_patch16_224 parameters
    if (!check(1'000'003)) return 1;
    DeviceBuffer<float> p(n), g(n), m(n), v(n), sumsq(1), scale(1), scratch(gpu::sum_squares_scratch_floats());
    DeviceBuffer<bf16> pb(n);
    fill(p, 11, -1, 1);
    fill(g, 12, -1e-3f, 1e-3f);
    fill(m, 13, -1e-4f, 1e-4f);
    fill(v, 14, 0, 1e-6f);
    CUDA_CHECK(cudaMemset(sumsq.get(), 0, 4));
    bench::Timer timer;
    char name[64];
    std::snprintf(name, sizeof name, "sum_squares n=%lld", (long long)n);
    bench::report(name, timer.median_us([&] { gpu::sum_squares(sumsq.get(), g.get(), n, scratch.get(), 0); }), 0,
                  4.0 * n);
    bench::report("clip_scale", timer.median_us([&] { gpu::clip_scale(scale.get(), nullptr, sumsq.get(), 1.f, 0); }), 0,
                  0);
    std::snprintf(name, sizeof name, "adamw + bf16 copy n=%lld", (long long)n);
    bench::report(name, timer.median_us([&] {
      gpu::adamw_step(p.get(), pb.get(), g.get(), m.get(), v.get(), n, kHp, scale.get(), 0);
    }),
                  0, 30.0 * n);
    std::snprintf(name, sizeof name, "adamw (no copy) n=%lld", (long long)n);
    bench::report(name, timer.median_us([&] {
      gpu::adamw_step(p.get(), nullptr, g.get(), m.get(), v.get(), n, kHp, scale.get(), 0);
    }),
                  0, 28.0 * n);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
