// Attention benchmark: checks each implementation against the CPU reference on small shapes first, then
// times forward, backward and forward + backward (L2 flushed, median) at the ViT-B/16 shape (B=256, H=12,
// T=197, d=64; target fwd+bwd <= 600 µs on an H100, PyTorch SDPA 817 µs) plus T=577 d=64 and T=257
// d=80 / d=128, printing BENCH lines with µs and TFLOP/s (forward 4·B·H·T²·d, backward 2.5× that).
//   bench_attention              the fused kernels: flash (1), at d=64 its other backward tiling (2), and the
//                                K/V-resident kernels (3; shapes they do not take run flash), and fast (4: the
//                                re-tiled forward with the resident backward where it applies)
//                                and m32 (5: 32 query rows per warp), once per configuration of its forward
//                                (VIT_ATTN_M32_CFG, set here for each), ending with the fastest per shape
//                                and wg (6: the Hopper wgmma forward and backward, attention_fwd_wg.cu and
//                                attention_bwd_wg.cu, where they apply; VIT_ATTN_WG_BWD=0 keeps the resident backward)
//   bench_attention --variant N  one implementation: 0 simple, 1 flash, 2 flash_wide, 3 resident, 4 fast, 5 m32,
//                                6 wg
// It also prints which variant the public API (gpu::attention_*) runs: VIT_ATTN_VARIANT=N forces one.
// Attention dropout: every variant is also checked with p = 0.1 (CPU reference with the same mask), and two more
// rows time p = 0.1 at the ViT-B shape and at the reference recipe's (T = 187), by default with the resident
// variant (flash forward under dropout), with --variant N with N.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_fwd_m32.h"
#include "kernels/attention_fwd_wg.h"
#include "kernels/attention_tiles.cuh"
#include "tests/gpu/gpu_test_util.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::gpu::attn::Variant;
using vit::gpu::attn::variant_name;
using vit::test::bf_round;
using vit::test::randn_f;
using vit::test::rel_err;
using vit::test::to_bf;
using vit::test::to_f;

namespace {

// The name a variant is reported under: m32 with the configuration it runs at (T, d) and its tiling.
std::string label(Variant v, int T, int d) {
  if (v == Variant::wg && gpu::attn::wg_forward_supports(T, d))
    return "wg " + gpu::attn::wg_config_name(gpu::attn::wg_config(T, d));
  if (v != Variant::m32 && v != Variant::wg) return variant_name(v);
  return "m32 " + gpu::attn::m32_config_name(gpu::attn::m32_config(T, d), d);
}

// Selects configuration cfg of the m32 forward for the calls that follow.
void set_m32_config(int cfg) { setenv("VIT_ATTN_M32_CFG", std::to_string(cfg).c_str(), 1); }

// Small-shape check of forward (out, lse) and backward (dq, dk, dv together) against the CPU reference.
bool check(Variant v, int B, int T, int H, int d, const AttnDropout& dr = {}) {
  const size_t n_qkv = (size_t)B * T * 3 * H * d, n_out = (size_t)B * T * H * d, n_stat = (size_t)B * H * T;
  const float scale = 1.f / std::sqrt((float)d);
  const auto qkv = bf_round(randn_f(n_qkv, 11 + d)), dout = bf_round(randn_f(n_out, 12 + d));
  std::vector<float> out(n_out), lse(n_stat), dqkv(n_qkv);
  ref::attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, d, (double)scale, dr);
  const auto out_bf = bf_round(out);
  ref::attention_backward(dqkv.data(), dout.data(), qkv.data(), out_bf.data(), lse.data(), B, T, H, d, (double)scale,
                          dr);

