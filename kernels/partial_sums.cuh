// Second stage of the deterministic two-stage column reductions (layer norm dweight/dbias, layer scale
// dgamma): the first stage writes one row of partial sums per block into scratch, partial[parts][n];
// this kernel adds Σ_p partial[p][i] (always in the same order) into the fp32 gradient. No atomics, so
// the result is bit-identical from run to run. Internal to kernels/*.cu.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>

#include "engine/cuda_check.h"
#include "kernels/types.h"

namespace vit::gpu::detail {

// Upper bound on parts (first-stage blocks), which bounds the scratch: parts · n floats.
constexpr int kMaxParts = 1024;

// Columns [0, n_a) go to out_a, [n_a, n) to out_b (layer norm packs dweight then dbias in one row).
template <int kColumns = 32, int kLanes = 32>
__global__ void __launch_bounds__(kColumns * kLanes)
    finish_partial_sums_kernel(float* __restrict__ out_a, float* __restrict__ out_b,
                               const float* __restrict__ partial, int parts, int n_a, int n) {
  __shared__ float red[kLanes][kColumns + 1];
  const int i = blockIdx.x * kColumns + threadIdx.x;
  float s = 0.f;
  if (i < n)
    for (int p = threadIdx.y; p < parts; p += kLanes) s += partial[(i64)p * n + i];
  red[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < n) {
    float t = 0.f;
    for (int k = 0; k < kLanes; ++k) t += red[k][threadIdx.x];
    if (i < n_a) out_a[i] += t;
    else out_b[i - n_a] += t;
  }
}

// How a (rows × col_blocks) first stage splits its rows: about kChunkTargetBlocks blocks (a constant, not the
// SM count, so the bits are the same on every GPU), at least kMinRowsPerChunk rows each, at most max_chunks
// (and kMaxParts) chunks. Depends on the shape only, so the summation order (and the bits) do too.
struct RowChunks {
  i64 chunks, rows_per_chunk;
};
constexpr int kChunkTargetBlocks = 1024;
constexpr i64 kMinRowsPerChunk = 64;
inline RowChunks row_chunks(i64 rows, int col_blocks, i64 max_chunks) {
  i64 chunks = (kChunkTargetBlocks + col_blocks - 1) / col_blocks;
  chunks = std::min({chunks, (rows + kMinRowsPerChunk - 1) / kMinRowsPerChunk, max_chunks, (i64)kMaxParts});
  chunks = std::max<i64>(chunks, 1);
  const i64 per = (rows + chunks - 1) / chunks;
  return {(rows + per - 1) / per, per};
}

inline void finish_partial_sums(float* out_a, float* out_b, const float* partial, int parts, int n_a, int n,
                                cudaStream_t stream) {
  if (n <= 0 || parts <= 0) return;
  finish_partial_sums_kernel<<<(n + 31) / 32, dim3(32, 32), 0, stream>>>(out_a, out_b, partial, parts, n_a, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu::detail
