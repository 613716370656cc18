#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gradcheck.h"
#include "kernels/linear.h"

using namespace vit;
using vit::test::randn;

namespace {

// Straight triple loop, the definition of out = x W^T + b (no blocking), to hold the blocked kernel to.
std::vector<double> naive_forward(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& b, i64 M, int K, int N) {
  std::vector<double> out(M * N);
  for (i64 i = 0; i < M; ++i)
    for (int n = 0; n < N; ++n) {
      double s = b.empty() ? 0.0 : b[n];
      for (int k = 0; k < K; ++k) s += x[i * K + k] * w[(i64)n * K + k];
      out[i * N + n] = s;
    }
  return out;
}

struct Shape {
  i64 M;
  int K, N;
};

}  // namespace

TEST_CASE("linear ref: forward matches the definition, with and without bias") {
  // Shapes cross the 8-row and 256-column tiles of the blocked loops.
  for (Shape s : {Shape{1, 3, 2}, Shape{17, 13, 11}, Shape{9, 260, 3}, Shape{3, 5, 259}}) {
    CAPTURE(s.M);
    CAPTURE(s.K);
    CAPTURE(s.N);
    auto x = randn(s.M * s.K, 11), w = randn((i64)s.N * s.K, 12), b = randn(s.N, 13);
    for (bool with_bias : {true, false}) {
      std::vector<double> out(s.M * s.N, std::numeric_limits<double>::quiet_NaN());
      ref::linear_forward(out.data(), x.data(), w.data(), with_bias ? b.data() : nullptr, s.M, s.K, s.N);
      CHECK(test::rel_err(out, naive_forward(x, w, with_bias ? b : std::vector<double>{}, s.M, s.K, s.N)) < 1e-14);
    }
  }
}

TEST_CASE("linear ref: a residual is added to the output, also in place") {
  const Shape s{17, 13, 259};
  auto x = randn(s.M * s.K, 21), w = randn((i64)s.N * s.K, 22), b = randn(s.N, 23), r = randn(s.M * s.N, 24);
  std::vector<double> plain(s.M * s.N), with(s.M * s.N);
  ref::linear_forward(plain.data(), x.data(), w.data(), b.data(), s.M, s.K, s.N);
  ref::linear_forward(with.data(), x.data(), w.data(), b.data(), s.M, s.K, s.N, r.data());
  for (size_t i = 0; i < plain.size(); ++i) plain[i] += r[i];
  CHECK(test::rel_err(with, plain) < 1e-14);
  ref::linear_forward(r.data(), x.data(), w.data(), b.data(), s.M, s.K, s.N, r.data());  // out == residual
  CHECK(test::rel_err(r, plain) < 1e-14);
}

TEST_CASE("linear ref: finite-difference gradients - dweight/dbias and dx (accumulate) add") {
  for (Shape s : {Shape{1, 3, 2}, Shape{5, 7, 4}, Shape{17, 13, 11}, Shape{9, 260, 3}, Shape{3, 5, 259}}) {
    CAPTURE(s.M);
    CAPTURE(s.K);
    CAPTURE(s.N);
    const uint64_t seed = 100 + s.M * 7 + s.K * 3 + s.N;
    auto x = randn(s.M * s.K, seed), w = randn((i64)s.N * s.K, seed + 1), b = randn(s.N, seed + 2);
    const auto wout = randn(s.M * s.N, seed + 3);  // the loss weights = dout
    std::vector<double> out(s.M * s.N);
    auto loss = [&] {
      ref::linear_forward(out.data(), x.data(), w.data(), b.data(), s.M, s.K, s.N);
      return test::dot(out, wout);
    };

    // dx written over NaN; dweight and dbias pre-filled with non-zero values they must add to.
    std::vector<double> dx(s.M * s.K, std::numeric_limits<double>::quiet_NaN());
    const auto dw0 = randn(w.size(), seed + 4), db0 = randn(b.size(), seed + 5);
    auto dw = dw0, db = db0;
    ref::linear_backward(dx.data(), dw.data(), db.data(), wout.data(), x.data(), w.data(), s.M, s.K, s.N, false);
    const double ex = test::grad_error(x, dx, loss);
    const double ew = test::grad_error(w, test::minus(dw, dw0), loss);
    const double eb = test::grad_error(b, test::minus(db, db0), loss);
    CHECK(ex < 1e-6);
    CHECK(ew < 1e-6);
    CHECK(eb < 1e-6);

    // dx_accumulate adds the same gradient onto what is there; null dx / dbias are skipped.
    const auto dx0 = randn(dx.size(), seed + 6);
    auto dx_acc = dx0, dw2 = dw0;
    ref::linear_backward(dx_acc.data(), dw2.data(), static_cast<double*>(nullptr), wout.data(), x.data(), w.data(), s.M,
                         s.K, s.N, true);
    CHECK(test::rel_err(test::minus(dx_acc, dx0), dx) < 1e-12);
    CHECK(test::rel_err(dw2, dw) < 1e-14);
    auto dw3 = dw0;
    ref::linear_backward(static_cast<double*>(nullptr), dw3.data(), static_cast<double*>(nullptr), wout.data(),
                         x.data(), w.data(), s.M, s.K, s.N, false);
    CHECK(test::rel_err(dw3, dw) < 1e-14);
  }
}

TEST_CASE("linear ref: float instance agrees with double") {
  const i64 M = 33;
  const int K = 40, N = 24;
  auto x = randn(M * K, 21), w = randn((i64)N * K, 22), b = randn(N, 23), d = randn(M * N, 24);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), bf(b.begin(), b.end()), df(d.begin(), d.end());
  std::vector<double> out(M * N), dx(M * K), dw(w.size()), db(N);
  std::vector<float> outf(M * N), dxf(M * K), dwf(w.size()), dbf(N);
  ref::linear_forward(out.data(), x.data(), w.data(), b.data(), M, K, N);
  ref::linear_forward(outf.data(), xf.data(), wf.data(), bf.data(), M, K, N);
  ref::linear_backward(dx.data(), dw.data(), db.data(), d.data(), x.data(), w.data(), M, K, N, false);
  ref::linear_backward(dxf.data(), dwf.data(), dbf.data(), df.data(), xf.data(), wf.data(), M, K, N, false);
  auto as_d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  // float32 rounding of sums of ~40 terms: ~1e-7 relative.
  CHECK(test::rel_err(as_d(outf), out) < 1e-5);
  CHECK(test::rel_err(as_d(dxf), dx) < 1e-5);
  CHECK(test::rel_err(as_d(dwf), dw) < 1e-5);
  CHECK(test::rel_err(as_d(dbf), db) < 1e-5);
}
