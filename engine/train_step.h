// One optimizer step: micro-batches through forward and backward (gradients accumulate in the store),
// the gradient reduction completed, then the clipped AdamW update. Backend-agnostic; the loss stays in
// the backend's memory (a device scalar on the GPU) until someone reads it for logging.
#pragma once
#include <functional>

#include "engine/fsdp.h"
#include "model/vit.h"

namespace vit {

struct MicroBatch {
  const float* images;  // (n, C, H, W) in the backend's memory
  const int* labels;    // (n)
  int n;
};

struct StepSettings {
  int64_t step = 0;           // 0-based optimizer step (AdamW's t = step + 1)
  int accum = 1;
  int64_t global_batch = 1;   // samples per optimizer step over all ranks
  double label_smoothing = 0;
  double grad_clip = 0;
  uint64_t seed = 0;
  AdamWParams adam{};         // lr etc. for this step (step field filled here)
};

template <class Ops>
struct StepResult {
  const typename Ops::Stat* loss_sum;  // Σ per-sample loss / global batch over this rank's samples
  const typename Ops::Stat* grad_norm; // global, before clipping
};

// Points in a step where a caller may mark the backend's stream (bench_train --phases times the stretches
// between); forward_done and backward_done come once per micro-batch.
enum class StepPhase { forward_done, backward_done, grads_reduced, updated };

template <class Ops>
StepResult<Ops> train_step(ViT<Ops>& model, FsdpStore<Ops>& store, Ops& ops, typename Ops::Stat* loss_acc,
                           const std::function<MicroBatch(int micro)>& next_batch, const StepSettings& s,
                           const std::function<void(StepPhase)>& on_phase = {}) {
  auto phase = [&](StepPhase p) {
    if (on_phase) on_phase(p);
  };
  store.zero_grads();
  ops.zero(loss_acc, sizeof(*loss_acc));
  for (int micro = 0; micro < s.accum; ++micro) {
    MicroBatch mb = next_batch(micro);
    store.begin_micro(micro, s.accum);
    StepContext ctx;
    ctx.train = true;
    ctx.seed = s.seed;
    ctx.step = s.step;
    ctx.micro = micro;
    ctx.dscale = 1.0 / (double)s.global_batch;
    ctx.label_smoothing = s.label_smoothing;
    model.forward(store, mb.images, mb.labels, mb.n, ctx);
    phase(StepPhase::forward_done);
    model.backward();
    phase(StepPhase::backward_done);
    ops.accumulate_loss(loss_acc, model.losses(), mb.n, ctx.dscale);
  }
  store.finish_grads();
  phase(StepPhase::grads_reduced);
  AdamWParams ap = s.adam;
  ap.step = (int)(s.step + 1);
  const typename Ops::Stat* norm = store.step(ap, s.grad_clip);
  phase(StepPhase::updated);
  return {loss_acc, norm};
}

}  // namespace vit
