// CPU reference cross attention (see cross_attention.h). Every score row (b, h, l) and every key row
// (b, h, j) is handled by one thread with sequential sums accumulated in double for both instantiations,
// so results do not depend on the thread count.
//   q (B, L, H, d), kv (B, T, 2, H, d): k = kv[b, j, 0, h, :], v = kv[b, j, 1, h, :]
//   out (B, L, H, d), lse (B, H, L) with lse_l = log Σ_j exp(scale · q_l · k_j)
// Backward recomputes P_lj = exp(scale · q_l · k_j − lse_l) from the saved lse and uses
//   D_l = dO_l · O_l,  dS_lj = P_lj (dO_l · v_j − D_l),
//   dq_l = scale Σ_j dS_lj k_j,  dk_j = scale Σ_l dS_lj q_l,  dv_j = Σ_l P_lj dO_l.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cross_attention.h"

namespace vit::ref {
namespace {

// Element offsets of the rows named in cross_attention.h.
struct XattnLayout {
  int B, L, Tn, H, d;
  i64 q(int b, int l, int h) const { return (((i64)b * L + l) * H + h) * d; }  // also out, dout, dq
  i64 kv(int b, int j, int part, int h) const { return (((i64)b * Tn + j) * 2 + part) * H * d + (i64)h * d; }
  i64 stat(int b, int h, int l) const { return ((i64)b * H + h) * L + l; }
};

template <class T>
double dot(const T* a, const T* b, int n) {
  double s = 0;
  for (int c = 0; c < n; ++c) s += (double)a[c] * (double)b[c];
  return s;
}

}  // namespace

template <class T>
void cross_attention_forward(T* out, T* lse, const T* q, const T* kv, int B, int L, int Tn, int H, int d,
                             double scale) {
  const XattnLayout X{B, L, Tn, H, d};
#pragma omp parallel
  {
    std::vector<double> s(Tn), o(d);  // one score row and one output row per thread
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int l = 0; l < L; ++l) {
          const T* ql = q + X.q(b, l, h);
          double m = -std::numeric_limits<double>::infinity();
          for (int j = 0; j < Tn; ++j) {
            s[j] = scale * dot(ql, kv + X.kv(b, j, 0, h), d);
            m = std::max(m, s[j]);
          }
          double z = 0;  // subtract the row max so exp never overflows
          for (int j = 0; j < Tn; ++j) {
            s[j] = std::exp(s[j] - m);
            z += s[j];
          }
          std::fill(o.begin(), o.end(), 0.0);
          for (int j = 0; j < Tn; ++j) {
            const T* v = kv + X.kv(b, j, 1, h);
            const double p = s[j] / z;
            for (int c = 0; c < d; ++c) o[c] += p * v[c];
          }
          T* orow = out + X.q(b, l, h);
          for (int c = 0; c < d; ++c) orow[c] = (T)o[c];
          lse[X.stat(b, h, l)] = (T)(m + std::log(z));
        }
  }
}

template <class T>
void cross_attention_backward(T* dq, T* dkv, const T* dout, const T* q, const T* kv, const T* out, const T* lse, int B,
                              int L, int Tn, int H, int d, double scale) {
  const XattnLayout X{B, L, Tn, H, d};
  std::vector<double> D((size_t)B * H * L);  // D_l = dO_l · O_l (B, H, L)
#pragma omp parallel
  {
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int l = 0; l < L; ++l) D[X.stat(b, h, l)] = dot(dout + X.q(b, l, h), out + X.q(b, l, h), d);
    // (the implicit barrier of `omp for` makes D complete before it is read below)

    std::vector<double> acc(d), acc2(d);
    // dq: one latent row l per iteration, summed over keys j in order.
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int l = 0; l < L; ++l) {
          const T* ql = q + X.q(b, l, h);
          const T* go = dout + X.q(b, l, h);
          const double ll = lse[X.stat(b, h, l)], Dl = D[X.stat(b, h, l)];
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int j = 0; j < Tn; ++j) {
            const T* k = kv + X.kv(b, j, 0, h);
            const double p = std::exp(scale * dot(ql, k, d) - ll);
            const double ds = p * (dot(go, kv + X.kv(b, j, 1, h), d) - Dl);
            for (int c = 0; c < d; ++c) acc[c] += ds * k[c];
          }
          T* g = dq + X.q(b, l, h);
          for (int c = 0; c < d; ++c) g[c] = (T)(scale * acc[c]);
        }
    // dk, dv: one key row j per iteration, summed over the latent rows l in order.
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int j = 0; j < Tn; ++j) {
          const T* k = kv + X.kv(b, j, 0, h);
          const T* v = kv + X.kv(b, j, 1, h);
          std::fill(acc.begin(), acc.end(), 0.0);    // dk
          std::fill(acc2.begin(), acc2.end(), 0.0);  // dv
          for (int l = 0; l < L; ++l) {
            const T* ql = q + X.q(b, l, h);
            const T* go = dout + X.q(b, l, h);
            const double p = std::exp(scale * dot(ql, k, d) - (double)lse[X.stat(b, h, l)]);
            const double ds = p * (dot(go, v, d) - D[X.stat(b, h, l)]);
            for (int c = 0; c < d; ++c) {
              acc[c] += ds * ql[c];
              acc2[c] += p * go[c];
            }
          }
          T* dk = dkv + X.kv(b, j, 0, h);
          T* dv = dkv + X.kv(b, j, 1, h);
          for (int c = 0; c < d; ++c) {
            dk[c] = (T)(scale * acc[c]);
            dv[c] = (T)acc2[c];
          }
        }
  }
}

#define VIT_INSTANTIATE(T)                                                                                          \
  template void cross_attention_forward<T>(T*, T*, const T*, const T*, int, int, int, int, int, double);           \
  template void cross_attention_backward<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, int, int, int, \
                                            int, int, double);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
#undef VIT_INSTANTIATE

}  // namespace vit::ref
