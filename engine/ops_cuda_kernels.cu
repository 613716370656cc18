#include "engine/ops_cuda.h"

namespace vit::gpu {
namespace {
__global__ void add_f32_kernel(float* dst, const float* src, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) dst[i] += src[i];
}
// One block: the step's loss is a handful of numbers; a fixed-order sum keeps it deterministic.
__global__ void accumulate_loss_kernel(float* acc, const float* losses, int n, float scale) {
  __shared__ float part[256];
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += losses[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if ((int)threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) acc[0] += part[0] * scale;
}
}  // namespace

void add_f32_inplace(float* dst, const float* src, i64 n, cudaStream_t stream) {
  if (n <= 0) return;
  const int blocks = (int)std::min<i64>((n + 255) / 256, 132 * 16);
  add_f32_kernel<<<blocks, 256, 0, stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

void accumulate_loss(float* acc, const float* losses, int n, float scale, cudaStream_t stream) {
  accumulate_loss_kernel<<<1, 256, 0, stream>>>(acc, losses, n, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
