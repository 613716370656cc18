// Benchmark of the wgmma attention forward (kernels/attention_fwd_wg.cu) next to the m32 forward it is meant to
// replace, in the same process: each wg configuration is first checked against the CPU reference on small
// shapes, then the forward is timed (L2 flushed, median of 50) at the ViT-B/16 shape (B=256, H=12, T=197,
// d=64; m32 cfg5 192.7 us and PyTorch SDPA 172 us on the H100, docs/benchmarks.md run 17) and at ViT-B/16-384
// (B=32, T=577), printing BENCH lines with us and TFLOP/s (4·B·H·T²·d).
//   bench_attention_wg           every wg configuration and m32 in its default configuration for the shape
//   bench_attention_wg --cfg N   wg configuration N only (and m32)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_fwd_m32.h"
#include "kernels/attention_fwd_wg.h"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::test::bf_round;
using vit::test::randn_f;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {

// Forward of wg configuration cfg against the CPU reference (out 1e-2, lse 1e-4 relative, as the GPU tests).
bool check(int cfg, int B, int T, int H) {
  const int d = 64;
  const size_t n_qkv = (size_t)B * T * 3 * H * d, n_out = (size_t)B * T * H * d, n_stat = (size_t)B * H * T;
  const float scale = 0.125f;
  const auto qkv = bf_round(randn_f(n_qkv, 21 + T));
  std::vector<float> out(n_out), lse(n_stat);
  ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, d, (double)scale);
  auto d_qkv = test::to_device(to_bf(qkv));
  gpu::DeviceBuffer<bf16> d_out(n_out);
  gpu::DeviceBuffer<float> d_lse(n_stat);
  d_out.poison();
  d_lse.poison();
  gpu::attn::wg_forward_cfg(cfg, d_out.get(), d_lse.get(), d_qkv.get(), B, T, H, d, scale, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double e_out = rel_err(to_f(d_out.download()), out), e_lse = rel_err(d_lse.download(), lse);
  const bool ok = e_out < 1e-2 && e_lse < 1e-4;
  std::printf("check wg %-18s B=%d T=%-4d H=%d d=64  out %.2e  lse %.2e  %s\n", gpu::attn::wg_config_name(cfg).c_str(),
              B, T, H, e_out, e_lse, ok ? "ok" : "FAILED");
  return ok;
}

struct Shape {
  const char* name;
  int B, T, H;
};

int run(int argc, char** argv) {
  std::vector<int> cfgs;
  for (int c = 0; c < gpu::attn::kWgConfigCount; ++c) cfgs.push_back(c);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--cfg") == 0 && i + 1 < argc) {
      const int k = std::atoi(argv[++i]);
      VIT_REQUIRE(k >= 0 && k < gpu::attn::kWgConfigCount, "--cfg takes 0..", gpu::attn::kWgConfigCount - 1,
                  " (attention_fwd_wg.h), not ", k);
      cfgs = {k};
    } else {
      vit::fail("usage: bench_attention_wg [--cfg N]");
    }
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("wgmma attention forward benchmark on %s (bf16, fp32 accumulation, d = 64)\n", prop.name);
  VIT_REQUIRE(gpu::attn::wg_forward_supports(197, 64), "bench_attention_wg needs a compute capability 9.0 GPU (",
              prop.name, " is ", prop.major, ".", prop.minor, ")");

  for (int c : cfgs)
    std::printf("wg %s: %d CTAs per SM (planned %d)\n", gpu::attn::wg_config_name(c).c_str(),
                gpu::attn::wg_ctas_per_sm(c), gpu::attn::wg_traits(c).min_blocks);
  bool ok = true;
  for (int c : cfgs)
    for (const Shape& s :
         {Shape{"check", 2, 197, 3}, Shape{"check", 1, 5, 2}, Shape{"check", 1, 577, 2}, Shape{"check", 2, 64, 3}})
      ok = check(c, s.B, s.T, s.H) && ok;
  if (!ok) {
    std::printf("FAILED: the wgmma forward does not match the CPU reference\n");
    return 1;
  }

  bench::Timer timer;
  for (const Shape& s : {Shape{"ViT-B/16-224", 256, 197, 12}, Shape{"ViT-B/16-384", 32, 577, 12}}) {
    const int d = 64;
    const size_t n_qkv = (size_t)s.B * s.T * 3 * s.H * d, n_out = (size_t)s.B * s.T * s.H * d;
    const float scale = 0.125f;
    gpu::DeviceBuffer<bf16> qkv(n_qkv), out(n_out);
    gpu::DeviceBuffer<float> lse((size_t)s.B * s.H * s.T);
    bench::fill_uniform(qkv.get(), n_qkv, 1, 1.7f);  // std ~1: scores of std ~1 at scale 1/8
    const double flops = 4.0 * s.B * s.H * (double)s.T * s.T * d;
    char tag[160];
    const int m32_cfg = gpu::attn::m32_config(s.T, d);
    const double us_m32 = timer.median_us(
        [&] { gpu::attn::m32_forward(out.get(), lse.get(), qkv.get(), s.B, s.T, s.H, d, scale, m32_cfg, 0); });
    std::snprintf(tag, sizeof tag, "attn %s B%d H%d T%d d64 m32 %s fwd", s.name, s.B, s.H, s.T,
                  gpu::attn::m32_config_name(m32_cfg, d).c_str());
    bench::report(tag, us_m32, flops, 0);
    double best = 0;
    int best_cfg = -1;
    for (int c : cfgs) {
      const double us = timer.median_us(
          [&] { gpu::attn::wg_forward_cfg(c, out.get(), lse.get(), qkv.get(), s.B, s.T, s.H, d, scale, 0); });
      std::snprintf(tag, sizeof tag, "attn %s B%d H%d T%d d64 wg %s fwd", s.name, s.B, s.H, s.T,
                    gpu::attn::wg_config_name(c).c_str());
      bench::report(tag, us, flops, 0);
      if (best_cfg < 0 || us < best) {
        best = us;
        best_cfg = c;
      }
    }
    std::printf("fastest wg forward %s: %s %.1f us vs m32 %.1f us (%.3fx)\n", s.name,
                gpu::attn::wg_config_name(best_cfg).c_str(), best, us_m32, us_m32 / best);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const vit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
