// Cross attention (timm's AttentionPoolLatent core) on the GPU against the CPU reference, run in float on the
// same bf16-rounded inputs. Outputs are poisoned (NaN) before every run, so an element never written fails.
//
// Tolerances (relative Frobenius error over a whole tensor):
//   out, dq, dk, dv (bf16 storage): 1e-2. The kernels compute in fp32 from the bf16 inputs; the dominant
//     error is the final rounding to bf16 (2^-9 relative per element, ~2e-3 as a norm), plus fp32 sum order.
//   lse (fp32): 1e-5. Scores are exact products of bf16 inputs summed in fp32 and expf/logf are accurate to
//     a few ulp; only the order of fp32 sums differs from the reference's double sums.
// The backward is checked in isolation: both sides get the same out (the reference's, rounded to bf16) and
// lse, so only the backward's own error is measured. T = 1 has dq = dk = 0 exactly in exact arithmetic (the
// output is v whatever q and k are), so there they are checked in absolute terms.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cross_attention.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

namespace {

constexpr double kTolBf16 = 1e-2;
constexpr double kTolLse = 1e-5;

struct Case {
  int B, L, T, H, d;
};

struct Errors {
  double out, lse, dq, dk, dv;
};

// Entries of part (0 = k, 1 = v) of a (B, T, 2, H, d) tensor, in order.
std::vector<float> part_of(const std::vector<float>& x, const Case& c, int part) {
  std::vector<float> r;
  r.reserve(x.size() / 2);
  const size_t hd = (size_t)c.H * c.d;
  for (size_t tok = 0; tok < (size_t)c.B * c.T; ++tok)
    r.insert(r.end(), x.begin() + (tok * 2 + part) * hd, x.begin() + (tok * 2 + part + 1) * hd);
  return r;
}

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float v : x) m = std::isfinite(v) ? std::max(m, (double)std::abs(v)) : INFINITY;
  return m;
}

