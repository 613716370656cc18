// CPU reference patchify (see patch_embed.h): a gather, so float and double give the same values.
#include "kernels/patch_embed.h"

namespace vit::ref {
// Below this many elements a parallel region costs more than it saves (and tests call tiny shapes
// thousands of times).
constexpr i64 kOmpMinWork = 1 << 15;

template <class T>
void patchify(T* patches, const float* img, int B, int C, int H, int W, int p) {
  const int Hp = H / p, Wp = W / p, K = C * p * p;
#pragma omp parallel for schedule(static) if ((i64)B * C * H * W >= kOmpMinWork)
  for (i64 row = 0; row < (i64)B * Hp * Wp; ++row) {
    const i64 b = row / ((i64)Hp * Wp);
    const int hp = (int)(row / Wp % Hp), wp = (int)(row % Wp);
    T* dst = patches + row * K;
    for (int c = 0; c < C; ++c)
      for (int ky = 0; ky < p; ++ky) {
        const float* src = img + ((b * C + c) * H + (i64)hp * p + ky) * W + (i64)wp * p;
        for (int kx = 0; kx < p; ++kx) dst[(c * p + ky) * p + kx] = (T)src[kx];
      }
  }
}

template void patchify<float>(float*, const float*, int, int, int, int, int);
template void patchify<double>(double*, const float*, int, int, int, int, int);

}  // namespace vit::ref
