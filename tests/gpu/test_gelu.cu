// GELU CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs), erf and tanh forms,
// vector and scalar paths (lengths not multiples of 8, misaligned pointers).
//
// Tolerance: outputs are bf16, one rounding of an fp32 value (≤ 2^-9 relative per element, ≈1.1e-3 RMS);
// the device erff/tanhf/__expf differ from the host's by a few fp32 ulps, far below that. 5e-3 in norm.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "kernels/gelu.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

TEST_CASE("gelu gpu: forward and backward match the CPU reference") {
  uint64_t seed = 9100;
  for (bool tanh_approx : {false, true})
    for (i64 n : {1, 7, 8, 1001, 65539})
      for (int off : {0, 1}) {
        const auto x = bf_round(randn_f(n, seed++, 3.f)), g = bf_round(randn_f(n, seed++));
        std::vector<float> out(n), dx(n);
        ref::gelu_forward(out.data(), x.data(), n, tanh_approx);
        ref::gelu_backward(dx.data(), g.data(), x.data(), n, tanh_approx);
        // Allocate n + 1 and start at `off`: off = 1 misaligns every pointer (scalar path).
        std::vector<bf16> xh(n + 1), gh(n + 1);
        for (i64 i = 0; i < n; ++i) xh[i + off] = to_bf(x[i]), gh[i + off] = to_bf(g[i]);
        auto d_x = to_device(xh), d_g = to_device(gh);
        gpu::DeviceBuffer<bf16> d_out(n + 1), d_dx(n + 1);
        d_out.poison();
        d_dx.poison();
        gpu::gelu_forward(d_out.get() + off, d_x.get() + off, n, tanh_approx, 0);
        gpu::gelu_backward(d_dx.get() + off, d_g.get() + off, d_x.get() + off, n, tanh_approx, 0);
        const auto ho = to_f(d_out.download()), hd = to_f(d_dx.download());
        const std::vector<float> go(ho.begin() + off, ho.begin() + off + n), gd(hd.begin() + off, hd.begin() + off + n);
        const double eo = rel_err(go, out), ed = rel_err(gd, dx);
        INFO("tanh=", tanh_approx, " n=", n, " offset=", off, " fwd ", eo, " bwd ", ed);
        CHECK(eo < 5e-3);
        CHECK(ed < 5e-3);
        // The one element outside [off, off + n) must still hold the poison (no out-of-bounds write).
        const size_t outside = off == 0 ? (size_t)n : 0;
        CHECK(std::isnan(ho[outside]));
        CHECK(std::isnan(hd[outside]));
      }
}
