// CPU reference attention (see attention.h). Every score row is handled by one thread with sequential sums
// accumulated in double for both instantiations, so results do not depend on the thread count.
//   qkv (B, T, 3, H, d): q = qkv[b, t, 0, h, :], k = qkv[b, t, 1, h, :], v = qkv[b, t, 2, h, :]
//   out (B, T, H, d), lse (B, H, T) with lse = log Σ_j exp(scale · q_i · k_j)   (undropped scores)
// With attention dropout (keep mask Z, keep scale s; Z = 1, s = 1 without), O_i = Σ_j P_ij Z_ij s v_j.
// Backward recomputes P_ij = exp(scale · q_i · k_j − lse_i) from the saved lse and uses
//   D_i = dO_i · O_i  (O the dropped output),  dS_ij = P_ij (Z_ij s dO_i · v_j − D_i),
//   dq_i = scale Σ_j dS_ij k_j,  dk_j = scale Σ_i dS_ij q_i,  dv_j = Σ_i P_ij Z_ij s dO_i.
// Why dS: with G_ij = ∂L/∂P_ij = Z_ij s dO_i · v_j, the softmax backward is P_ij (G_ij − Σ_k P_ik G_ik), and
// Σ_k P_ik Z_ik s dO_i · v_k = dO_i · O_i. Without dropout every expression reduces to the plain one, computed
// by the same operations as before the mask existed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.h"

namespace vit::ref {
namespace {

// Element offsets of the rows named in attention.h.
struct AttnLayout {
  int B, Tn, H, d;
  i64 qkv(int b, int t, int part, int h) const { return (((i64)b * Tn + t) * 3 + part) * H * d + (i64)h * d; }
  i64 out(int b, int t, int h) const { return (((i64)b * Tn + t) * H + h) * d; }
  i64 stat(int b, int h, int t) const { return ((i64)b * H + h) * Tn + t; }
};

template <class T>
double dot(const T* a, const T* b, int n) {
  double s = 0;
  for (int c = 0; c < n; ++c) s += (double)a[c] * (double)b[c];
  return s;
}

// The mask of one call: keep(b, h, i, j) and its scale; inactive (p = 0) keeps everything.
struct Mask {
  AttnDropout dr;
  int H;
  uint32_t thr = attn_mask::threshold(dr.p);
  double scale = attn_mask::keep_scale(thr);
  bool keep(int b, int h, int i, int j) const { return attn_mask::keep(dr, thr, (i64)b * H + h, i, j); }
};

}  // namespace

template <class T>
void attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int H, int d, double scale,
                       const AttnDropout& drop) {
  attn_mask::check(drop, B, Tn, H);
  const AttnLayout L{B, Tn, H, d};
  const bool dropping = drop.active();
  const Mask mask{drop, H};
#pragma omp parallel
  {
    std::vector<double> s(Tn), o(d);  // one score row and one output row per thread
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < Tn; ++i) {
          const T* q = qkv + L.qkv(b, i, 0, h);
          double m = -std::numeric_limits<double>::infinity();
          for (int j = 0; j < Tn; ++j) {
            s[j] = scale * dot(q, qkv + L.qkv(b, j, 1, h), d);
            m = std::max(m, s[j]);
          }
          double l = 0;  // subtract the row max so exp never overflows
          for (int j = 0; j < Tn; ++j) {
            s[j] = std::exp(s[j] - m);
            l += s[j];
          }
          std::fill(o.begin(), o.end(), 0.0);
          for (int j = 0; j < Tn; ++j) {
            const T* v = qkv + L.qkv(b, j, 2, h);
            double p = s[j] / l;
            if (dropping) p = mask.keep(b, h, i, j) ? p * mask.scale : 0.0;
            for (int c = 0; c < d; ++c) o[c] += p * v[c];
          }
          T* orow = out + L.out(b, i, h);
          for (int c = 0; c < d; ++c) orow[c] = (T)o[c];
          lse[L.stat(b, h, i)] = (T)(m + std::log(l));
        }
  }
}

