// Bias gradients: dsum[c] += Σ_r x[r, c] over a row-major (M, N) bf16 matrix, in two deterministic stages
// (partials per row chunk in scratch, then added in order). Used where no other kernel already passes over
// the output gradient (the linear layer's fallback, attention's qkv bias for the non-resident backwards).
#pragma once
#include "kernels/types.h"

namespace vit::gpu {
// N must be a multiple of 8 and x 8-byte aligned (cuBLASLt's layers already need both). The number of row
// chunks depends on M, N and scratch_floats only, so the bits do too; one chunk adds straight into dsum.
void column_sums(float* dsum, const bf16* x, i64 M, int N, float* scratch, i64 scratch_floats, cudaStream_t stream);
}  // namespace vit::gpu
