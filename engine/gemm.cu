// cuBLASLt plans, built once per problem and cached (see gemm.h).
#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include "engine/cuda_check.h"
#include "engine/gemm.h"

namespace vit::gpu {

namespace {

cudaDataType_t cuda_type(GemmDtype t) { return t == GemmDtype::bf16 ? CUDA_R_16BF : CUDA_R_32F; }
const char* type_name(GemmDtype t) { return t == GemmDtype::bf16 ? "bf16" : "f32"; }

cublasLtEpilogue_t lt_epilogue(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none:
      return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::bias:
      return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::gelu_aux:
      return CUBLASLT_EPILOGUE_GELU_AUX;
    case GemmEpilogue::gelu_aux_bias:
      return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}
bool has_bias(GemmEpilogue e) { return e == GemmEpilogue::bias || e == GemmEpilogue::gelu_aux_bias; }
bool has_aux(GemmEpilogue e) { return e == GemmEpilogue::gelu_aux || e == GemmEpilogue::gelu_aux_bias; }
const char* epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none:
      return "none";
    case GemmEpilogue::bias:
      return "bias";
    case GemmEpilogue::gelu_aux:
      return "gelu_aux";
    case GemmEpilogue::gelu_aux_bias:
      return "gelu_aux_bias";
  }
  return "?";
}

template <class V>
void set_attr(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

}  // namespace

uint16_t pointer_alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  if (a == 0) return 256;
  return (uint16_t)std::min<std::uintptr_t>(256, std::uintptr_t{1} << std::countr_zero(a));
}

// Owns the cuBLASLt objects of one problem.
struct GemmContext::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {  // no checks: destructors must not throw
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

std::size_t GemmContext::KeyHash::operator()(const Key& k) const {
  // FNV-1a over the fields (the struct may have padding, so not over its bytes).
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 0x100000001b3ULL; };
  for (i64 v : {k.m, k.n, k.k, k.lda, k.ldb, k.ldd}) mix((uint64_t)v);
  mix((uint64_t)k.trans_a | (uint64_t)k.trans_b << 1 | (uint64_t)k.ab << 2 | (uint64_t)k.d << 4 |
      (uint64_t)k.epilogue << 6);
  mix((uint64_t)k.align_a | (uint64_t)k.align_b << 16 | (uint64_t)k.align_d << 32 | (uint64_t)k.align_bias << 48);
  mix((uint64_t)k.align_aux | (uint64_t)k.align_c << 16);
  return (std::size_t)h;
}

GemmContext::GemmContext(bool fuse_gelu)
    : workspace_(kWorkspaceBytes), scratch_((std::size_t)kScratchFloats), fuse_gelu_(fuse_gelu) {
  if (const char* env = std::getenv("VIT_GEMM_AUTOTUNE"); env != nullptr && *env != '\0') {
    VIT_REQUIRE(std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0,
                "VIT_GEMM_AUTOTUNE must be 0 (cuBLASLt's first heuristic choice) or 1 (time the candidates, the "
                "default), not '", env, "'");
    autotune_ = env[0] == '1';
  }
  CUBLAS_CHECK(cublasLtCreate(&handle_));
}

