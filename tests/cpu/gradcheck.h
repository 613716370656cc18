// Finite-difference gradient checking in float64, shared by every op test.
// Convention: a test defines a scalar loss L(x) = Σ w ⊙ f(x) with fixed random weights w, runs the op's
// backward with dout = w, and compares the analytic gradient with central differences of L.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/rng.h"

namespace vit::test {

// Fresh standard-normal values; every test passes its own seed so inputs differ between tests.
inline std::vector<double> randn(std::size_t n, uint64_t seed, double scale = 1.0) {
  std::vector<double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * rng::normal(seed, 7, i);
  return v;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ‖a − b‖ / ‖b‖ (‖b‖ floored so an all-zero reference needs an all-zero result).
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (std::isnan(num)) return INFINITY;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// Central differences of loss() with respect to every element of x (x is perturbed in place and restored).
inline std::vector<double> numeric_grad(std::vector<double>& x, const std::function<double()>& loss, double eps = 1e-6) {
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + eps;
    const double lp = loss();
    x[i] = x0 - eps;
    const double lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * eps);
  }
  return g;
}

// Relative error of an analytic gradient against central differences.
inline double grad_error(std::vector<double>& x, const std::vector<double>& analytic, const std::function<double()>& loss,
                         double eps = 1e-6) {
  return rel_err(analytic, numeric_grad(x, loss, eps));
}

// For "+=" checks: (after - before) elementwise.
inline std::vector<double> minus(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

}  // namespace vit::test
