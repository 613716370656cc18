// AdamW (decoupled weight decay, torch.optim.AdamW semantics) over a flat range of parameters.
//   g = grad · grad_scale;  m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²
//   p = p·(1 - lr·wd) - lr · (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
// step t starts at 1. grad_scale carries gradient clipping (and 1/accumulation if wanted).
#pragma once
#include "kernels/types.h"

namespace vit {
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int step;  // 1-based
};

// Weight decay on or off per contiguous run of one flat range, so that a whole FSDP unit (weights with
// decay, biases and norms without) is one launch: run r covers [end[r-1], end[r]) with end[-1] = 0.
struct DecayRuns {
  static constexpr int kMax = 32;
  int count = 0;
  i64 end[kMax];
  bool decay[kMax];
  // Appends [.., e) with the given flag, merged into the last run when the flag is the same. Returns false
  // (and appends nothing) when a new run is needed and kMax are in use.
  bool push(i64 e, bool d) {
    if (count > 0 && decay[count - 1] == d) return end[count - 1] = e, true;
    if (count == kMax) return false;
    end[count] = e, decay[count] = d, ++count;
    return true;
  }
  i64 size() const { return count ? end[count - 1] : 0; }
};
}  // namespace vit

namespace vit::ref {
template <class T>
void adamw_step(T* param, const T* grad, T* m, T* v, i64 n, const AdamWParams& p, double grad_scale);
}  // namespace vit::ref

namespace vit::gpu {
// fp32 master weights and state; param_bf16 (may be null) receives the updated weights in bf16.
// grad_scale is read from device memory (computed there from the global norm: no host sync).
void adamw_step(float* param, bf16* param_bf16, const float* grad, float* m, float* v, i64 n, const AdamWParams& p,
                const float* grad_scale, cudaStream_t stream);
// The same over runs.size() elements, with p.weight_decay applied only in the runs that have decay on.
void adamw_step(float* param, bf16* param_bf16, const float* grad, float* m, float* v, const DecayRuns& runs,
                const AdamWParams& p, const float* grad_scale, cudaStream_t stream);
}  // namespace vit::gpu
