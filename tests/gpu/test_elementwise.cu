// Elementwise CUDA kernels against the CPU reference (float, on the same bf16-rounded inputs): add (also
// in place), layer scale (dgamma accumulated into a non-zero buffer, deterministic), dropout and drop path
// (the same masks as the CPU: identical zero patterns; p = 0 a bitwise copy), casts (bit-exact).
//
// Tolerances: bf16 outputs carry one rounding of an fp32 value (≤ 2^-9 relative, ≈1.1e-3 RMS): 5e-3 in
// norm. dgamma is an fp32 sum over up to 5000 rows in another order than the CPU's double sum: 1e-4.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/elementwise.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;

namespace {
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
  Offset(size_t n, int offset) : buf(n + offset), off(offset) { buf.poison(); }
  T* get() const { return buf.get() + off; }
  std::vector<T> download() const {
    auto all = buf.download();
    return std::vector<T>(all.begin() + off, all.end());
  }
};

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
// Same positions exactly zero in both (the dropout masks agree).
bool same_zeros(const std::vector<float>& a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if ((a[i] == 0.f) != (b[i] == 0.f)) return false;
  return true;
}
bool same_bits(const std::vector<bf16>& a, const std::vector<bf16>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(bf16)) == 0;
}
}  // namespace

TEST_CASE("elementwise gpu: add") {
  uint64_t seed = 9200;
  for (i64 n : {1, 13, 4101})
    for (int off : {0, 1}) {
      const auto a = bf_round(randn_f(n, seed++)), b = bf_round(randn_f(n, seed++));
      std::vector<float> out(n);
      ref::add(out.data(), a.data(), b.data(), n);
      Offset<bf16> da(to_bf(a), off), db(to_bf(b), off), dout(n, off);
      gpu::add(dout.get(), da.get(), db.get(), n, 0);
      gpu::add(da.get(), da.get(), db.get(), n, 0);  // in place: out aliases a
      INFO("n=", n, " offset=", off);
      CHECK(rel_err(to_f(dout.download()), out) < 5e-3);
      CHECK(same_bits(da.download(), dout.download()));
    }
}

TEST_CASE("elementwise gpu: layer scale forward and backward") {
  uint64_t seed = 9300;
  struct S {
    i64 rows;
    int C, off;
  };
  for (S s : {S{1, 768, 0}, S{5000, 768, 0}, S{17, 37, 0}, S{50, 768, 1}, S{3000, 40, 0}, S{7, 1000, 0}}) {
    const size_t n = (size_t)s.rows * s.C;
    const auto x = bf_round(randn_f(n, seed++)), gamma = bf_round(randn_f(s.C, seed++, 0.1f));
    const auto g = bf_round(randn_f(n, seed++));
    const auto dg0 = randn_f(s.C, seed++);
    std::vector<float> out(n), dx(n), dg = dg0;
    ref::layer_scale_forward(out.data(), x.data(), gamma.data(), s.rows, s.C);
    ref::layer_scale_backward(dx.data(), dg.data(), g.data(), x.data(), gamma.data(), s.rows, s.C);
    Offset<bf16> d_x(to_bf(x), s.off), d_g(to_bf(g), s.off), d_out(n, s.off), d_dx(n, s.off);
    auto d_gamma = to_device(to_bf(gamma));
    auto d_dg = to_device(dg0);
    gpu::DeviceBuffer<float> scratch(gpu::layer_scale_backward_scratch_floats(s.rows, s.C));
    scratch.poison();
    gpu::layer_scale_forward(d_out.get(), d_x.get(), d_gamma.get(), s.rows, s.C, 0);
    gpu::layer_scale_backward(d_dx.get(), d_dg.get(), d_g.get(), d_x.get(), d_gamma.get(), s.rows, s.C, scratch.get(), 0);
    const auto dg_gpu = d_dg.download();
    const double eo = rel_err(to_f(d_out.download()), out), ex = rel_err(to_f(d_dx.download()), dx);
    const double eg = rel_err_d(diff(dg_gpu, dg0), diff(dg, dg0));
    INFO("rows=", s.rows, " C=", s.C, " offset=", s.off, " out ", eo, " dx ", ex, " dgamma ", eg);
    CHECK(eo < 5e-3);
    CHECK(ex < 5e-3);
    CHECK(eg < 1e-4);
    // Deterministic: the same accumulation again from the same start gives the same bits.
    auto d_dg2 = to_device(dg0);
    gpu::layer_scale_backward(d_dx.get(), d_dg2.get(), d_g.get(), d_x.get(), d_gamma.get(), s.rows, s.C, scratch.get(), 0);
    CHECK(std::memcmp(d_dg2.download().data(), dg_gpu.data(), s.C * sizeof(float)) == 0);
  }
}

