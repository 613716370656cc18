// Softmax cross-entropy with label smoothing (as torch's F.cross_entropy(label_smoothing=s)):
//   loss_i = -(1 - s) · log p[i, y_i] - (s / K) · Σ_k log p[i, k]
// Forward and backward in one pass: dlogits = dscale · (p - ((1-s)·onehot + s/K)) is written (=);
// dlogits may be null (evaluation). dscale is usually 1 / global batch. Labels outside [0, K) are a bug.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
template <class T>
void softmax_xent(T* losses, T* dlogits, const T* logits, const int* labels, int B, int K, double smoothing,
                  double dscale);
// Number of rows whose label is among the k largest logits (ties counted against the label).
template <class T>
int topk_correct(const T* logits, const int* labels, int B, int K, int k);
}  // namespace vit::ref

namespace vit::gpu {
// Never writes the probabilities: one read of the logits for the statistics, one for dlogits.
void softmax_xent(float* losses, bf16* dlogits, const bf16* logits, const int* labels, int B, int K, float smoothing,
                  float dscale, cudaStream_t stream);
// correct[0] += rows with label in top-1, correct[1] += rows with label in top-5.
void topk_correct(int* correct, const bf16* logits, const int* labels, int B, int K, cudaStream_t stream);
}  // namespace vit::gpu