  auto d_qkv = test::to_device(to_bf(qkv));
  auto d_dout = test::to_device(to_bf(dout));
  auto d_out_in = test::to_device(to_bf(out_bf));
  auto d_lse_in = test::to_device(lse);
  gpu::DeviceBuffer<bf16> d_out(n_out), d_dqkv(n_qkv);
  gpu::DeviceBuffer<float> d_lse(n_stat);
  gpu::DeviceBuffer<unsigned char> d_ws((size_t)gpu::attention_backward_workspace_bytes(B, T, H, d));
  d_out.poison();
  d_lse.poison();
  d_dqkv.poison();
  gpu::attn::forward(v, d_out.get(), d_lse.get(), d_qkv.get(), B, T, H, d, scale, 0, dr);
  gpu::attn::backward(v, d_dqkv.get(), d_dout.get(), d_qkv.get(), d_out_in.get(), d_lse_in.get(), B, T, H, d, scale,
                      d_ws.get(), 0, dr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const double e_out = rel_err(to_f(d_out.download()), out), e_lse = rel_err(d_lse.download(), lse);
  const double e_d = rel_err(to_f(d_dqkv.download()), dqkv);
  const bool ok = e_out < 1e-2 && e_lse < 1e-4 && e_d < 1e-2;
  std::printf("check %-10s B=%d T=%d H=%d d=%-3d p=%.2f  out %.2e  lse %.2e  dqkv %.2e  %s\n", label(v, T, d).c_str(), B,
              T, H, d, dr.p, e_out, e_lse, e_d, ok ? "ok" : "FAILED");
  return ok;
}

struct Shape {
  const char* name;
  int B, T, H, d;
};

struct Times {
  double fwd, fwd_bwd;  // µs
};

// Times one shape: forward, backward, forward + backward.
Times time_shape(bench::Timer& timer, Variant v, const Shape& s, const AttnDropout& dr = {}) {
  const size_t n_qkv = (size_t)s.B * s.T * 3 * s.H * s.d, n_out = (size_t)s.B * s.T * s.H * s.d;
  const float scale = 1.f / std::sqrt((float)s.d);
  gpu::DeviceBuffer<bf16> qkv(n_qkv), out(n_out), dout(n_out), dqkv(n_qkv);
  gpu::DeviceBuffer<float> lse((size_t)s.B * s.H * s.T);
  gpu::DeviceBuffer<unsigned char> ws((size_t)gpu::attention_backward_workspace_bytes(s.B, s.T, s.H, s.d));
  bench::fill_uniform(qkv.get(), n_qkv, 1, 1.7f);  // std ~1: scores of std ~1 at scale 1/sqrt(d)
  bench::fill_uniform(dout.get(), n_out, 2, 1.f);
  auto fwd = [&] { gpu::attn::forward(v, out.get(), lse.get(), qkv.get(), s.B, s.T, s.H, s.d, scale, 0, dr); };
  auto bwd = [&] {
    gpu::attn::backward(v, dqkv.get(), dout.get(), qkv.get(), out.get(), lse.get(), s.B, s.T, s.H, s.d, scale,
                        ws.get(), 0, dr);
  };
  // The backward as the training step runs it: with the qkv linear's bias gradient (fused where the kernel can).
  gpu::DeviceBuffer<float> dbias((size_t)3 * s.H * s.d);
  CUDA_CHECK(cudaMemset(dbias.get(), 0, dbias.size() * sizeof(float)));
  auto bwd_bias = [&] {
    gpu::attn::backward(v, dqkv.get(), dout.get(), qkv.get(), out.get(), lse.get(), s.B, s.T, s.H, s.d, scale,
                        ws.get(), 0, dr, dbias.get());
  };
  fwd();
  CUDA_CHECK(cudaDeviceSynchronize());
  const int reps = v == Variant::simple ? 5 : 30;  // the simple kernels take tens of ms at these shapes
  const double us_f = timer.median_us(fwd, reps, 2);
  const double us_b = timer.median_us(bwd, reps, 2);
  const double us_bb = timer.median_us(bwd_bias, reps, 2);
  const double us_fb = timer.median_us(
      [&] {
        fwd();
        bwd();
      },
      reps, 2);
  const double flops_f = 4.0 * s.B * s.H * (double)s.T * s.T * s.d;
  char tag[160];
  const int len = std::snprintf(tag, sizeof tag, "attn %s B%d H%d T%d d%d %s", s.name, s.B, s.H, s.T, s.d,
                                label(v, s.T, s.d).c_str());
  if (dr.active() && len > 0 && len < (int)sizeof tag)
    std::snprintf(tag + len, sizeof tag - len, " attn_drop %.2f", dr.p);
  bench::report((std::string(tag) + " fwd").c_str(), us_f, flops_f, 0);
  bench::report((std::string(tag) + " bwd").c_str(), us_b, 2.5 * flops_f, 0);
  bench::report((std::string(tag) + " bwd+bias").c_str(), us_bb, 2.5 * flops_f, 0);
  bench::report((std::string(tag) + " fwd+bwd").c_str(), us_fb, 3.5 * flops_f, 0);
  return {us_f, us_fb};
}

constexpr AttnDropout kDrop{0.1f, 12345, 7};  // the p = 0.1 checks and timing row

int run(int argc, char** argv) {
  std::vector<Variant> variants = {Variant::flash, Variant::flash_wide, Variant::resident, Variant::fast,
                                   Variant::m32,   Variant::wg};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--variant") == 0 && i + 1 < argc) {
      const int k = std::atoi(argv[++i]);
      VIT_REQUIRE(k >= 0 && k < gpu::attn::kVariantCount,
                  "--variant takes 0 (simple), 1 (flash), 2 (flash_wide), 3 (resident), 4 (fast), 5 (m32) or 6 (wg), not ",
                  k);
      variants = {static_cast<Variant>(k)};
    } else {
      vit::fail("usage: bench_attention [--variant 0|1|2|3|4|5|6]");
    }
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention benchmark on %s (bf16, fp32 accumulation)\n", prop.name);
  std::printf("public API dispatch: d=64 -> variant %d (%s), d=128 -> variant %d (%s)%s\n",
              (int)gpu::attn::default_variant(64), variant_name(gpu::attn::default_variant(64)),
              (int)gpu::attn::default_variant(128), variant_name(gpu::attn::default_variant(128)),
              std::getenv("VIT_ATTN_VARIANT") ? " (forced by VIT_ATTN_VARIANT)" : "");

