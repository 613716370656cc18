// Evaluation sums over a batch of logits: cross-entropy (no smoothing), top-1 and top-5 hits, count.
// Rows with valid = 0 (loader padding, undecodable val files) or a label outside [0, K) are not counted, so
// sums over ranks and batches are exact whatever the split. Ties count against the label.
#pragma once
#include <cstdint>
#include <vector>

namespace vit {

struct EvalSums {
  double loss = 0, top1 = 0, top5 = 0, count = 0;
};

// logits: B rows of K values (as float).
void accumulate_eval(EvalSums& s, const float* logits, const int* labels, const unsigned char* valid, int B, int K);

}  // namespace vit
