// Global pooling CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs): token and
// average modes, n_prefix 0/1/5, D a multiple of 8 (vector path) or not; dx poisoned first, so every
// element (zeros included) must be written.
//
// Tolerance: bf16 outputs, one rounding of an fp32 value (≤ 2^-9 relative, ≈1.1e-3 RMS): 5e-3 in norm.
#include <doctest/doctest.h>

#include <vector>

#include "kernels/pool.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("pool gpu: forward and backward match the CPU reference") {
  uint64_t seed = 9800;
  for (int D : {768, 13})
    for (auto [mode, n_prefix] : {std::pair{PoolMode::token, 1}, {PoolMode::avg, 0}, {PoolMode::avg, 1},
                                  {PoolMode::avg, 5}}) {
      const int B = 5, Tn = 197;
      const size_t nx = (size_t)B * Tn * D;
      const auto x = bf_round(randn_f(nx, seed++)), g = bf_round(randn_f((size_t)B * D, seed++));
      std::vector<float> out((size_t)B * D), dx(nx);
      ref::pool_forward(out.data(), x.data(), B, Tn, D, mode, n_prefix);
      ref::pool_backward(dx.data(), g.data(), B, Tn, D, mode, n_prefix);
      auto d_x = to_device(to_bf(x)), d_g = to_device(to_bf(g));
      gpu::DeviceBuffer<bf16> d_out((size_t)B * D), d_dx(nx);
      d_out.poison();
      d_dx.poison();
      gpu::pool_forward(d_out.get(), d_x.get(), B, Tn, D, mode, n_prefix, 0);
      gpu::pool_backward(d_dx.get(), d_g.get(), B, Tn, D, mode, n_prefix, 0);
      INFO("D=", D, " mode=", (int)mode, " n_prefix=", n_prefix);
      CHECK(rel_err(to_f(d_out.download()), out) < 5e-3);
      CHECK(rel_err(to_f(d_dx.download()), dx) < 5e-3);
    }
}
