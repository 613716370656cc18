// Patchify CUDA kernel against the CPU reference: a pure gather plus one fp32 → bf16 rounding, so the
// GPU patches must equal the CPU's (float) patches rounded to bf16 bit for bit. Vector path (p = 16,
// ViT-B/16's 224² image) and scalar paths (p = 4, 5, non-square images); output poisoned first.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "kernels/patch_embed.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("patchify gpu: equals the CPU reference bit for bit") {
  struct S {
    int B, C, H, W, p;
  };
  uint64_t seed = 9900;
  for (S s : {S{2, 3, 224, 224, 16}, S{3, 3, 32, 48, 16}, S{2, 3, 12, 20, 4}, S{1, 2, 15, 10, 5}, S{2, 1, 8, 8, 8}}) {
    const size_t n = (size_t)s.B * s.C * s.H * s.W;
    const auto img = randn_f(n, seed++);
    std::vector<float> patches(n);
    ref::patchify(patches.data(), img.data(), s.B, s.C, s.H, s.W, s.p);
    auto d_img = to_device(img);
    gpu::DeviceBuffer<bf16> d_patches(n);
    d_patches.poison();
    gpu::patchify(d_patches.get(), d_img.get(), s.B, s.C, s.H, s.W, s.p, 0);
    const auto got = d_patches.download(), want = to_bf(patches);
    INFO("B=", s.B, " C=", s.C, " H=", s.H, " W=", s.W, " p=", s.p);
    CHECK(std::memcmp(got.data(), want.data(), n * sizeof(bf16)) == 0);
  }
}
