// Layer norm CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs): the fast
// register path for C in {200, 384, 768, 1024, 1280, 1536}, the general path (odd C, C > 1536, misaligned
// pointers), dx written and accumulated, dweight/dbias accumulated into non-zero buffers, determinism.
//
// Tolerances: bf16 outputs (out, dx) carry one bf16 rounding, ≤ 2^-9 relative per element (≈1.1e-3 RMS),
// so 5e-3 in norm leaves room for fp32 reassociation; mean/rstd are fp32 row statistics (1e-5);
// dweight/dbias are fp32 sums over up to 5000 rows in another order than the CPU's double sums (1e-4).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/layernorm.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

namespace {
constexpr float kEps = 1e-5f;

// A device copy of h starting `offset` elements into the allocation (offset 1 breaks 16-byte alignment).
template <class T>
struct Offset {
  gpu::DeviceBuffer<T> buf;
  int off;
  Offset(const std::vector<T>& h, int offset) : buf(h.size() + offset), off(offset) {
    std::vector<T> padded(offset, T{});
    padded.insert(padded.end(), h.begin(), h.end());
    buf.upload(padded);
  }
  T* get() const { return buf.get() + off; }
  std::vector<T> download() const {
    auto all = buf.download();
    return std::vector<T>(all.begin() + off, all.end());
  }
};

std::vector<double> diff(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = (double)a[i] - b[i];
  return r;
}
double rel_err_d(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

struct LnShape {
  i64 rows;
  int C;
  int offset;  // 0: aligned; 1: every activation pointer misaligned (general path)
};

// with_sum: also dsum += the column sums of the stored dx (checked against the CPU sum of the GPU's own dx,
// 1e-5, and against the float twin's unrounded dx at the bf16 tolerance).
void check_layernorm(const LnShape& s, bool acc, uint64_t seed, bool with_sum = false) {
  const i64 rows = s.rows;
  const int C = s.C;
  const size_t n = (size_t)rows * C;
  auto x = randn_f(n, seed, 2.f);
  for (auto& v : x) v += 0.7f;
  x = bf_round(x);
  auto w = randn_f(C, seed + 1, 0.3f);
  for (auto& v : w) v += 1.f;
  w = bf_round(w);
  const auto b = bf_round(randn_f(C, seed + 2, 0.2f));
  const auto g = bf_round(randn_f(n, seed + 3));
  const auto dx0 = bf_round(randn_f(n, seed + 4));
  const auto dw0 = randn_f(C, seed + 5), db0 = randn_f(C, seed + 6), ds0 = randn_f(C, seed + 7);

  // CPU twin in float.
  std::vector<float> out(n), mean(rows), rstd(rows), dx = dx0, dw = dw0, db = db0, ds = ds0;
  ref::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows, C, kEps);
  ref::layernorm_backward(dx.data(), dw.data(), db.data(), g.data(), x.data(), w.data(), mean.data(), rstd.data(), rows,
                          C, acc, with_sum ? ds.data() : nullptr);

  Offset<bf16> d_x(to_bf(x), s.offset), d_g(to_bf(g), s.offset), d_out(std::vector<bf16>(n), s.offset);
  Offset<bf16> d_dx(to_bf(dx0), s.offset);
  auto d_w = to_device(to_bf(w)), d_b = to_device(to_bf(b));
  gpu::DeviceBuffer<float> d_mean(rows), d_rstd(rows), d_dw = to_device(dw0), d_db = to_device(db0);
  gpu::DeviceBuffer<float> d_ds = to_device(ds0);
  gpu::DeviceBuffer<float> scratch(gpu::layernorm_backward_scratch_floats(rows, C));
  d_out.buf.poison();
  d_mean.poison();
  d_rstd.poison();
  scratch.poison();
  if (!acc) d_dx.buf.poison();  // dx (=) must be fully written

  gpu::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(), rows, C, kEps, 0);
  gpu::layernorm_backward(d_dx.get(), d_dw.get(), d_db.get(), d_g.get(), d_x.get(), d_w.get(), d_mean.get(),
                          d_rstd.get(), rows, C, acc, scratch.get(), 0, with_sum ? d_ds.get() : nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  if (with_sum) {
    const auto gdx = to_f(d_dx.download());
    std::vector<double> own(C, 0.0);
    for (i64 r = 0; r < rows; ++r)
      for (int c = 0; c < C; ++c) own[c] += gdx[r * C + c];
    const auto got = d_ds.download();
    std::vector<float> added(C), added_own(C), added_ref(C);
    for (int c = 0; c < C; ++c)
      added[c] = got[c] - ds0[c], added_own[c] = (float)own[c], added_ref[c] = ds[c] - ds0[c];
    INFO("dsum rows=", rows, " C=", C, " offset=", s.offset, " acc=", acc);
    CHECK(rel_err(added, added_own) < 1e-5);
    CHECK(rel_err(added, added_ref) < 5e-3);
  } else {
    CHECK(d_ds.download() == ds0);  // no dsum: untouched
  }

  const double e_out = rel_err(to_f(d_out.download()), out);
  const double e_mean = rel_err(d_mean.download(), mean), e_rstd = rel_err(d_rstd.download(), rstd);
  const double e_dx = rel_err(to_f(d_dx.download()), dx);
  const double e_dw = rel_err_d(diff(d_dw.download(), dw0), diff(dw, dw0));
  const double e_db = rel_err_d(diff(d_db.download(), db0), diff(db, db0));
  INFO("rows=", rows, " C=", C, " offset=", s.offset, " acc=", acc, " | out ", e_out, " mean ", e_mean, " rstd ", e_rstd,
       " dx ", e_dx, " dweight ", e_dw, " dbias ", e_db);
  CHECK(e_out < 5e-3);
  CHECK(e_mean < 1e-5);
  CHECK(e_rstd < 1e-5);
  CHECK(e_dx < 5e-3);
  CHECK(e_dw < 1e-4);
  CHECK(e_db < 1e-4);
}
}  // namespace

