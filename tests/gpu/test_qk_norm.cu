// qk_norm CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs): the vectorised
// path for every group width (hd = 8, 16, 32, 40, 48, 64, 96, 128), the general path (hd not a multiple of
// 8, misaligned pointers), BT·H not a multiple of anything, many persistent blocks, the v part passed
// through bit for bit, parameter gradients accumulated into non-zero buffers, and determinism.
//
// Tolerances: bf16 outputs (out, dqkv) carry one bf16 rounding, ≤ 2^-9 relative per element (≈1.1e-3 RMS),
// so 5e-3 in norm leaves room for fp32 reassociation; mean/rstd are fp32 row statistics over ≤ 128 values
// (1e-5); the fp32 parameter gradients are sums over up to 12012 rows in another order than the CPU's
// double sums (1e-4).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/qk_norm.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

namespace {
constexpr float kEps = 1e-6f;  // timm's qk_norm LayerNorm eps

// A device copy of h starting `offset` elements into the allocation (offset 1 breaks 16-byte alignment).
struct OffsetBf16 {
  gpu::DeviceBuffer<bf16> buf;
  int off;
  OffsetBf16(const std::vector<bf16>& h, int offset) : buf(h.size() + offset), off(offset) {
    std::vector<bf16> padded(offset, to_bf(0.f));
    padded.insert(padded.end(), h.begin(), h.end());
    buf.upload(padded);
  }
  bf16* get() const { return buf.get() + off; }
  std::vector<bf16> download() const {
    auto all = buf.download();
    return std::vector<bf16>(all.begin() + off, all.end());
  }
};

// (after − before) of an fp32 gradient, so an accumulation is compared by what it added.
std::vector<float> added(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<float> r(after.size());
  for (size_t i = 0; i < after.size(); ++i) r[i] = after[i] - before[i];
  return r;
}

// True when the v rows (part 2 of (BT, 3, H, hd)) of a and b hold the same bits.
bool v_part_identical(const std::vector<bf16>& a, const std::vector<bf16>& b, i64 BT, int H, int hd) {
  const size_t vn = (size_t)H * hd;
  for (i64 bt = 0; bt < BT; ++bt) {
    const size_t off = ((size_t)bt * 3 + 2) * vn;
    if (std::memcmp(a.data() + off, b.data() + off, vn * sizeof(bf16)) != 0) return false;
  }
  return true;
}

struct QkShape {
  i64 BT;
  int H, hd;
  int offset;  // 0: aligned; 1: every activation pointer misaligned (general path)
};

void check_qk_norm(const QkShape& s, uint64_t seed) {
  const i64 BT = s.BT;
  const int H = s.H, hd = s.hd;
  const size_t n = (size_t)BT * 3 * H * hd, ns = (size_t)2 * BT * H;
  auto x = randn_f(n, seed, 2.f);
  for (auto& v : x) v += 0.7f;  // a non-zero mean exercises the centring
  x = bf_round(x);
  auto qw = randn_f(hd, seed + 1, 0.3f), kw = randn_f(hd, seed + 2, 0.3f);
  for (auto& v : qw) v += 1.f;
  for (auto& v : kw) v -= 1.f;  // q and k weights apart: swapping them would show
  qw = bf_round(qw);
  kw = bf_round(kw);
  const auto qb = bf_round(randn_f(hd, seed + 3, 0.2f)), kb = bf_round(randn_f(hd, seed + 4, 0.2f));
  const auto g = bf_round(randn_f(n, seed + 5));
  const auto dqw0 = randn_f(hd, seed + 6), dqb0 = randn_f(hd, seed + 7);
  const auto dkw0 = randn_f(hd, seed + 8), dkb0 = randn_f(hd, seed + 9);

  // CPU twin in float.
  std::vector<float> out(n), mean(ns), rstd(ns), dx(n), dqw = dqw0, dqb = dqb0, dkw = dkw0, dkb = dkb0;
  ref::qk_norm_forward(out.data(), mean.data(), rstd.data(), x.data(), qw.data(), qb.data(), kw.data(), kb.data(), BT,
                       H, hd, kEps);
  ref::qk_norm_backward(dx.data(), dqw.data(), dqb.data(), dkw.data(), dkb.data(), g.data(), x.data(), qw.data(),
                        kw.data(), mean.data(), rstd.data(), BT, H, hd);

  const auto xb = to_bf(x), gb = to_bf(g);
  OffsetBf16 d_x(xb, s.offset), d_g(gb, s.offset), d_out(std::vector<bf16>(n), s.offset);
  OffsetBf16 d_dx(std::vector<bf16>(n), s.offset);
  auto d_qw = to_device(to_bf(qw)), d_qb = to_device(to_bf(qb)), d_kw = to_device(to_bf(kw)),
       d_kb = to_device(to_bf(kb));
  gpu::DeviceBuffer<float> d_mean(ns), d_rstd(ns);
  auto d_dqw = to_device(dqw0), d_dqb = to_device(dqb0), d_dkw = to_device(dkw0), d_dkb = to_device(dkb0);
  gpu::DeviceBuffer<float> scratch(gpu::qk_norm_backward_scratch_floats(BT, H, hd));
  d_out.buf.poison();
  d_dx.buf.poison();
  d_mean.poison();
  d_rstd.poison();
  scratch.poison();

  gpu::qk_norm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_qw.get(), d_qb.get(), d_kw.get(),
                       d_kb.get(), BT, H, hd, kEps, 0);
  gpu::qk_norm_backward(d_dx.get(), d_dqw.get(), d_dqb.get(), d_dkw.get(), d_dkb.get(), d_g.get(), d_x.get(),
                        d_qw.get(), d_kw.get(), d_mean.get(), d_rstd.get(), BT, H, hd, scratch.get(), 0);
  CUDA_CHECK(cudaDeviceSynchronize());

