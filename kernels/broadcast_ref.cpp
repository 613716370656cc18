#include "kernels/broadcast.h"

namespace vit::ref {

template <class T>
void broadcast_rows_forward(T* out, const T* src, int B, int L, int C) {
  for (int b = 0; b < B; ++b)
    for (int l = 0; l < L; ++l)
      for (int c = 0; c < C; ++c) out[((i64)b * L + l) * C + c] = src[(i64)l * C + c];
}

template <class T>
void broadcast_rows_backward(T* dsrc, const T* dout, int B, int L, int C) {
  for (int l = 0; l < L; ++l)
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int b = 0; b < B; ++b) s += (double)dout[((i64)b * L + l) * C + c];
      dsrc[(i64)l * C + c] += (T)s;
    }
}

template void broadcast_rows_forward<float>(float*, const float*, int, int, int);
template void broadcast_rows_forward<double>(double*, const double*, int, int, int);
template void broadcast_rows_backward<float>(float*, const float*, int, int, int);
template void broadcast_rows_backward<double>(double*, const double*, int, int, int);

}  // namespace vit::ref
