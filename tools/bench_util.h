// Kernel benchmark harness (the spirit of llm.c's dev/cuda): check first, then time with warm-up, an L2
// flush before every timed run, CUDA events, and the median. Include from .cu benchmark files only.
#pragma once
#include <algorithm>
#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include "engine/cuda_buffer.h"
#include "engine/rng.h"
#include "kernels/types.h"

namespace vit::bench {

// Uniform bf16 values in [-a, a) written straight on the device (inputs of 100M+ elements), keyed by seed.
__global__ inline void fill_uniform_kernel(bf16* x, size_t n, uint64_t seed, float a) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = __float2bfloat16(a * (2.f * rng::uniform(seed, 3, i) - 1.f));
}
inline void fill_uniform(bf16* x, size_t n, uint64_t seed, float a) {
  fill_uniform_kernel<<<1024, 256>>>(x, n, seed, a);
  CUDA_CHECK_LAUNCH();
}

// Measured ceilings on the H100 of the GPU machine (docs/benchmarks.md); used for "fraction of ceiling".
constexpr double kPeakBf16Flops = 790e12;
constexpr double kCopyBytesPerSec = 3.0e12;

// A CUDA event owned for its lifetime (movable, so a std::vector can hold a run's events).
class Event {
 public:
  Event() { CUDA_CHECK(cudaEventCreate(&e_)); }
  ~Event() {
    if (e_) cudaEventDestroy(e_);
  }
  Event(Event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  Event& operator=(Event&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

class Timer {
 public:
  Timer() {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&l2_, cudaDevAttrL2CacheSize, dev));
    flush_ = gpu::DeviceBuffer<char>((size_t)l2_ * 2);
    CUDA_CHECK(cudaEventCreate(&a_));
    CUDA_CHECK(cudaEventCreate(&b_));
  }
  ~Timer() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // Median time in microseconds of fn() over `reps` runs after `warm` warm-ups, L2 flushed before each.
  double median_us(const std::function<void()>& fn, int reps = 50, int warm = 5, cudaStream_t s = 0) {
    for (int i = 0; i < warm; ++i) fn();
    CUDA_CHECK(cudaStreamSynchronize(s));
    std::vector<float> t(reps);
    for (int i = 0; i < reps; ++i) {
      CUDA_CHECK(cudaMemsetAsync(flush_.get(), i & 0xFF, flush_.bytes(), s));
      CUDA_CHECK(cudaEventRecord(a_, s));
      fn();
      CUDA_CHECK(cudaEventRecord(b_, s));
      CUDA_CHECK(cudaEventSynchronize(b_));
      CUDA_CHECK(cudaEventElapsedTime(&t[i], a_, b_));
    }
    std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
    return t[reps / 2] * 1e3;
  }

 private:
  int l2_ = 0;
  gpu::DeviceBuffer<char> flush_;
  cudaEvent_t a_{}, b_{};
};

// One result line; machine-readable prefix "BENCH" so the device script can collect a table.
inline void report(const char* name, double us, double flops, double bytes) {
  std::printf("BENCH %-40s %9.1f us", name, us);
  if (flops > 0) std::printf("  %7.1f TFLOP/s (%4.1f%% of peak)", flops / us * 1e-6, 100.0 * flops / us * 1e-6 / (kPeakBf16Flops * 1e-12));
  if (bytes > 0) std::printf("  %7.1f GB/s (%4.1f%% of copy)", bytes / us * 1e-3, 100.0 * bytes / us * 1e-3 / (kCopyBytesPerSec * 1e-9));
  std::printf("\n");
  std::fflush(stdout);
}

}  // namespace vit::bench