  const char* m32_env = std::getenv("VIT_ATTN_M32_CFG");
  const std::string m32_saved = m32_env ? m32_env : "";
  std::printf("m32 forward configurations (VIT_ATTN_M32_CFG; default by shape, ViT-B: %d, T577: %d):\n",
              gpu::attn::m32_default_config(197, 64), gpu::attn::m32_default_config(577, 64));
  for (int c = 0; c < gpu::attn::kM32ConfigCount; ++c)
    std::printf("  d=64: %s   d=128: %s\n", gpu::attn::m32_config_name(c, 64).c_str(),
                gpu::attn::m32_config_name(c, 128).c_str());
  // m32 runs once per configuration, the others once.
  auto configs_of = [](Variant v) { return v == Variant::m32 ? gpu::attn::kM32ConfigCount : 1; };

  bool ok = true;
  for (Variant v : variants)
    for (int c = 0; c < configs_of(v); ++c) {
      if (v == Variant::m32) set_m32_config(c);
      for (int d : gpu::attn::kFlashDims) {
        if (v == Variant::flash_wide && d != 64) continue;  // same kernels as flash there
        ok = check(v, 2, 197, 3, d) && ok;
        ok = check(v, 1, 5, 2, d) && ok;
        if (v == Variant::resident || v == Variant::fast || v == Variant::m32 || v == Variant::wg)
          ok = check(v, 1, 250, 2, d) && ok;  // 16-warp backward
        if (v == Variant::m32 || v == Variant::wg) ok = check(v, 1, 577, 2, d) && ok;  // long rows: many key blocks, a 1-key tail
        ok = check(v, 2, 197, 3, d, kDrop) && ok;
      }
    }
  if (!ok) {
    std::printf("FAILED: the CUDA attention does not match the CPU reference\n");
    return 1;
  }

