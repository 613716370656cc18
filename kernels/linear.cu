// CUDA linear layer: cuBLASLt GEMMs through the cached plans of engine/gemm.h, plus a deterministic
// column-sum kernel for the bias gradient. (cuBLASLt's BGRADB epilogue was measured slower on H100: it runs
// its own reduction kernel, and it overwrites instead of accumulating; docs/benchmarks.md, session 4.)
//
// Row-major X (r × c) is column-major X^T (c × r) with the same leading dimension c, so:
//   out (M, N)  = x · W^T      ->  out^T (N × M)  = op_T(W^T as stored, K × N) · x^T (K × M)      "TN"
//   dx  (M, K)  = dout · W     ->  dx^T  (K × M)  = W^T (K × N) · dout^T (N × M)                   "NN"
//   dW  (N, K) += dout^T · x   ->  dW^T  (K × N) += x^T (K × M) · op_T(dout^T as stored, N × M)    "NT"
#include <algorithm>
#include <utility>

#include "engine/gemm.h"
#include "kernels/cuda_vec.cuh"
#include "kernels/gelu.h"
#include "kernels/linear.h"
#include "kernels/partial_sums.cuh"

namespace vit::gpu {

namespace {

void check_shape(const char* what, i64 M, int K, int N) {
  VIT_REQUIRE(M >= 0 && K > 0 && N > 0, what, ": bad shape M=", M, " K=", K, " N=", N);
  VIT_REQUIRE(K % 8 == 0 && N % 8 == 0, what, ": cuBLASLt bf16 GEMMs need K (in features) and N (out features) to be ",
              "multiples of 8 for 16-byte rows; got M=", M, " K=", K, " N=", N,
              ". Pad the layer (e.g. the classifier head's classes) to a multiple of 8.");
}
void check_aligned(const char* what, const char* name, const void* p) {
  VIT_REQUIRE(p == nullptr || detail::aligned16(p), what, ": ", name, " must be 16-byte aligned for cuBLASLt (got ", p,
              ")");
}

// ---- bias gradient: dbias[c] += Σ_r dout[r, c], in two deterministic stages ----
// Stage 1: block (x, y) sums rows [y·chunk, (y+1)·chunk) of columns [x·128, x·128 + 128): 32 threads × 4
// columns (one 8-byte load each) × 8 row lanes, lanes combined in a fixed order. One chunk: added straight
// into dbias; several: one row of partials per chunk, added up in order by the shared finishing kernel.
constexpr int kColLanes = 32, kRowLanes = 8, kColsPerThread = 4, kColsPerBlock = kColLanes * kColsPerThread;
// Enough blocks to fill an H100 several times; a constant (not the SM count) keeps the bits GPU-independent.
constexpr int kTargetBlocks = 1024;
constexpr i64 kMinRowsPerChunk = 64;

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

void column_sums(GemmContext& ctx, float* dbias, const bf16* dout, i64 M, int N, cudaStream_t stream) {
  const int col_blocks = (N + kColsPerBlock - 1) / kColsPerBlock;
  // Chunks depend on the shape only, so the summation order (and the bits) do too.
  i64 chunks = (kTargetBlocks + col_blocks - 1) / col_blocks;
  chunks = std::min(
      {chunks, (M + kMinRowsPerChunk - 1) / kMinRowsPerChunk, GemmContext::kScratchFloats / N, (i64)detail::kMaxParts});
  chunks = std::max<i64>(chunks, 1);
  const i64 rows_per_chunk = (M + chunks - 1) / chunks;
  chunks = (M + rows_per_chunk - 1) / rows_per_chunk;
  const dim3 grid(col_blocks, (unsigned)chunks), block(kColLanes, kRowLanes);
  if (chunks == 1) {
    column_sums_kernel<<<grid, block, 0, stream>>>(dbias, true, dout, M, N, rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    return;
  }
  column_sums_kernel<<<grid, block, 0, stream>>>(ctx.scratch(), false, dout, M, N, rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  detail::finish_partial_sums(dbias, nullptr, ctx.scratch(), (int)chunks, N, N, stream);
}

}  // namespace

void linear_forward(GemmContext& ctx, bf16* out, const bf16* x, const bf16* weight, const bf16* bias, i64 M, int K,
                    int N, cudaStream_t stream, bf16* gelu_out, bool gelu_tanh, const bf16* residual) {
  const char* what = "linear_forward";
  check_shape(what, M, K, N);
  for (auto [name, p] : {std::pair<const char*, const void*>{"out", out},
                         {"x", x},
                         {"weight", weight},
                         {"bias", bias},
                         {"gelu_out", gelu_out},
                         {"residual", residual}})
    check_aligned(what, name, p);
  VIT_ASSERT(out && x && weight, "linear_forward: null out, x or weight");
  VIT_ASSERT(!(residual && gelu_out), "linear_forward: a residual is added after the linear, not after its GELU");
  if (M == 0) return;
  GemmOp op;
  op.m = N, op.n = M, op.k = K;
  op.trans_a = true, op.trans_b = false;
  op.lda = K, op.ldb = K, op.ldd = N;
  op.ab = op.d = GemmDtype::bf16;
  GemmArgs args;
  args.a = weight, args.b = x, args.bias = bias;
  if (gelu_out && gelu_tanh && ctx.fuse_gelu()) {
    // One pass: aux = x W^T + b (the pre-activation backward needs), D = GELU_tanh(aux).
    op.epilogue = bias ? GemmEpilogue::gelu_aux_bias : GemmEpilogue::gelu_aux;
    args.d = gelu_out, args.aux = out;
    ctx.matmul(op, args, stream);
    return;
  }
  op.epilogue = bias ? GemmEpilogue::bias : GemmEpilogue::none;
  args.d = out;
  if (residual) args.c = residual, args.beta = 1.f;
  ctx.matmul(op, args, stream);
  if (gelu_out) gelu_forward(gelu_out, out, M * N, gelu_tanh, stream);
}

void linear_backward(GemmContext& ctx, bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x,
                     const bf16* weight, i64 M, int K, int N, bool dx_accumulate, cudaStream_t stream) {
  const char* what = "linear_backward";
  check_shape(what, M, K, N);
  for (auto [name, p] : {std::pair<const char*, const void*>{"dx", dx},
                         {"dweight", dweight},
                         {"dbias", dbias},
                         {"dout", dout},
                         {"x", x},
                         {"weight", weight}})
    check_aligned(what, name, p);
  VIT_ASSERT(dweight && dout && x && weight, "linear_backward: null dweight, dout, x or weight");
  if (M == 0) return;
  {
    GemmOp op;  // dW^T (K × N, fp32) += x^T (K × M) · dout (M × N)
    op.m = K, op.n = N, op.k = M;
    op.trans_a = false, op.trans_b = true;
    op.lda = K, op.ldb = N, op.ldd = K;
    op.ab = GemmDtype::bf16, op.d = GemmDtype::f32;
    GemmArgs args;
    args.a = x, args.b = dout, args.d = dweight, args.beta = 1.f;
    if (dbias) column_sums(ctx, dbias, dout, M, N, stream);
    ctx.matmul(op, args, stream);
  }
  if (dx) {
    GemmOp op;  // dx^T (K × M) = W^T (K × N) · dout^T (N × M)
    op.m = K, op.n = M, op.k = N;
    op.trans_a = false, op.trans_b = false;
    op.lda = K, op.ldb = N, op.ldd = K;
    op.ab = op.d = GemmDtype::bf16;
    GemmArgs args;
    args.a = weight, args.b = dout, args.d = dx, args.beta = dx_accumulate ? 1.f : 0.f;
    ctx.matmul(op, args, stream);
  }
}

}  // namespace vit::gpu