TEST_CASE("layernorm gpu: matches the CPU reference on fast and general paths") {
  uint64_t seed = 9000;
  for (LnShape s : {LnShape{1, 768, 0}, LnShape{5000, 768, 0}, LnShape{37, 384, 0}, LnShape{130, 1024, 0},
                    LnShape{7, 1280, 0}, LnShape{9, 1536, 0}, LnShape{33, 200, 0}, LnShape{3, 5, 0},
                    LnShape{17, 37, 0}, LnShape{300, 2056, 0}, LnShape{50, 768, 1}, LnShape{2500, 40, 0}})
    for (bool acc : {false, true}) check_layernorm(s, acc, seed += 10);
}

TEST_CASE("layernorm gpu: backward with dsum (the column sums of dx) on fast and general paths") {
  uint64_t seed = 9500;
  for (LnShape s : {LnShape{1, 768, 0}, LnShape{5000, 768, 0}, LnShape{130, 1024, 0}, LnShape{9, 1536, 0},
                    LnShape{17, 37, 0}, LnShape{300, 2056, 0}, LnShape{50, 768, 1}})
    for (bool acc : {false, true}) check_layernorm(s, acc, seed += 10, true);
}

TEST_CASE("layernorm gpu: backward is deterministic") {
  for (int C : {768, 37}) {
    const i64 rows = 3001;
    const size_t n = (size_t)rows * C;
    auto d_x = to_device(to_bf(randn_f(n, 9500 + C))), d_g = to_device(to_bf(randn_f(n, 9501 + C)));
    auto d_w = to_device(to_bf(randn_f(C, 9502 + C))), d_b = to_device(to_bf(randn_f(C, 9503 + C)));
    gpu::DeviceBuffer<bf16> d_out(n), d_dx(n);
    gpu::DeviceBuffer<float> d_mean(rows), d_rstd(rows), scratch(gpu::layernorm_backward_scratch_floats(rows, C));
    gpu::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(), d_b.get(), rows, C, kEps, 0);
    std::vector<std::vector<float>> dws, dbs;
    for (int rep = 0; rep < 3; ++rep) {
      auto d_dw = to_device(std::vector<float>(C, 0.25f)), d_db = to_device(std::vector<float>(C, -0.5f));
      gpu::layernorm_backward(d_dx.get(), d_dw.get(), d_db.get(), d_g.get(), d_x.get(), d_w.get(), d_mean.get(),
                              d_rstd.get(), rows, C, false, scratch.get(), 0);
      dws.push_back(d_dw.download());
      dbs.push_back(d_db.download());
    }
    for (int rep = 1; rep < 3; ++rep) {
      CHECK(std::memcmp(dws[rep].data(), dws[0].data(), C * sizeof(float)) == 0);
      CHECK(std::memcmp(dbs[rep].data(), dbs[0].data(), C * sizeof(float)) == 0);
    }
  }
}