  const Shape shapes[] = {{"ViT-B/16-224", 256, 197, 12, 64},
                          {"ViT-B/16-384", 32, 577, 12, 64},
                          {"ViT-B/14-224", 128, 257, 12, 64},
                          {"ViT-B/16-320", 64, 401, 12, 64},
                          {"ViT-H/14-224", 64, 257, 16, 80},
                          {"d128", 64, 257, 8, 128}};
  constexpr int kShapes = sizeof shapes / sizeof shapes[0];
  double flash_fwd[kShapes] = {}, best_m32[kShapes] = {};
  int best_cfg[kShapes] = {};
  bench::Timer timer;
  for (Variant v : variants)
    for (int c = 0; c < configs_of(v); ++c) {
      if (v == Variant::m32) set_m32_config(c);
      for (int i = 0; i < kShapes; ++i) {
        const Shape& s = shapes[i];
        if (v == Variant::flash_wide && s.d != 64) continue;
        if (v == Variant::wg && !gpu::attn::wg_forward_supports(s.T, s.d)) continue;  // m32's kernels again
        if (v == Variant::resident && !gpu::attn::resident_forward_supports(s.T, s.d) &&
            !gpu::attn::resident_backward_supports(s.T, s.d))
          continue;  // would time the flash kernels again
        const Times us = time_shape(timer, v, s);
        if (v == Variant::flash) flash_fwd[i] = us.fwd;
        if (v == Variant::m32 && (best_m32[i] == 0 || us.fwd < best_m32[i])) {
          best_m32[i] = us.fwd;
          best_cfg[i] = c;
        }
        if (i == 0)
          std::printf("attention fwd+bwd ViT-B (%s): %.1f us: %s the 600 us target (PyTorch SDPA 817 us)\n",
                      label(v, s.T, s.d).c_str(), us.fwd_bwd, us.fwd_bwd <= 600 ? "meets" : "MISSES");
      }
    }
  for (int i = 0; i < kShapes; ++i)
    if (best_m32[i] > 0) {
      set_m32_config(best_cfg[i]);
      std::printf("fastest m32 forward %s T%d d%d: %s %.1f us", shapes[i].name, shapes[i].T, shapes[i].d,
                  label(Variant::m32, shapes[i].T, shapes[i].d).c_str(), best_m32[i]);
      if (flash_fwd[i] > 0) std::printf(" (flash %.1f us, %.3fx)", flash_fwd[i], flash_fwd[i] / best_m32[i]);
      std::printf("%s\n", i == 0 ? ", SDPA 174 us" : "");
    }
  if (m32_env)
    setenv("VIT_ATTN_M32_CFG", m32_saved.c_str(), 1);
  else
    unsetenv("VIT_ATTN_M32_CFG");
  // Attention dropout at the ViT-B shape, once: the public pairing by default, else the one variant asked for.
  const Variant vd = variants.size() == 1 ? variants[0] : Variant::resident;
  const double us = time_shape(timer, vd, shapes[0], kDrop).fwd_bwd;
  std::printf("attention fwd+bwd ViT-B with attn_drop %.2f (%s backward, %s forward): %.1f us\n", kDrop.p,
              variant_name(vd), vd == Variant::simple ? "simple" : vd == Variant::wg ? "wg" : "flash", us);
  // The reference recipe's shape: patch dropout 0.05 keeps 186 of 196 patches (T = 187), attention dropout on.
  const Shape recipe{"ViT-B/16-224 recipe", 256, 187, 12, 64};
  const double us_r = time_shape(timer, vd, recipe, kDrop).fwd_bwd;
  std::printf("attention fwd+bwd %s T%d with attn_drop %.2f (%s): %.1f us\n", recipe.name, recipe.T, kDrop.p,
              variant_name(vd), us_r);
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