TEST_CASE("elementwise gpu: dropout uses the CPU's mask") {
  uint64_t seed = 9400;
  for (i64 n : {100003, 9})
    for (int off : {0, 1}) {
      const float p = 0.3f;
      const auto x = bf_round(randn_f(n, seed++)), g = bf_round(randn_f(n, seed++));
      std::vector<float> out(n), dx(n);
      ref::dropout_forward(out.data(), x.data(), n, p, 1234, 17);
      ref::dropout_backward(dx.data(), g.data(), n, p, 1234, 17);
      Offset<bf16> d_x(to_bf(x), off), d_g(to_bf(g), off), d_out(n, off), d_dx(n, off);
      gpu::dropout_forward(d_out.get(), d_x.get(), n, p, 1234, 17, 0);
      gpu::dropout_backward(d_dx.get(), d_g.get(), n, p, 1234, 17, 0);
      const auto go = to_f(d_out.download()), gd = to_f(d_dx.download());
      INFO("n=", n, " offset=", off);
      CHECK(same_zeros(go, out));
      CHECK(same_zeros(gd, dx));
      CHECK(rel_err(go, out) < 5e-3);
      CHECK(rel_err(gd, dx) < 5e-3);
      // p = 0: a bitwise copy.
      gpu::dropout_forward(d_out.get(), d_x.get(), n, 0.f, 1234, 17, 0);
      CHECK(same_bits(d_out.download(), d_x.download()));
    }
}

TEST_CASE("elementwise gpu: drop path uses the CPU's per-sample mask") {
  uint64_t seed = 9500;
  struct S {
    int B;
    i64 per;
    int off;
  };
  for (S s : {S{37, 197 * 768, 0}, S{37, 7, 0}, S{300, 16, 1}}) {
    const float p = 0.4f;
    const size_t n = (size_t)s.B * s.per;
    const auto x = bf_round(randn_f(n, seed++)), g = bf_round(randn_f(n, seed++));
    std::vector<float> out(n), dx(n);
    ref::drop_path_forward(out.data(), x.data(), s.B, s.per, p, 77, 5);
    ref::drop_path_backward(dx.data(), g.data(), s.B, s.per, p, 77, 5);
    Offset<bf16> d_x(to_bf(x), s.off), d_g(to_bf(g), s.off), d_out(n, s.off), d_dx(n, s.off);
    gpu::drop_path_forward(d_out.get(), d_x.get(), s.B, s.per, p, 77, 5, 0);
    gpu::drop_path_backward(d_dx.get(), d_g.get(), s.B, s.per, p, 77, 5, 0);
    const auto go = to_f(d_out.download()), gd = to_f(d_dx.download());
    INFO("B=", s.B, " per_sample=", s.per, " offset=", s.off);
    CHECK(same_zeros(go, out));
    CHECK(same_zeros(gd, dx));
    CHECK(rel_err(go, out) < 5e-3);
    CHECK(rel_err(gd, dx) < 5e-3);
    gpu::drop_path_forward(d_out.get(), d_x.get(), s.B, s.per, 0.f, 77, 5, 0);
    CHECK(same_bits(d_out.download(), d_x.download()));
  }
}

TEST_CASE("elementwise gpu: casts are bit-exact") {
  for (i64 n : {1, 8, 1001})
    for (int off : {0, 1}) {
      auto x = randn_f(n, 9600 + n, 10.f);
      Offset<float> d_x(x, off);
      Offset<bf16> d_b(n, off);
      Offset<float> d_f(n, off);
      gpu::cast_f32_to_bf16(d_b.get(), d_x.get(), n, 0);
      gpu::cast_bf16_to_f32(d_f.get(), d_b.get(), n, 0);
      const auto hb = d_b.download();
      INFO("n=", n, " offset=", off);
      CHECK(same_bits(hb, to_bf(x)));  // round-to-nearest-even, as the host conversion
      CHECK(d_f.download() == to_f(hb));
      // accumulate: fp32 += widened bf16, into a buffer that is not zero
      auto base = randn_f(n, 9700 + n, 3.f);
      Offset<float> d_acc(base, off);
      gpu::add_bf16_to_f32(d_acc.get(), d_b.get(), n, 0);
      std::vector<float> want(n);
      const auto wide = to_f(hb);
      for (i64 i = 0; i < n; ++i) want[i] = base[i] + wide[i];
      CHECK(d_acc.download() == want);
    }
}