// Forward and backward on fresh random inputs; returns the relative errors against the CPU twin.
Errors run_case(const Case& c, uint64_t seed, float in_scale = 1.f) {
  const size_t n_q = (size_t)c.B * c.L * c.H * c.d, n_kv = (size_t)c.B * c.T * 2 * c.H * c.d,
               n_stat = (size_t)c.B * c.H * c.L;
  const float scale = 1.f / std::sqrt((float)c.d);
  const auto q = bf_round(randn_f(n_q, seed, in_scale));
  const auto kv = bf_round(randn_f(n_kv, seed + 1, in_scale));
  const auto dout = bf_round(randn_f(n_q, seed + 2));

  // CPU twin in float on the rounded inputs.
  std::vector<float> out_ref(n_q), lse_ref(n_stat), dq_ref(n_q), dkv_ref(n_kv);
  ref::cross_attention_forward(out_ref.data(), lse_ref.data(), q.data(), kv.data(), c.B, c.L, c.T, c.H, c.d,
                               (double)scale);
  const auto out_bf = bf_round(out_ref);  // what a bf16 forward would have stored
  ref::cross_attention_backward(dq_ref.data(), dkv_ref.data(), dout.data(), q.data(), kv.data(), out_bf.data(),
                                lse_ref.data(), c.B, c.L, c.T, c.H, c.d, (double)scale);

  auto d_q = to_device(to_bf(q));
  auto d_kv = to_device(to_bf(kv));
  gpu::DeviceBuffer<bf16> d_out(n_q), d_dq(n_q), d_dkv(n_kv);
  gpu::DeviceBuffer<float> d_lse(n_stat);
  d_out.poison();
  d_lse.poison();
  gpu::cross_attention_forward(d_out.get(), d_lse.get(), d_q.get(), d_kv.get(), c.B, c.L, c.T, c.H, c.d, scale, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  Errors e{};
  e.out = rel_err(to_f(d_out.download()), out_ref);
  e.lse = rel_err(d_lse.download(), lse_ref);

  // Backward in isolation: the same out and lse as the reference backward saw.
  auto d_out_in = to_device(to_bf(out_bf));
  auto d_lse_in = to_device(lse_ref);
  auto d_dout = to_device(to_bf(dout));
  d_dq.poison();
  d_dkv.poison();
  gpu::cross_attention_backward(d_dq.get(), d_dkv.get(), d_dout.get(), d_q.get(), d_kv.get(), d_out_in.get(),
                                d_lse_in.get(), c.B, c.L, c.T, c.H, c.d, scale, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto gq = to_f(d_dq.download());
  const auto dkv = to_f(d_dkv.download());
  const auto gk = part_of(dkv, c, 0), gv = part_of(dkv, c, 1);
  if (c.T == 1) {  // exact answer 0: absolute check (dS = P (dP − D) ~ fp32 rounding of d-term dot products)
    e.dq = max_abs(gq) < 1e-3 ? 0.0 : INFINITY;
    e.dk = max_abs(gk) < 1e-3 ? 0.0 : INFINITY;
  } else {
    e.dq = rel_err(gq, dq_ref);
    e.dk = rel_err(gk, part_of(dkv_ref, c, 0));
  }
  e.dv = rel_err(gv, part_of(dkv_ref, c, 1));
  return e;
}

void check_errors(const Errors& e, const Case& c, const char* what = "") {
  INFO(what, " B=", c.B, " L=", c.L, " T=", c.T, " H=", c.H, " d=", c.d, "  out ", e.out, " lse ", e.lse, " dq ",
       e.dq, " dk ", e.dk, " dv ", e.dv);
  CHECK(e.out < kTolBf16);
  CHECK(e.lse < kTolLse);
  CHECK(e.dq < kTolBf16);
  CHECK(e.dk < kTolBf16);
  CHECK(e.dv < kTolBf16);
}

}  // namespace

TEST_CASE("cross attention gpu: matches the CPU reference") {
  Errors worst{};
  uint64_t seed = 9100;
  for (int d : {32, 64, 128})
    for (int L : {1, 3})
      for (int T : {1, 5, 197, 257}) {
        const Case c{2, L, T, 3, d};
        const Errors e = run_case(c, seed += 10);
        check_errors(e, c);
        worst = {std::max(worst.out, e.out), std::max(worst.lse, e.lse), std::max(worst.dq, e.dq),
                 std::max(worst.dk, e.dk), std::max(worst.dv, e.dv)};
      }
  MESSAGE("cross attention gpu: worst out ", worst.out, " lse ", worst.lse, " dq ", worst.dq, " dk ", worst.dk, " dv ",
          worst.dv);
}

TEST_CASE("cross attention gpu: odd head dims, long sequences, peaked rows, many (b, h)") {
  check_errors(run_case(Case{3, 2, 17, 2, 40}, 9500), Case{3, 2, 17, 2, 40}, "odd d");
  check_errors(run_case(Case{1, 1, 1025, 2, 64}, 9510), Case{1, 1, 1025, 2, 64}, "long T");
  // Inputs of std 3: scores of std ~9, so each warp's running max moves and the warps' maxima differ widely.
  for (const Case c : {Case{2, 1, 197, 3, 64}, Case{1, 3, 257, 2, 128}})
    check_errors(run_case(c, 9520 + c.T, 3.f), c, "peaked");
  check_errors(run_case(Case{64, 1, 50, 12, 64}, 9530), Case{64, 1, 50, 12, 64}, "many rows");
}

TEST_CASE("cross attention gpu: deterministic across runs") {
  const Case c{2, 3, 197, 3, 64};
  const size_t n_q = (size_t)c.B * c.L * c.H * c.d, n_kv = (size_t)c.B * c.T * 2 * c.H * c.d;
  auto d_q = to_device(to_bf(randn_f(n_q, 9600)));
  auto d_kv = to_device(to_bf(randn_f(n_kv, 9601)));
  auto d_dout = to_device(to_bf(randn_f(n_q, 9602)));
  gpu::DeviceBuffer<bf16> d_out(n_q), d_dq(n_q), d_dkv(n_kv);
  gpu::DeviceBuffer<float> d_lse((size_t)c.B * c.H * c.L);
  std::vector<bf16> first_dq, first_dkv;
  std::vector<float> first_lse;
  for (int run = 0; run < 2; ++run) {
    d_out.poison(), d_lse.poison(), d_dq.poison(), d_dkv.poison();
    gpu::cross_attention_forward(d_out.get(), d_lse.get(), d_q.get(), d_kv.get(), c.B, c.L, c.T, c.H, c.d, 0.125f, 0);
    gpu::cross_attention_backward(d_dq.get(), d_dkv.get(), d_dout.get(), d_q.get(), d_kv.get(), d_out.get(),
                                  d_lse.get(), c.B, c.L, c.T, c.H, c.d, 0.125f, 0);
    CUDA_CHECK(cudaDeviceSynchronize());
    auto dq = d_dq.download(), dkv = d_dkv.download();
    auto lse = d_lse.download();
    if (run == 0) {
      first_dq = dq, first_dkv = dkv, first_lse = lse;
      CHECK(max_abs(to_f(dq)) < INFINITY);
      CHECK(max_abs(to_f(dkv)) < INFINITY);
    } else {
      CHECK(std::equal(dq.begin(), dq.end(), first_dq.begin(), [](bf16 a, bf16 b) { return to_f(a) == to_f(b); }));
      CHECK(std::equal(dkv.begin(), dkv.end(), first_dkv.begin(), [](bf16 a, bf16 b) { return to_f(a) == to_f(b); }));
      CHECK(lse == first_lse);
    }
  }
}

TEST_CASE("cross attention gpu: rejects unsupported arguments") {
  gpu::DeviceBuffer<bf16> buf(1024);
  gpu::DeviceBuffer<float> lse(16);
  CHECK_THROWS_AS(gpu::cross_attention_forward(buf.get(), lse.get(), buf.get(), buf.get(), 1, 1, 1, 1, 129, 0.1f, 0),
                  vit::Error);
  CHECK_THROWS_AS(gpu::cross_attention_forward(buf.get(), lse.get(), buf.get(), buf.get(), 1, 0, 1, 1, 64, 0.1f, 0),
                  vit::Error);
  CHECK_THROWS_AS(gpu::cross_attention_forward(buf.get(), lse.get(), buf.get(), buf.get(), 1, 1, 1, 1, 64, 0.f, 0),
                  vit::Error);
}
