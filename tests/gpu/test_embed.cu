// Token assembly CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs), for
// every combination of class token, register tokens and position embedding, D a multiple of 8 (vector
// path) or not, batches larger than the kernel's batch lanes; fp32 parameter gradients accumulated into
// non-zero buffers and deterministic.
//
// Tolerances: x is bf16(fp32 sum of two bf16 values) and dpatch a copy, so both match the CPU result
// rounded to bf16 within one rounding: 5e-3 in norm (in practice exact). dcls/dreg/dpos are fp32 sums over
// the batch in another order than the CPU's double sums: 1e-5.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/embed.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

namespace {
double rel_err_d(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
std::vector<double> diff(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = (double)a[i] - b[i];
  return r;
}
}  // namespace

TEST_CASE("embed gpu: forward and backward match the CPU reference") {
  uint64_t seed = 9700;
  for (int D : {768, 37})
    for (bool cls : {true, false})
      for (int R : {0, 4})
        for (int pos_mode : {0, 1, 2}) {  // 0: pos on all tokens, 1: no_embed_class, 2: no pos
          const EmbedShape s{D == 768 ? 11 : 3, D == 768 ? 196 : 5, D, R, cls, pos_mode == 1};
          const bool has_pos = pos_mode != 2;
          const int Tn = s.tokens();
          const size_t nx = (size_t)s.B * Tn * D, np = (size_t)s.B * s.Np * D;
          const auto patch = bf_round(randn_f(np, seed++)), c = bf_round(randn_f(D, seed++));
          const auto reg = bf_round(randn_f((size_t)R * D, seed++));
          const auto pos = bf_round(randn_f((size_t)s.pos_tokens() * D, seed++));
          const auto dx = bf_round(randn_f(nx, seed++));
          const auto dcls0 = randn_f(D, seed++), dreg0 = randn_f((size_t)R * D, seed++);
          const auto dpos0 = randn_f(pos.size(), seed++);

          std::vector<float> x(nx), dpatch(np), dcls = dcls0, dreg = dreg0, dpos = dpos0;
          ref::embed_forward(x.data(), patch.data(), cls ? c.data() : nullptr, R ? reg.data() : nullptr,
                             has_pos ? pos.data() : nullptr, s);
          ref::embed_backward(dpatch.data(), cls ? dcls.data() : nullptr, R ? dreg.data() : nullptr,
                              has_pos ? dpos.data() : nullptr, dx.data(), s);

          auto d_patch = to_device(to_bf(patch)), d_c = to_device(to_bf(c)), d_pos = to_device(to_bf(pos));
          auto d_reg = to_device(to_bf(reg.empty() ? std::vector<float>(1) : reg));
          auto d_dx = to_device(to_bf(dx));
          gpu::DeviceBuffer<bf16> d_x(nx), d_dpatch(np);
          auto d_dcls = to_device(dcls0), d_dpos = to_device(dpos0);
          auto d_dreg = to_device(dreg0.empty() ? std::vector<float>(1) : dreg0);
          d_x.poison();
          d_dpatch.poison();
          gpu::embed_forward(d_x.get(), d_patch.get(), cls ? d_c.get() : nullptr, R ? d_reg.get() : nullptr,
                             has_pos ? d_pos.get() : nullptr, s, 0);
          gpu::embed_backward(d_dpatch.get(), cls ? d_dcls.get() : nullptr, R ? d_dreg.get() : nullptr,
                              has_pos ? d_dpos.get() : nullptr, d_dx.get(), s, 0);
          INFO("D=", D, " cls=", cls, " R=", R, " pos_mode=", pos_mode, " B=", s.B);
          CHECK(rel_err(to_f(d_x.download()), x) < 5e-3);
          CHECK(rel_err(to_f(d_dpatch.download()), dpatch) < 5e-3);
          if (cls) CHECK(rel_err_d(diff(d_dcls.download(), dcls0), diff(dcls, dcls0)) < 1e-5);
          if (R) CHECK(rel_err_d(diff(d_dreg.download(), dreg0), diff(dreg, dreg0)) < 1e-5);
          if (has_pos) {
            const auto g1 = d_dpos.download();
            CHECK(rel_err_d(diff(g1, dpos0), diff(dpos, dpos0)) < 1e-5);
            // Deterministic: the same accumulation from the same start gives the same bits.
            auto d_dpos2 = to_device(dpos0);
            gpu::embed_backward(d_dpatch.get(), nullptr, nullptr, d_dpos2.get(), d_dx.get(), s, 0);
            CHECK(std::memcmp(d_dpos2.download().data(), g1.data(), g1.size() * sizeof(float)) == 0);
          }
        }
}
