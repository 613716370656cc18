// CPU reference token assembly (see embed.h): [cls, reg_0..reg_{R-1}, patches] plus the position embedding.
#include <algorithm>
#include <vector>

#include "kernels/embed.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;
namespace {
// Row of pos for token t, or -1 when pos does not cover t (no pos, or a prefix token with no_embed_class).
inline int pos_row(const EmbedShape& s, bool has_pos, int t) {
  if (!has_pos) return -1;
  if (!s.no_embed_class) return t;
  return t >= s.prefix() ? t - s.prefix() : -1;
}
}  // namespace

template <class T>
void embed_forward(T* x, const T* patch_tokens, const T* cls, const T* reg, const T* pos, const EmbedShape& s) {
  const int Tn = s.tokens(), P = s.prefix(), D = s.D, c0 = s.cls ? 1 : 0;
#pragma omp parallel for schedule(static) if ((i64)s.B * Tn * D >= kOmpMinWork)
  for (i64 bt = 0; bt < (i64)s.B * Tn; ++bt) {
    const int b = (int)(bt / Tn), t = (int)(bt % Tn);
    const T* src = t < c0 ? cls : t < P ? reg + (i64)(t - c0) * D : patch_tokens + ((i64)b * s.Np + (t - P)) * D;
    const int pr = pos_row(s, pos != nullptr, t);
    T* dst = x + bt * D;
    for (int d = 0; d < D; ++d) dst[d] = pr >= 0 ? src[d] + pos[(i64)pr * D + d] : src[d];
  }
}

template <class T>
void embed_backward(T* dpatch, T* dcls, T* dreg, T* dpos, const T* dx, const EmbedShape& s) {
  const int Tn = s.tokens(), P = s.prefix(), D = s.D, c0 = s.cls ? 1 : 0;
#pragma omp parallel for schedule(static) if ((i64)s.B * s.Np * D >= kOmpMinWork)
  for (i64 bi = 0; bi < (i64)s.B * s.Np; ++bi) {
    const i64 b = bi / s.Np, i = bi % s.Np;
    std::copy_n(dx + (b * Tn + P + i) * D, D, dpatch + bi * D);
  }
  // Parameter gradients: per token, a sum over the batch in order (tokens independent → deterministic).
#pragma omp parallel for schedule(static) if ((i64)s.B * Tn * D >= kOmpMinWork)
  for (int t = 0; t < Tn; ++t) {
    T* prefix_grad = t < c0 ? dcls : t < P && dreg ? dreg + (i64)(t - c0) * D : nullptr;
    const int pr = pos_row(s, dpos != nullptr, t);
    T* pos_grad = pr >= 0 ? dpos + (i64)pr * D : nullptr;
    if (!prefix_grad && !pos_grad) continue;
    std::vector<double> sum(D, 0.0);
    for (int b = 0; b < s.B; ++b) {
      const T* row = dx + ((i64)b * Tn + t) * D;
      for (int d = 0; d < D; ++d) sum[d] += row[d];
    }
    for (int d = 0; d < D; ++d) {
      if (prefix_grad) prefix_grad[d] += (T)sum[d];
      if (pos_grad) pos_grad[d] += (T)sum[d];
    }
  }
}

#define VIT_INSTANTIATE(T)                                                                           \
  template void embed_forward<T>(T*, const T*, const T*, const T*, const T*, const EmbedShape&);    \
  template void embed_backward<T>(T*, T*, T*, T*, const T*, const EmbedShape&);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
