// Attention dropout (timm Attention.attn_drop): O = (P ⊙ Z · s) V with P = softmax(scale · Q Kᵀ), Z a keep mask
// and s the keep scale. The mask is never stored: it is a pure function of (seed, site, b, h, i, j) through the
// counter RNG, so the backward regenerates it, and the CPU reference and every CUDA kernel draw the same bits.
//
// The mask, for query i and key j of head (b, h) (bh = b·H + h):
//   word   = rng::bits(seed, site, bh << 40 | (i / 2) << 20 | (j / 2))    one 64-bit draw per 2×2 block of (i, j)
//   u      = 16 bits of word at slot 2·(i mod 2) + (j mod 2)              four 16-bit uniforms per draw
//   keep   = u >= threshold,  threshold = round(p · 65536)
// so p is resolved to 1/65536 (p = 0.1 drops with probability 6554/65536 = 0.100006). The keep scale is the
// reciprocal of the resolved keep probability, 65536 / (65536 − threshold), which keeps E[Z · s] = 1 exactly.
// Why 2×2 blocks: the tensor-core fragments hold two adjacent keys of a query row in the forward and dQ
// tiles, and two adjacent queries of a key row in the (transposed) dK/dV tiles; a 2×2 block serves both, so a
// lane draws once per 8-column tile slice and trades half the draw with one neighbour lane (attention_tiles).
// Limits of the counter layout: T <= 2^21 tokens, B·H <= 2^24 heads (checked by check()).
#pragma once
#include <cstdint>

#include "engine/check.h"
#include "engine/rng.h"
#include "kernels/types.h"

namespace vit {

// Dropout of the attention probabilities; p = 0 (the default) is none. Training only: eval passes {}.
struct AttnDropout {
  float p = 0.f;
  uint64_t seed = 0;
  uint64_t site = 0;  // RNG stream: one per attention call site
  VIT_HD bool active() const { return p > 0.f; }
};

namespace attn_mask {

inline constexpr int kMaxT = 1 << 21;
inline constexpr i64 kMaxHeads = 1LL << 24;

// round(p · 65536): p · 65536 is exact in float and below 2^16, so adding 0.5 rounds exactly.
VIT_HD uint32_t threshold(float p) { return (uint32_t)(p * 65536.f + 0.5f); }
VIT_HD double keep_scale(uint32_t thr) { return 65536.0 / (65536.0 - (double)thr); }

VIT_HD uint64_t counter(i64 bh, int i, int j) {
  return ((uint64_t)bh << 40) | ((uint64_t)(i >> 1) << 20) | (uint64_t)(j >> 1);
}
VIT_HD int slot(int i, int j) { return 2 * (i & 1) + (j & 1); }

// The 16-bit uniform of (i, j) and the keep decision, one draw each (the CPU reference and the simple kernels).
VIT_HD uint32_t uniform16(uint64_t seed, uint64_t site, i64 bh, int i, int j) {
  return (uint32_t)(rng::bits(seed, site, counter(bh, i, j)) >> (16 * slot(i, j))) & 0xFFFFu;
}
VIT_HD bool keep(const AttnDropout& dr, uint32_t thr, i64 bh, int i, int j) {
  return uniform16(dr.seed, dr.site, bh, i, j) >= thr;
}

// Refuses what the mask cannot represent: p outside [0, 1) or so close to 1 that every entry is dropped, and
// shapes past the counter layout.
inline void check(const AttnDropout& dr, int B, int Tn, int H) {
  VIT_REQUIRE(dr.p >= 0.f, "attention dropout: p = ", dr.p, " must be >= 0 (model.attn_drop_rate)");
  if (!dr.active()) return;
  VIT_REQUIRE(dr.p < 1.f && threshold(dr.p) < 65536u, "attention dropout: p = ", dr.p,
              " must be below 1 - 2^-17 (model.attn_drop_rate)");
  VIT_REQUIRE(Tn <= kMaxT && (i64)B * H <= kMaxHeads, "attention dropout: T = ", Tn, ", B·H = ", (i64)B * H,
              " exceed the mask's counter layout (T <= 2^21, B·H <= 2^24)");
}

}  // namespace attn_mask
}  // namespace vit
