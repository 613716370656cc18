// Softmax cross-entropy of the classifier head at batch 256: K = 1000 (ImageNet-1k) and K = 100000 (the
// recipe's head). Checks against the CPU twin first, then times loss + dlogits (training), loss only
// (evaluation) and the top-1/top-5 counts. Traffic: training reads the logits twice and writes dlogits
// (3 · B · K · 2 bytes), evaluation and top-k read them once.
// Usage: bench_softmax_xent [B]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/rng.h"
#include "kernels/softmax_xent.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::gpu::DeviceBuffer;

namespace {

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

bool run(int B, int K, bench::Timer& timer) {
  const float smoothing = 0.1f, dscale = 1.f / B;
  // Logits ~ N(0, 3²) rounded to bf16 (the CPU twin sees the same values), labels spread over the classes.
  std::vector<bf16> zh((size_t)B * K);
  std::vector<float> zf(zh.size());
  for (size_t i = 0; i < zh.size(); ++i) {
    zh[i] = __float2bfloat16(3.f * (float)rng::normal(21, 0, i));
    zf[i] = __bfloat162float(zh[i]);
  }
  std::vector<int> y(B);
  for (int i = 0; i < B; ++i) y[i] = (int)(rng::bits(22, 0, i) % (uint64_t)K);
  DeviceBuffer<bf16> z(zh.size()), dl(zh.size());
  DeviceBuffer<float> loss(B);
  DeviceBuffer<int> labels(B), counts(2);
  z.upload(zh);
  labels.upload(y);

  // Correctness.
  std::vector<float> loss_ref(B), dl_ref(zf.size());
  ref::softmax_xent(loss_ref.data(), dl_ref.data(), zf.data(), y.data(), B, K, smoothing, dscale);
  const int top1 = ref::topk_correct(zf.data(), y.data(), B, K, 1),
            top5 = ref::topk_correct(zf.data(), y.data(), B, K, 5);
  loss.poison();
  dl.poison();
  CUDA_CHECK(cudaMemset(counts.get(), 0, counts.bytes()));
  gpu::softmax_xent(loss.get(), dl.get(), z.get(), labels.get(), B, K, smoothing, dscale, 0);
  gpu::topk_correct(counts.get(), z.get(), labels.get(), B, K, 0);
  const auto dlh = dl.download();
  std::vector<float> dlf(dlh.size());
  for (size_t i = 0; i < dlh.size(); ++i) dlf[i] = __bfloat162float(dlh[i]);
  const auto c = counts.download();
  const double e_loss = rel_err(loss.download(), loss_ref), e_dl = rel_err(dlf, dl_ref);
  const bool ok = e_loss < 1e-5 && e_dl < 1e-2 && c[0] == top1 && c[1] == top5;
  std::printf("CHECK B=%d K=%d  rel err loss %.2e dlogits %.2e  top1 %d/%d top5 %d/%d  %s\n", B, K, e_loss, e_dl, c[0],
              top1, c[1], top5, ok ? "ok" : "FAILED");
  if (!ok) return false;

  const double bytes = 2.0 * B * K;
  char name[64];
  std::snprintf(name, sizeof name, "softmax_xent fwd+bwd B=%d K=%d", B, K);
  bench::report(name, timer.median_us([&] {
    gpu::softmax_xent(loss.get(), dl.get(), z.get(), labels.get(), B, K, smoothing, dscale, 0);
  }),
                0, 3 * bytes);
  std::snprintf(name, sizeof name, "softmax_xent loss only B=%d K=%d", B, K);
  bench::report(name, timer.median_us([&] {
    gpu::softmax_xent(loss.get(), nullptr, z.get(), labels.get(), B, K, smoothing, dscale, 0);
  }),
                0, bytes);
  std::snprintf(name, sizeof name, "topk_correct B=%d K=%d", B, K);
  bench::report(name, timer.median_us([&] { gpu::topk_correct(counts.get(), z.get(), labels.get(), B, K, 0); }), 0,
                bytes);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const int B = argc > 1 ? std::atoi(argv[1]) : 256;
    bench::Timer timer;
    bool ok = true;
    for (int K : {1000, 100000}) ok &= run(B, K, timer);
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