  const auto h_out = d_out.download(), h_dx = d_dx.download();
  const double e_out = rel_err(to_f(h_out), out), e_dx = rel_err(to_f(h_dx), dx);
  const double e_mean = rel_err(d_mean.download(), mean), e_rstd = rel_err(d_rstd.download(), rstd);
  const double e_qw = rel_err(added(d_dqw.download(), dqw0), added(dqw, dqw0));
  const double e_qb = rel_err(added(d_dqb.download(), dqb0), added(dqb, dqb0));
  const double e_kw = rel_err(added(d_dkw.download(), dkw0), added(dkw, dkw0));
  const double e_kb = rel_err(added(d_dkb.download(), dkb0), added(dkb, dkb0));
  INFO("BT=", BT, " H=", H, " hd=", hd, " offset=", s.offset, " | out ", e_out, " mean ", e_mean, " rstd ", e_rstd,
       " dqkv ", e_dx, " dqw ", e_qw, " dqb ", e_qb, " dkw ", e_kw, " dkb ", e_kb);
  CHECK(e_out < 5e-3);
  CHECK(e_mean < 1e-5);
  CHECK(e_rstd < 1e-5);
  CHECK(e_dx < 5e-3);
  CHECK(e_qw < 1e-4);
  CHECK(e_qb < 1e-4);
  CHECK(e_kw < 1e-4);
  CHECK(e_kb < 1e-4);
  CHECK(v_part_identical(h_out, xb, BT, H, hd));  // v: forward copies, backward passes dout through
  CHECK(v_part_identical(h_dx, gb, BT, H, hd));
}
}  // namespace

TEST_CASE("qk_norm gpu: matches the CPU reference on the vectorised and general paths") {
  uint64_t seed = 12000;
  for (QkShape s : {QkShape{1, 1, 64, 0}, QkShape{5, 3, 64, 0}, QkShape{397, 12, 64, 0}, QkShape{1001, 12, 64, 0},
                    QkShape{37, 5, 32, 0}, QkShape{23, 7, 128, 0}, QkShape{13, 3, 96, 0}, QkShape{11, 4, 48, 0},
                    QkShape{9, 2, 40, 0}, QkShape{3, 2, 8, 0}, QkShape{7, 5, 16, 0}, QkShape{7, 3, 36, 0},
                    QkShape{17, 3, 100, 0}, QkShape{5, 3, 5, 0}, QkShape{50, 12, 64, 1}, QkShape{31, 1, 128, 1}})
    check_qk_norm(s, seed += 20);
}

TEST_CASE("qk_norm gpu: backward is deterministic") {
  for (int hd : {64, 36}) {
    const i64 BT = 1003;
    const int H = 6;
    const size_t n = (size_t)BT * 3 * H * hd, ns = (size_t)2 * BT * H;
    auto d_x = to_device(to_bf(randn_f(n, 12500 + hd))), d_g = to_device(to_bf(randn_f(n, 12501 + hd)));
    auto d_qw = to_device(to_bf(randn_f(hd, 12502 + hd))), d_qb = to_device(to_bf(randn_f(hd, 12503 + hd)));
    auto d_kw = to_device(to_bf(randn_f(hd, 12504 + hd))), d_kb = to_device(to_bf(randn_f(hd, 12505 + hd)));
    gpu::DeviceBuffer<bf16> d_out(n), d_dx(n);
    gpu::DeviceBuffer<float> d_mean(ns), d_rstd(ns), scratch(gpu::qk_norm_backward_scratch_floats(BT, H, hd));
    gpu::qk_norm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_qw.get(), d_qb.get(), d_kw.get(),
                         d_kb.get(), BT, H, hd, kEps, 0);
    std::vector<std::vector<float>> grads;  // per repetition: dqw, dqb, dkw, dkb concatenated
    for (int rep = 0; rep < 3; ++rep) {
      auto d_dqw = to_device(std::vector<float>(hd, 0.25f)), d_dqb = to_device(std::vector<float>(hd, -0.5f));
      auto d_dkw = to_device(std::vector<float>(hd, 0.75f)), d_dkb = to_device(std::vector<float>(hd, 1.f));
      gpu::qk_norm_backward(d_dx.get(), d_dqw.get(), d_dqb.get(), d_dkw.get(), d_dkb.get(), d_g.get(), d_x.get(),
                            d_qw.get(), d_kw.get(), d_mean.get(), d_rstd.get(), BT, H, hd, scratch.get(), 0);
      std::vector<float> all;
      for (const auto* b : {&d_dqw, &d_dqb, &d_dkw, &d_dkb}) {
        const auto h = b->download();
        all.insert(all.end(), h.begin(), h.end());
      }
      grads.push_back(all);
    }
    INFO("hd=", hd);
    for (int rep = 1; rep < 3; ++rep)
      CHECK(std::memcmp(grads[rep].data(), grads[0].data(), grads[0].size() * sizeof(float)) == 0);
  }
}
