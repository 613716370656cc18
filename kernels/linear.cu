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
#include "kernels/column_sums.h"
#include "kernels/cuda_vec.cuh"
#include "kernels/gelu.h"
#include "kernels/linear.h"

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
    if (dbias) column_sums(dbias, dout, M, N, ctx.scratch(), GemmContext::kScratchFloats, stream);
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
