// Deterministic two-stage column sums (see column_sums.h).
#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/column_sums.h"
#include "kernels/cuda_vec.cuh"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {
namespace {

// Stage 1: block (x, y) sums rows [y·chunk, (y+1)·chunk) of columns [x·128, x·128 + 128): 32 threads × 4
// columns (one 8-byte load each) × 8 row lanes, lanes combined in a fixed order. One chunk: added straight
// into dbias; several: one row of partials per chunk, added up in order by the shared finishing kernel.
constexpr int kColLanes = 32, kRowLanes = 8, kColsPerThread = 4, kColsPerBlock = kColLanes * kColsPerThread;

__global__ void __launch_bounds__(kColLanes* kRowLanes)
    column_sums_kernel(float* __restrict__ out, bool accumulate, const bf16* __restrict__ dout, i64 M, int N,
                       i64 rows_per_chunk) {
  __shared__ float red[kRowLanes][kColsPerBlock];
  const int col = blockIdx.x * kColsPerBlock + threadIdx.x * kColsPerThread;
  const i64 r0 = blockIdx.y * rows_per_chunk, r1 = min(M, r0 + rows_per_chunk);
  float acc[kColsPerThread] = {0.f, 0.f, 0.f, 0.f};
  if (col < N) {  // N is a multiple of 8, so all four columns are inside
#pragma unroll 4
    for (i64 r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const uint2 v = *reinterpret_cast<const uint2*>(dout + r * N + col);
      acc[0] += detail::lo_f(v.x);
      acc[1] += detail::hi_f(v.x);
      acc[2] += detail::lo_f(v.y);
      acc[3] += detail::hi_f(v.y);
    }
  }
#pragma unroll
  for (int j = 0; j < kColsPerThread; ++j) red[threadIdx.y][threadIdx.x * kColsPerThread + j] = acc[j];
  __syncthreads();
  const int t = threadIdx.y * kColLanes + threadIdx.x;  // 256 threads, 128 columns
  const int c = blockIdx.x * kColsPerBlock + t;
  if (t < kColsPerBlock && c < N) {
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < kRowLanes; ++k) s += red[k][t];
    if (accumulate)
      out[c] += s;
    else
      out[(i64)blockIdx.y * N + c] = s;
  }
}

}  // namespace

void column_sums(float* dbias, const bf16* dout, i64 M, int N, float* scratch, i64 scratch_floats,
                 cudaStream_t stream) {
  VIT_ASSERT(M >= 0 && N > 0 && N % 8 == 0, "column_sums: N must be a positive multiple of 8, got ", N);
  if (M == 0) return;
  const int col_blocks = (N + kColsPerBlock - 1) / kColsPerBlock;
  const auto [chunks, rows_per_chunk] = detail::row_chunks(M, col_blocks, scratch ? scratch_floats / N : 1);
  const dim3 grid(col_blocks, (unsigned)chunks), block(kColLanes, kRowLanes);
  if (chunks == 1) {
    column_sums_kernel<<<grid, block, 0, stream>>>(dbias, true, dout, M, N, rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    return;
  }
  column_sums_kernel<<<grid, block, 0, stream>>>(scratch, false, dout, M, N, rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  detail::finish_partial_sums(dbias, nullptr, scratch, (int)chunks, N, N, stream);
}


}  // namespace vit::gpu