namespace {
// RAII for the tuning's events and temporary D.
struct TuneEvents {
  cudaEvent_t start = nullptr, stop = nullptr;
  TuneEvents() {
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~TuneEvents() {
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
  }
  TuneEvents(const TuneEvents&) = delete;
  TuneEvents& operator=(const TuneEvents&) = delete;
};
}  // namespace

GemmContext::~GemmContext() {
  plans_.clear();  // descriptors before the handle
  if (handle_) cublasLtDestroy(handle_);
}

void GemmContext::matmul(const GemmOp& op, const GemmArgs& args, cudaStream_t stream) {
  const bool bias = has_bias(op.epilogue), aux = has_aux(op.epilogue);
  const void* c = args.c ? args.c : args.d;
  VIT_ASSERT(op.m > 0 && op.n > 0 && op.k > 0, "gemm: empty problem m=", op.m, " n=", op.n, " k=", op.k);
  VIT_ASSERT(args.a && args.b && args.d, "gemm: null A, B or D");
  VIT_ASSERT(!bias || args.bias, "gemm: epilogue ", epilogue_name(op.epilogue), " needs a bias pointer");
  VIT_ASSERT(!aux || args.aux, "gemm: epilogue ", epilogue_name(op.epilogue), " needs an aux pointer");
  VIT_ASSERT(!aux || op.ldd % 8 == 0, "gemm: the GELU aux leading dimension must be a multiple of 8, got ", op.ldd);

  const Key key{op.m,
                op.n,
                op.k,
                op.lda,
                op.ldb,
                op.ldd,
                op.trans_a,
                op.trans_b,
                op.ab,
                op.d,
                op.epilogue,
                pointer_alignment(args.a),
                pointer_alignment(args.b),
                pointer_alignment(c),
                pointer_alignment(args.d),
                bias ? pointer_alignment(args.bias) : uint16_t{0},
                aux ? pointer_alignment(args.aux) : uint16_t{0}};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    auto plan = std::make_unique<Plan>();
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = op.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = op.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    set_attr(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, ta);
    set_attr(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, tb);
    set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, (uint32_t)lt_epilogue(op.epilogue));
    // The heuristic reads the epilogue pointers' values (for their alignment), so set them before asking.
    if (bias) set_attr(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
    if (aux) {
      set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, args.aux);
      set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, (int64_t)op.ldd);
    }
    // Stored shapes: A is m × k (k × m when transposed), B is k × n (n × k when transposed).
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, cuda_type(op.ab), op.trans_a ? op.k : op.m,
                                            op.trans_a ? op.m : op.k, op.lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, cuda_type(op.ab), op.trans_b ? op.n : op.k,
                                            op.trans_b ? op.k : op.n, op.ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->d, cuda_type(op.d), op.m, op.n, op.ldd));

    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    // The preference is destroyed on every path, also when a check below throws.
    auto destroy_pref = [](cublasLtMatmulPreference_t* p) { cublasLtMatmulPreferenceDestroy(*p); };
    std::unique_ptr<cublasLtMatmulPreference_t, decltype(destroy_pref)> pref_guard(&pref, destroy_pref);
    const uint64_t ws = kWorkspaceBytes;
    const uint32_t al_a = key.align_a, al_b = key.align_b, al_c = key.align_c, al_d = key.align_d;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, 4));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, 4));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, 4));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, 4));
    cublasLtMatmulHeuristicResult_t cand[kTuneCandidates] = {};
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->d, plan->d,
                                                             pref, autotune_ ? kTuneCandidates : 1, cand, &found);
    result = cand[0];
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
      fail("cuBLASLt has no algorithm for GEMM m=", op.m, " n=", op.n, " k=", op.k, " op(A)=", op.trans_a ? "T" : "N",
           " op(B)=", op.trans_b ? "T" : "N", " lda=", op.lda, " ldb=", op.ldb, " ldd=", op.ldd, " A/B ",
           type_name(op.ab), " D ", type_name(op.d), " epilogue ", epilogue_name(op.epilogue), " alignments ", al_a,
           "/", al_b, "/", al_d, " bytes (", cublasLtGetStatusName(st),
           "): bf16 operands need leading dimensions that are multiples of 8 and 16-byte aligned pointers");
    plan->algo = result.algo;
    if (autotune_ && found > 1) {
      // D goes to a temporary (C still reads the caller's C, or D's old values when C is D), so the
      // candidates' runs leave the caller's data alone. No memory for it: keep the first choice.
      const std::size_t d_bytes = (std::size_t)op.ldd * op.n * (op.d == GemmDtype::bf16 ? 2 : 4);
      void* tmp = nullptr;
      if (cudaMalloc(&tmp, d_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        tmp = nullptr;
      }
      if (tmp) {
        std::unique_ptr<void, decltype(&cudaFree)> tmp_guard(tmp, &cudaFree);
        if (bias) set_attr(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
        if (aux) set_attr(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, args.aux);
        TuneEvents ev;
        float best_ms = 0;
        int best = -1, first_ok = -1;
        float first_ms = 0;
        for (int i = 0; i < found; ++i) {
          auto run = [&] {
            return cublasLtMatmul(handle_, plan->desc, &args.alpha, args.a, plan->a, args.b, plan->b, &args.beta, c,
                                  plan->d, tmp, plan->d, &cand[i].algo, workspace_.get(), workspace_.bytes(), stream);
          };
          if (run() != CUBLAS_STATUS_SUCCESS) continue;  // a candidate that refuses this call: skip it
          CUDA_CHECK(cudaEventRecord(ev.start, stream));
          constexpr int kReps = 3;
          for (int r = 0; r < kReps; ++r) CUBLAS_CHECK(run());
          CUDA_CHECK(cudaEventRecord(ev.stop, stream));
          CUDA_CHECK(cudaEventSynchronize(ev.stop));
          float ms = 0;
          CUDA_CHECK(cudaEventElapsedTime(&ms, ev.start, ev.stop));
          if (first_ok < 0) first_ok = i, first_ms = ms;
          if (best < 0 || ms < best_ms) best = i, best_ms = ms;
        }
        // Another candidate only when clearly faster than the first usable one (timing noise must not flip it).
        if (best >= 0 && first_ok >= 0) {
          const int pick = best_ms < first_ms * (1.0 - kTuneMinGain) ? best : first_ok;
          plan->algo = cand[pick].algo;
          if (pick != 0) ++tuned_;
        }
      }
    }
    it = plans_.emplace(key, std::move(plan)).first;
  }
  Plan& plan = *it->second;
  if (bias) set_attr(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
  if (aux) set_attr(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, args.aux);
  CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &args.alpha, args.a, plan.a, args.b, plan.b, &args.beta, c, plan.d,
                              args.d, plan.d, &plan.algo, workspace_.get(), workspace_.bytes(), stream));
}

uint64_t GemmContext::choice_fingerprint() const {
  uint64_t sum = 0;
  for (const auto& [key, plan] : plans_) {
    uint64_t h = KeyHash{}(key);
    for (uint64_t w : plan->algo.data) h = (h ^ w) * 0x100000001b3ULL;
    sum += h;  // a sum: the map's order does not matter
  }
  return sum;
}

}  // namespace vit::gpu