template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int Tn, int H, int d,
                        double scale, const AttnDropout& drop) {
  attn_mask::check(drop, B, Tn, H);
  const AttnLayout L{B, Tn, H, d};
  const bool dropping = drop.active();
  const Mask mask{drop, H};
  std::vector<double> D((size_t)B * H * Tn);  // D_i = dO_i · O_i (B, H, T)
#pragma omp parallel
  {
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < Tn; ++i) D[L.stat(b, h, i)] = dot(dout + L.out(b, i, h), out + L.out(b, i, h), d);
    // (the implicit barrier of `omp for` makes D complete before it is read below)

    std::vector<double> acc(d), acc2(d);
    // dq: one query row i per iteration, summed over keys j in order.
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < Tn; ++i) {
          const T* q = qkv + L.qkv(b, i, 0, h);
          const T* go = dout + L.out(b, i, h);
          const double li = lse[L.stat(b, h, i)], Di = D[L.stat(b, h, i)];
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int j = 0; j < Tn; ++j) {
            const T* k = qkv + L.qkv(b, j, 1, h);
            const double p = std::exp(scale * dot(q, k, d) - li);
            double dp = dot(go, qkv + L.qkv(b, j, 2, h), d);  // ∂L/∂P_ij
            if (dropping) dp = mask.keep(b, h, i, j) ? dp * mask.scale : 0.0;
            const double ds = p * (dp - Di);
            for (int c = 0; c < d; ++c) acc[c] += ds * k[c];
          }
          T* dq = dqkv + L.qkv(b, i, 0, h);
          for (int c = 0; c < d; ++c) dq[c] = (T)(scale * acc[c]);
        }
    // dk, dv: one key row j per iteration, summed over queries i in order.
#pragma omp for collapse(3) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int h = 0; h < H; ++h)
        for (int j = 0; j < Tn; ++j) {
          const T* k = qkv + L.qkv(b, j, 1, h);
          const T* v = qkv + L.qkv(b, j, 2, h);
          std::fill(acc.begin(), acc.end(), 0.0);   // dk
          std::fill(acc2.begin(), acc2.end(), 0.0);  // dv
          for (int i = 0; i < Tn; ++i) {
            const T* q = qkv + L.qkv(b, i, 0, h);
            const T* go = dout + L.out(b, i, h);
            const double p = std::exp(scale * dot(q, k, d) - (double)lse[L.stat(b, h, i)]);
            double dp = dot(go, v, d), pd = p;  // ∂L/∂P_ij and the dropped probability
            if (dropping) {
              const bool kept = mask.keep(b, h, i, j);
              dp = kept ? dp * mask.scale : 0.0;
              pd = kept ? p * mask.scale : 0.0;
            }
            const double ds = p * (dp - D[L.stat(b, h, i)]);
            for (int c = 0; c < d; ++c) {
              acc[c] += ds * q[c];
              acc2[c] += pd * go[c];
            }
          }
          T* dk = dqkv + L.qkv(b, j, 1, h);
          T* dv = dqkv + L.qkv(b, j, 2, h);
          for (int c = 0; c < d; ++c) {
            dk[c] = (T)(scale * acc[c]);
            dv[c] = (T)acc2[c];
          }
        }
  }
}

template <class T>
void qkv_bias_grad(T* dbias, const T* dqkv, int B, int Tn, int H, int d) {
  const i64 rows = (i64)B * Tn, n = 3LL * H * d;
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < n; ++c) dbias[c] += dqkv[r * n + c];
}

#define VIT_INSTANTIATE(T)                                                                          \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int, double, const AttnDropout&); \
  template void attention_backward<T>(T*, const T*, const T*, const T*, const T*, int, int, int, int,    \
                                      double, const AttnDropout&);
VIT_INSTANTIATE(float)
VIT_INSTANTIATE(double)
template void qkv_bias_grad<float>(float*, const float*, int, int, int, int);
template void qkv_bias_grad<double>(double*, const double*, int, int, int, int);
#undef VIT_INSTANTIATE

}  // namespace vit::ref
