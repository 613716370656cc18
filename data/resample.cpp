#include "data/resample.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/check.h"

namespace vit::data {

Interp parse_interp(const std::string& s, const char* key) {
  if (s == "bilinear") return Interp::bilinear;
  if (s == "bicubic") return Interp::bicubic;
  fail(key, " = \"", s, "\": expected \"bilinear\" or \"bicubic\"");
}

namespace {

double filter_support(Interp f) { return f == Interp::bilinear ? 1.0 : 2.0; }

double filter_eval(Interp f, double x) {
  x = std::fabs(x);
  if (f == Interp::bilinear) return x < 1.0 ? 1.0 - x : 0.0;
  const double a = -0.5;  // PIL's bicubic (Keys' kernel with a = -0.5)
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

}  // namespace

void compute_coeffs(int in_len, int full_out, int out0, int out_n, Interp interp, AxisCoeffs& c) {
  VIT_ASSERT(in_len > 0 && full_out > 0 && out0 >= 0 && out_n >= 0 && out0 + out_n <= full_out);
  const double scale = (double)in_len / full_out;
  const double filterscale = std::max(scale, 1.0);
  const double support = filter_support(interp) * filterscale;
  c.ksize = (int)std::ceil(support) * 2 + 1;
  c.start.resize(out_n);
  c.count.resize(out_n);
  c.w.assign((size_t)out_n * c.ksize, 0.0f);
  std::vector<double> tmp(c.ksize);
  for (int i = 0; i < out_n; ++i) {
    const double center = (out0 + i + 0.5) * scale;
    const int lo = std::max((int)std::floor(center - support + 0.5), 0);
    const int hi = std::min((int)std::floor(center + support + 0.5), in_len);
    const int n = std::min(hi - lo, c.ksize);
    double sum = 0.0;
    for (int k = 0; k < n; ++k) {
      tmp[k] = filter_eval(interp, (k + lo - center + 0.5) / filterscale);
      sum += tmp[k];
    }
    // Trim zero-weight taps at the ends so the inner loops do no useless work.
    int a = 0, b = n;
    while (a < b && tmp[a] == 0.0) ++a;
    while (b > a && tmp[b - 1] == 0.0) --b;
    c.start[i] = lo + a;
    c.count[i] = b - a;
    for (int k = a; k < b; ++k) c.w[(size_t)i * c.ksize + (k - a)] = (float)(sum != 0.0 ? tmp[k] / sum : 0.0);
  }
}

namespace {

typedef float v4f __attribute__((vector_size(16)));  // SSE2-wide, portable GCC vector extension

v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Gives every output the same number of taps K (the largest count): windows that would run past the end
// move left, their weights move right within the K slots, the new taps weigh 0 (adding 0 · v changes no
// sum). A fixed trip count lets the horizontal pass unroll. Returns K.
int uniform_taps(AxisCoeffs& c, int in_len) {
  int k = 0;
  for (int n : c.count) k = std::max(k, n);
  for (size_t i = 0; i < c.count.size(); ++i) {
    float* w = &c.w[i * c.ksize];
    const int shift = std::max(0, c.start[i] + k - in_len);
    if (shift > 0) {
      for (int j = c.count[i] - 1; j >= 0; --j) w[j + shift] = w[j];
      std::fill(w, w + shift, 0.0f);
      c.start[i] -= shift;
    }
    std::fill(w + shift + c.count[i], w + k, 0.0f);
    c.count[i] = k;
  }
  return k;
}

// Horizontal pass of one row: out[x] = sum_k w[x][k] · in[start[x] + k], 4 floats a pixel for RGB.
template <int C, int K>
void hpass(const AxisCoeffs& hx, int k_runtime, const float* in, float* out, int ow) {
  const int kk = K > 0 ? K : k_runtime;
  for (int x = 0; x < ow; ++x) {
    const float* wh = &hx.w[(size_t)x * hx.ksize];
    const float* p = in + (size_t)hx.start[x] * C;
    if constexpr (C == 3) {
      v4f a = {0, 0, 0, 0};
      for (int k = 0; k < kk; ++k) a += wh[k] * load4(p + 3 * k);
      std::memcpy(out + 4 * x, &a, sizeof a);
    } else {
      float a = 0.0f;
      for (int k = 0; k < kk; ++k) a += wh[k] * p[k];
      out[x] = a;
    }
  }
}

template <int C>
void hpass_dispatch(const AxisCoeffs& hx, int k, const float* in, float* out, int ow) {
  switch (k) {
    case 1: return hpass<C, 1>(hx, k, in, out, ow);
    case 2: return hpass<C, 2>(hx, k, in, out, ow);
    case 3: return hpass<C, 3>(hx, k, in, out, ow);
    case 4: return hpass<C, 4>(hx, k, in, out, ow);
    case 5: return hpass<C, 5>(hx, k, in, out, ow);
    case 6: return hpass<C, 6>(hx, k, in, out, ow);
    case 7: return hpass<C, 7>(hx, k, in, out, ow);
    case 8: return hpass<C, 8>(hx, k, in, out, ow);
    default: return hpass<C, 0>(hx, k, in, out, ow);
  }
}

// Vertical pass first (for each output row, a weighted sum of whole source rows of the box: contiguous,
// so it vectorises), then the horizontal pass on that one float row. Separable filtering gives the same
// result in either order; this one keeps the larger share of the work in the vectorised loop whenever
// the box is wider than the output (downscaling, the common case for 224 crops of ImageNet photos).
template <int C>
void resample_impl(const ImageView& src, const ResampleGeometry& g, Interp interp, const float* scale,
                   const float* bias, float* dst, ResampleScratch& s) {
  compute_coeffs(g.box_w, g.full_w, g.win_x, g.win_w, interp, s.hx);
  compute_coeffs(g.box_h, g.full_h, g.win_y, g.win_h, interp, s.vy);
  const int kh = uniform_taps(s.hx, g.box_w);
  const int ow = g.win_w, oh = g.win_h;
  const size_t rowlen = (size_t)g.box_w * C, stride = (size_t)src.w * C, plane = (size_t)oh * ow;
  s.row.assign(rowlen + 4, 0.0f);  // + padding: the horizontal pass loads 4 floats at the last pixel
  s.hrow.resize((size_t)ow * 4);
  float* acc = s.row.data();
  for (int y = 0; y < oh; ++y) {
    const float* wv = &s.vy.w[(size_t)y * s.vy.ksize];
    const uint8_t* base = src.data + (size_t)(g.box_y + s.vy.start[y]) * stride + (size_t)g.box_x * C;
    const int nv = s.vy.count[y];
    if (nv == 0) {
      std::fill(acc, acc + rowlen, 0.0f);
    } else {
      const float w0 = wv[0];
      for (size_t i = 0; i < rowlen; ++i) acc[i] = w0 * (float)base[i];
      for (int k = 1; k < nv; ++k) {
        const uint8_t* row = base + (size_t)k * stride;
        const float wk = wv[k];
        for (size_t i = 0; i < rowlen; ++i) acc[i] += wk * (float)row[i];
      }
    }
    // Horizontal pass into hrow (interleaved, 4 floats a pixel for RGB), then clamp, normalize and
    // de-interleave into the planar output row in contiguous (vectorisable) loops.
    float* hrow = s.hrow.data();
    hpass_dispatch<C>(s.hx, kh, acc, hrow, ow);
    const size_t yo = (size_t)(g.vflip ? oh - 1 - y : y) * ow;
    constexpr int step = C == 3 ? 4 : 1;
    for (int ch = 0; ch < C; ++ch) {
      float* d = dst + ch * plane + yo;
      const float* h = hrow + ch;
      const float sc = scale[ch], bi = bias[ch];
      if (!g.hflip)
        for (int x = 0; x < ow; ++x) d[x] = std::min(std::max(h[step * x], 0.0f), 255.0f) * sc + bi;
      else
        for (int x = 0; x < ow; ++x) d[ow - 1 - x] = std::min(std::max(h[step * x], 0.0f), 255.0f) * sc + bi;
    }
  }
}

}  // namespace

void resample_to_planar(const ImageView& src, const ResampleGeometry& g, Interp interp, const float* scale,
                        const float* bias, float* dst, ResampleScratch& s) {
  VIT_ASSERT(g.box_x >= 0 && g.box_y >= 0 && g.box_w > 0 && g.box_h > 0 && g.box_x + g.box_w <= src.w &&
                 g.box_y + g.box_h <= src.h,
             "box ", g.box_x, ",", g.box_y, " ", g.box_w, "x", g.box_h, " in ", src.w, "x", src.h);
  VIT_ASSERT(g.win_w > 0 && g.win_h > 0 && g.win_x >= 0 && g.win_y >= 0 && g.win_x + g.win_w <= g.full_w &&
             g.win_y + g.win_h <= g.full_h);
  if (src.c == 1) resample_impl<1>(src, g, interp, scale, bias, dst, s);
  else if (src.c == 3) resample_impl<3>(src, g, interp, scale, bias, dst, s);
  else VIT_ASSERT(false, "channels ", src.c);
}

ImageView resize_u8(const ImageView& src, int new_w, int new_h, Interp interp, std::vector<uint8_t>& out,
                    ResampleScratch& s) {
  ResampleGeometry g{0, 0, src.w, src.h, new_w, new_h, 0, 0, new_w, new_h, false, false};
  std::vector<float> planar((size_t)src.c * new_w * new_h);
  const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
  resample_to_planar(src, g, interp, one, zero, planar.data(), s);
  out.resize(planar.size());
  const size_t plane = (size_t)new_w * new_h;
  for (size_t i = 0; i < plane; ++i)
    for (int ch = 0; ch < src.c; ++ch) out[i * src.c + ch] = (uint8_t)std::lround(planar[ch * plane + i]);
  return ImageView{out.data(), new_h, new_w, src.c};
}

}  // namespace vit::data
