// Helpers for GPU-vs-CPU tests: bf16 conversion, random inputs, poisoned outputs, error norms.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/cuda_buffer.h"
#include "engine/rng.h"
#include "kernels/types.h"

namespace vit::test {

inline float to_f(bf16 x) { return __bfloat162float(x); }
inline bf16 to_bf(float x) { return __float2bfloat16(x); }

inline std::vector<float> randn_f(std::size_t n, uint64_t seed, float scale = 1.f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * (float)rng::normal(seed, 11, i);
  return v;
}
// Round through bf16 so the CPU reference sees exactly the values the GPU sees.
inline std::vector<float> bf_round(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = to_f(to_bf(v[i]));
  return r;
}
inline std::vector<bf16> to_bf(const std::vector<float>& v) {
  std::vector<bf16> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = to_bf(v[i]);
  return r;
}
inline std::vector<float> to_f(const std::vector<bf16>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = to_f(v[i]);
  return r;
}
inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// ‖a − b‖ / ‖b‖; any NaN (an element the kernel never wrote over the poison) gives infinity.
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

template <class T>
gpu::DeviceBuffer<T> to_device(const std::vector<T>& h) {
  gpu::DeviceBuffer<T> d(h.size());
  d.upload(h);
  return d;
}

}  // namespace vit::test
