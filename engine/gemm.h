// cuBLASLt GEMMs with cached plans. A plan (matmul descriptor, matrix layouts and an algorithm) is built the
// first time a problem is seen and reused for every later call with the same key (shape, transposes,
// leading dimensions, dtypes, epilogue, pointer alignments): nothing is rebuilt per call, only the
// epilogue's bias / aux pointers are set on the cached descriptor.
//
// The algorithm: cuBLASLt's heuristic proposes up to kTuneCandidates; with autotuning on (the default;
// VIT_GEMM_AUTOTUNE=0 turns it off) the first call times each on the call's own operands (D written to a
// temporary, so the call has no side effect) and keeps the fastest when it beats the heuristic's first
// choice by kTuneMinGain. At ViT-B's shapes the first choice is up to 19% slower than the best
// (tools/bench_gemm, docs/benchmarks.md session 4). The choice is timed, so two processes may pick
// different algorithms (results equal to rounding, not bit for bit); within a process it never changes.
//
// Everything here is in cuBLASLt's column-major terms; kernels/linear.cu maps the row-major layer onto it.
// A GemmContext serves one stream at a time (its workspace and scratch are reused in stream order) and
// one host thread: give each concurrently used stream its own context. Include from CUDA code only.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "engine/cuda_buffer.h"
#include "kernels/types.h"

namespace vit::gpu {

enum class GemmDtype : uint8_t { bf16, f32 };

// none: D = αAB + βC.  bias: + bias (m elements, D's type) on every column.
// gelu_aux / gelu_aux_bias: aux = αAB + βC (+ bias) and D = GELU(aux) with cuBLASLt's GELU, which is the
// tanh approximation (timm's approximate='tanh'), never the exact erf GELU.
// (cuBLASLt's BGRADB epilogue, the bias gradient next to the weight gradient, was measured slower than our
// column sums on H100: it runs as a separate reduction kernel; docs/benchmarks.md, session 4.)
enum class GemmEpilogue : uint8_t { none, bias, gelu_aux, gelu_aux_bias };

// D (m × n, column-major, leading dimension ldd) = alpha · op(A) · op(B) + beta · C, with op(A) m × k and
// op(B) k × n. C has D's layout; it is D itself unless GemmArgs::c says otherwise (beta = 1 then adds a
// residual in the epilogue). Compute and scaling in fp32.
struct GemmOp {
  i64 m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  i64 lda = 0, ldb = 0, ldd = 0;
  GemmDtype ab = GemmDtype::bf16;  // A and B
  GemmDtype d = GemmDtype::bf16;   // C and D (and bias, aux)
  GemmEpilogue epilogue = GemmEpilogue::none;
};

struct GemmArgs {
  const void* a = nullptr;
  const void* b = nullptr;
  void* d = nullptr;
  float alpha = 1.f, beta = 0.f;
  const void* c = nullptr;     // C when it is not D (same layout and type as D); read only when beta != 0
  const void* bias = nullptr;  // epilogues with a bias
  void* aux = nullptr;         // gelu epilogues: the pre-activation, same layout and type as D (ld = ldd)
};

class GemmContext {
 public:
  static constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;  // what cuBLAS recommends on Hopper
  static constexpr i64 kScratchFloats = i64{1} << 18;                    // 1 MiB, see scratch()

  // fuse_gelu: whether linear_forward uses the GELU_AUX_BIAS epilogue for the tanh GELU (decided by
  // tools/bench_gemm); the exact GELU always runs as a separate kernel.
  static constexpr int kTuneCandidates = 8;
  static constexpr double kTuneMinGain = 0.02;

  explicit GemmContext(bool fuse_gelu = true);
  ~GemmContext();
  GemmContext(const GemmContext&) = delete;
  GemmContext& operator=(const GemmContext&) = delete;

  // Runs one GEMM on `stream`, building its plan on first use. Fails (vit::Error) with the problem
  // spelled out when cuBLASLt has no algorithm for it.
  void matmul(const GemmOp& op, const GemmArgs& args, cudaStream_t stream);

  // Plans built so far (tests check that repeated calls reuse them).
  std::size_t plan_count() const { return plans_.size(); }
  bool fuse_gelu() const { return fuse_gelu_; }
  void set_fuse_gelu(bool on) { fuse_gelu_ = on; }
  // Autotuning of plans built from now on (see the header comment); the constructor reads VIT_GEMM_AUTOTUNE.
  bool autotune() const { return autotune_; }
  void set_autotune(bool on) { autotune_ = on; }
  // Plans whose algorithm autotuning changed from the heuristic's first choice (tests, benchmarks).
  std::size_t tuned_count() const { return tuned_; }
  // A hash of every plan's problem and chosen algorithm, independent of build order: equal on two ranks (or runs)
  // exactly when they run the same kernels (benchmarks print it to compare what tuning picked).
  uint64_t choice_fingerprint() const;

  cublasLtHandle_t handle() const { return handle_; }
  // kScratchFloats floats of device memory for reductions that accompany a GEMM (the bias-gradient column
  // sums of linear_backward). Stream-ordered like the workspace.
  float* scratch() const { return scratch_.get(); }

  struct Key {
    i64 m, n, k, lda, ldb, ldd;
    bool trans_a, trans_b;
    GemmDtype ab, d;
    GemmEpilogue epilogue;
    uint16_t align_a, align_b, align_c, align_d, align_bias, align_aux;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const;
  };
  struct Plan;

 private:
  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<char> workspace_;
  DeviceBuffer<float> scratch_;
  std::unordered_map<Key, std::unique_ptr<Plan>, KeyHash> plans_;
  bool fuse_gelu_;
  bool autotune_ = true;
  std::size_t tuned_ = 0;
};

// Largest power of two (at most 256) dividing the address: the alignment cuBLASLt's heuristic may assume.
uint16_t pointer_alignment(const void* p);

}  // namespace vit::gpu
