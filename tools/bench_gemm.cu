// GEMMs of a ViT-B/16 block at batch 256 (M = 50432 rows): qkv 768->2304, proj 768->768, fc1 768->3072,
// fc2 3072->768; each forward (x W^T + b) and both backward GEMMs (dx = dout W, dW += dout^T x in fp32).
//   1. correctness: kernels/linear.cu against the CPU twin at M = 257 for every layer shape;
//   2. timing: the GemmContext path against a bare cuBLASLt call (descriptors built outside the timed
//      loop, the heuristic's first algorithm) -- the wrapper must cost < 5% -- and the best of the
//      heuristic's top 8 algorithms (what autotuning could gain);
//   3. fc1 with GELU: the fused GELU_AUX_BIAS epilogue against bias epilogue + separate GELU kernel.
// Usage: bench_gemm [M]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "engine/gemm.h"
#include "engine/rng.h"
#include "kernels/elementwise.h"
#include "kernels/gelu.h"
#include "kernels/linear.h"
#include "tools/bench_util.h"

using namespace vit;
using vit::gpu::DeviceBuffer;

namespace {

// Uniform values in [-scale, scale) from the counter RNG, generated on the device (no host round trip).
__global__ void fill_bf16(bf16* p, i64 n, uint64_t seed, float scale) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    p[i] = __float2bfloat16(scale * (2.f * rng::uniform(seed, 0, i) - 1.f));
}
__global__ void fill_f32(float* p, i64 n, uint64_t seed, float scale) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x)
    p[i] = scale * (2.f * rng::uniform(seed, 0, i) - 1.f);
}
void fill(bf16* p, i64 n, uint64_t seed, float scale) {
  fill_bf16<<<1024, 256>>>(p, n, seed, scale);
  CUDA_CHECK_LAUNCH();
}
void fill(float* p, i64 n, uint64_t seed, float scale) {
  fill_f32<<<1024, 256>>>(p, n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

std::vector<float> download_f(const bf16* p, i64 n) {
  std::vector<bf16> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<float> r(n);
  for (i64 i = 0; i < n; ++i) r[i] = __bfloat162float(h[i]);
  return r;
}
std::vector<float> download_f(const float* p, i64 n) {
  std::vector<float> r(n);
  CUDA_CHECK(cudaMemcpy(r.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return r;
}
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    den += (double)b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

struct Layer {
  const char* name;
  int K, N;
};
// One GEMM of a layer: which one, the problem and its operands.
struct Gemm {
  const char* what;
  gpu::GemmOp op;
  gpu::GemmArgs args;
};

constexpr Layer kLayers[] = {{"qkv", 768, 2304}, {"proj", 768, 768}, {"fc1", 768, 3072}, {"fc2", 3072, 768}};

// Checks kernels/linear.cu against ref::linear_* at a small odd M for one layer shape. Returns ok.
bool check_layer(gpu::GemmContext& ctx, const Layer& L, i64 M) {
  const int K = L.K, N = L.N;
  DeviceBuffer<bf16> x(M * K), w((i64)N * K), b(N), dout(M * N), out(M * N), dx(M * K);
  DeviceBuffer<float> dw((i64)N * K), db(N);
  fill(x.get(), M * K, 1, 1.f);
  fill(w.get(), (i64)N * K, 2, 1.f / std::sqrt((float)K));
  fill(b.get(), N, 3, 1.f);
  fill(dout.get(), M * N, 4, 1.f);
  CUDA_CHECK(cudaMemset(dw.get(), 0, dw.bytes()));
  CUDA_CHECK(cudaMemset(db.get(), 0, db.bytes()));
  gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), M, K, N, 0);
  gpu::linear_backward(ctx, dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), M, K, N, false, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto xh = download_f(x.get(), M * K), wh = download_f(w.get(), (i64)N * K), bh = download_f(b.get(), N);
  const auto dh = download_f(dout.get(), M * N);
  std::vector<float> out_ref(M * N), dx_ref(M * K), dw_ref((size_t)N * K, 0.f), db_ref(N, 0.f);
  ref::linear_forward(out_ref.data(), xh.data(), wh.data(), bh.data(), M, K, N);
  ref::linear_backward(dx_ref.data(), dw_ref.data(), db_ref.data(), dh.data(), xh.data(), wh.data(), M, K, N, false);
  const double e_out = rel_err(download_f(out.get(), M * N), out_ref),
               e_dx = rel_err(download_f(dx.get(), M * K), dx_ref);
  const double e_dw = rel_err(download_f(dw.get(), (i64)N * K), dw_ref),
               e_db = rel_err(download_f(db.get(), N), db_ref);
  // bf16 outputs: one rounding (~2e-3); fp32 gradients: summation order only.
  const bool ok = e_out < 1e-2 && e_dx < 1e-2 && e_dw < 1e-4 && e_db < 1e-4;
  std::printf("CHECK %-5s M=%lld K=%d N=%d  rel err out %.2e dx %.2e dW %.2e db %.2e  %s\n", L.name, (long long)M, K, N,
              e_out, e_dx, e_dw, e_db, ok ? "ok" : "FAILED");
  return ok;
}

// A bare cuBLASLt GEMM: descriptors and heuristic results prepared once, as a hand-written call would.
class BareGemm {
 public:
  BareGemm(cublasLtHandle_t h, const gpu::GemmOp& op, const void* bias) : h_(h) {
    auto type = [](gpu::GemmDtype t) { return t == gpu::GemmDtype::bf16 ? CUDA_R_16BF : CUDA_R_32F; };
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = op.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = op.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    if (bias) {
      const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    }
    CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&a_, type(op.ab), op.trans_a ? op.k : op.m, op.trans_a ? op.m : op.k, op.lda));
    CUBLAS_CHECK(
        cublasLtMatrixLayoutCreate(&b_, type(op.ab), op.trans_b ? op.n : op.k, op.trans_b ? op.k : op.n, op.ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&d_, type(op.d), op.m, op.n, op.ldd));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = gpu::GemmContext::kWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h_, desc_, a_, b_, d_, d_, pref, kMaxAlgos, results_, &found_));
    cublasLtMatmulPreferenceDestroy(pref);
    VIT_REQUIRE(found_ > 0, "bench_gemm: the heuristic returned no algorithm");
  }
  ~BareGemm() {
    cublasLtMatrixLayoutDestroy(d_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatmulDescDestroy(desc_);
  }
  BareGemm(const BareGemm&) = delete;
  BareGemm& operator=(const BareGemm&) = delete;
  int algos() const { return found_; }
  void run(int algo, const void* a, const void* b, void* d, float beta, void* ws) {
    const float alpha = 1.f;
    CUBLAS_CHECK(cublasLtMatmul(h_, desc_, &alpha, a, a_, b, b_, &beta, d, d_, d, d_, &results_[algo].algo, ws,
                                gpu::GemmContext::kWorkspaceBytes, 0));
  }

 private:
  cublasLtHandle_t h_;
  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, d_ = nullptr;
  // A plain array: nvcc 13.0's front end crashes on std::vector of this C typedef'd struct.
  static constexpr int kMaxAlgos = 8;
  cublasLtMatmulHeuristicResult_t results_[kMaxAlgos]{};
  int found_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const i64 M = argc > 1 ? std::atoll(argv[1]) : 50432;
    gpu::GemmContext ctx;

    bool ok = true;
    for (const Layer& L : kLayers) ok &= check_layer(ctx, L, 257);
    if (!ok) {
      std::printf("correctness check FAILED: not timing\n");
      return 1;
    }

    const int maxK = 3072, maxN = 3072;
    DeviceBuffer<bf16> x(M * maxK), dout(M * maxN), out(M * maxN), act(M * maxN), dx(M * maxK), w((i64)maxN * maxK),
        b(maxN);
    DeviceBuffer<float> dw((i64)maxN * maxK), db(maxN);
    DeviceBuffer<char> bare_ws(gpu::GemmContext::kWorkspaceBytes);
    fill(x.get(), M * maxK, 11, 1.f);
    fill(dout.get(), M * maxN, 12, 1.f);
    fill(w.get(), (i64)maxN * maxK, 13, 0.03f);
    fill(b.get(), maxN, 14, 1.f);
    fill(dw.get(), (i64)maxN * maxK, 15, 1.f);
    fill(db.get(), maxN, 16, 1.f);
    CUDA_CHECK(cudaDeviceSynchronize());

    bench::Timer timer;
    double worst_overhead = 0, total_ctx = 0, total_flops = 0;
    for (const Layer& L : kLayers) {
      const int K = L.K, N = L.N;
      const double flops = 2.0 * M * K * N;
      // The three GEMMs exactly as kernels/linear.cu issues them (see its header comment for the mapping).
      gpu::GemmOp fwd, dgrad, wgrad;
      fwd.m = N, fwd.n = M, fwd.k = K, fwd.trans_a = true, fwd.lda = K, fwd.ldb = K, fwd.ldd = N;
      fwd.epilogue = gpu::GemmEpilogue::bias;
      dgrad.m = K, dgrad.n = M, dgrad.k = N, dgrad.lda = K, dgrad.ldb = N, dgrad.ldd = K;
      wgrad.m = K, wgrad.n = N, wgrad.k = M, wgrad.trans_b = true, wgrad.lda = K, wgrad.ldb = N, wgrad.ldd = K;
      wgrad.d = gpu::GemmDtype::f32;
      gpu::GemmArgs fa, da, wa;
      fa.a = w.get(), fa.b = x.get(), fa.d = out.get(), fa.bias = b.get();
      da.a = w.get(), da.b = dout.get(), da.d = dx.get();
      wa.a = x.get(), wa.b = dout.get(), wa.d = dw.get(), wa.beta = 1.f;
      const Gemm gemms[] = {{"fwd", fwd, fa}, {"dgrad", dgrad, da}, {"wgrad", wgrad, wa}};
      for (const Gemm& g : gemms) {
        char name[64];
        std::snprintf(name, sizeof name, "%s %s ctx", L.name, g.what);
        const double t_ctx = timer.median_us([&] { ctx.matmul(g.op, g.args, 0); });
        bench::report(name, t_ctx, flops, 0);
        BareGemm bare(ctx.handle(), g.op, g.args.bias);
        std::snprintf(name, sizeof name, "%s %s bare", L.name, g.what);
        const double t_bare =
            timer.median_us([&] { bare.run(0, g.args.a, g.args.b, g.args.d, g.args.beta, bare_ws.get()); });
        bench::report(name, t_bare, flops, 0);
        double best = t_bare;
        int best_algo = 0;
        for (int a = 1; a < bare.algos(); ++a) {
          const double t =
              timer.median_us([&] { bare.run(a, g.args.a, g.args.b, g.args.d, g.args.beta, bare_ws.get()); }, 20, 3);
          if (t < best) best = t, best_algo = a;
        }
        std::snprintf(name, sizeof name, "%s %s best of %d", L.name, g.what, bare.algos());
        bench::report(name, best, flops, 0);
        const double overhead = t_ctx / t_bare - 1;
        worst_overhead = std::max(worst_overhead, overhead);
        total_ctx += t_ctx;
        total_flops += flops;
        std::printf("  %s %s: wrapper %+.1f%% vs bare; heuristic #%d is best (%.1f%% faster than #0)\n", L.name, g.what,
                    100 * overhead, best_algo, 100 * (t_bare / best - 1));
      }
      // The whole backward of the layer as the engine runs it: column sums for dbias + both GEMMs.
      char name[64];
      std::snprintf(name, sizeof name, "%s linear_backward (dx, dW, db)", L.name);
      const double t_bwd = timer.median_us([&] {
        gpu::linear_backward(ctx, dx.get(), dw.get(), db.get(), dout.get(), x.get(), w.get(), M, K, N, false, 0);
      });
      bench::report(name, t_bwd, 2 * flops, 0);
    }
    std::printf(
        "SUMMARY block GEMMs through GemmContext: %.1f us, %.1f TFLOP/s; worst wrapper overhead %+.1f%% "
        "(target < 5%%)\n",
        total_ctx, total_flops / total_ctx * 1e-6, 100 * worst_overhead);

    // GELU after fc1: fused epilogue (tanh only) vs bias GEMM + separate GELU kernel.
    {
      const int K = 768, N = 3072;
      const double flops = 2.0 * M * K * N, act_bytes = 2.0 * M * N * 2;  // separate GELU: read + write
      auto fc1 = [&](bool fuse, bool tanh_approx) {
        ctx.set_fuse_gelu(fuse);
        gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), M, K, N, 0, act.get(), tanh_approx);
      };
      const double t_plain =
          timer.median_us([&] { gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), M, K, N, 0); });
      bench::report("fc1 GEMM+bias (no GELU)", t_plain, flops, 0);
      const double t_fused = timer.median_us([&] { fc1(true, true); });
      bench::report("fc1 GEMM+bias+GELU_tanh fused epilogue", t_fused, flops, 0);
      const double t_sep_tanh = timer.median_us([&] { fc1(false, true); });
      bench::report("fc1 GEMM+bias, separate GELU_tanh", t_sep_tanh, flops, 0);
      const double t_sep_erf = timer.median_us([&] { fc1(false, false); });
      bench::report("fc1 GEMM+bias, separate GELU (erf)", t_sep_erf, flops, 0);
      const double t_gelu = timer.median_us([&] { gpu::gelu_forward(act.get(), out.get(), M * N, false, 0); });
      bench::report("GELU (erf) kernel alone", t_gelu, 0, act_bytes);
      std::printf(
          "RECOMMEND fuse_gelu=%s (tanh GELU: fused %.1f us vs separate %.1f us; the exact GELU always runs "
          "separately)\n",
          t_fused < t_sep_tanh ? "true" : "false", t_fused, t_sep_tanh);
      ctx.set_fuse_gelu(true);
    }
    // A branch's last linear and the skip connection: residual in the GEMM's epilogue vs GEMM + add kernel.
    {
      const int K = 3072, N = 768;
      const double flops = 2.0 * M * K * N;
      const double t_fused = timer.median_us([&] {
        gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), M, K, N, 0, nullptr, false, act.get());
      });
      const double t_sep = timer.median_us([&] {
        gpu::linear_forward(ctx, out.get(), x.get(), w.get(), b.get(), M, K, N, 0);
        gpu::add(dx.get(), out.get(), act.get(), M * N, 0);
      });
      bench::report("fc2 GEMM+bias+residual epilogue", t_fused, flops, 0);
      bench::report("fc2 GEMM+bias, separate residual add", t_sep, flops, 0);
      std::printf("RECOMMEND residual in epilogue=%s (%.1f vs %.1f us)\n", t_fused < t_sep ? "true" : "false", t_fused,
                  t_sep);
    }
    std::printf("plans cached: %zu, of which autotuning moved %zu off the heuristic's first choice\n",
                ctx.plan_count(), ctx.tuned_count());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
