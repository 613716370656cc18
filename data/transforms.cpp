#include "data/transforms.h"

#include <algorithm>
#include <cmath>

#include "engine/check.h"

namespace vit::data {

namespace {
// Python's round(): halves to even (the default floating-point rounding mode).
int round_even(double v) { return (int)std::nearbyint(v); }
}  // namespace

CropBox rrc_params(int img_w, int img_h, std::array<double, 2> scale, std::array<double, 2> ratio,
                   const SampleRng& rng) {
  const double area = (double)img_w * img_h;
  const double log_r0 = std::log(ratio[0]), log_r1 = std::log(ratio[1]);
  for (uint64_t a = 0; a < 10; ++a) {
    const uint64_t d = draw::rrc + 4 * a;
    const double target_area = area * rng.uniform(d, scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(d + 1, log_r0, log_r1));
    const int w = round_even(std::sqrt(target_area * aspect));
    const int h = round_even(std::sqrt(target_area / aspect));
    if (0 < w && w <= img_w && 0 < h && h <= img_h) {
      const int i = (int)rng.randint(d + 2, 0, img_h - h);
      const int j = (int)rng.randint(d + 3, 0, img_w - w);
      return CropBox{j, i, w, h};
    }
  }
  // Fallback: the whole image, cut to the nearest allowed aspect ratio, centered.
  const double in_ratio = (double)img_w / img_h;
  const double rmin = std::min(ratio[0], ratio[1]), rmax = std::max(ratio[0], ratio[1]);
  int w = img_w, h = img_h;
  if (in_ratio < rmin) h = round_even(w / rmin);
  else if (in_ratio > rmax) w = round_even(h * rmax);
  w = std::clamp(w, 1, img_w);
  h = std::clamp(h, 1, img_h);
  return CropBox{(img_w - w) / 2, (img_h - h) / 2, w, h};
}

EvalGeometry eval_geometry(int img_w, int img_h, int out_w, int out_h, double crop_pct) {
  VIT_REQUIRE(crop_pct > 0.0 && crop_pct <= 1.0, "data.transforms.crop_pct = ", crop_pct,
              ": must be in (0, 1] (eval resizes to img_size / crop_pct, then crops img_size)");
  EvalGeometry g;
  if (out_w == out_h) {
    // timm: Resize(floor(img / crop_pct)) on the shorter side, torchvision's size rule for the longer.
    const int s = (int)std::floor(out_w / crop_pct);
    const int shorter = std::min(img_w, img_h), longer = std::max(img_w, img_h);
    const int new_long = (int)((double)s * longer / shorter);
    g.resize_w = img_w <= img_h ? s : new_long;
    g.resize_h = img_w <= img_h ? new_long : s;
  } else {
    // timm's ResizeKeepRatio toward (floor(h / crop_pct), floor(w / crop_pct)), shorter relative side.
    const double sh = std::floor(out_h / crop_pct), sw = std::floor(out_w / crop_pct);
    const double r = std::min(img_h / sh, img_w / sw);
    g.resize_h = round_even(img_h / r);
    g.resize_w = round_even(img_w / r);
  }
  g.resize_w = std::max(g.resize_w, out_w);
  g.resize_h = std::max(g.resize_h, out_h);
  g.crop_y = round_even((g.resize_h - out_h) / 2.0);
  g.crop_x = round_even((g.resize_w - out_w) / 2.0);
  return g;
}

void apply_color_jitter(float* img, int C, int H, int W, const std::array<double, 3>& factors,
                        const std::array<int, 3>& order) {
  const size_t plane = (size_t)H * W;
  auto clamp255 = [](double v) { return (float)std::clamp(v, 0.0, 255.0); };
  auto gray = [&](size_t i) {
    return C == 3 ? 0.299 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i] : (double)img[i];
  };
  for (int op : order) {
    const double f = factors[op];
    if (op == 0) {  // brightness: blend with black
      for (size_t i = 0; i < plane * C; ++i) img[i] = clamp255(f * img[i]);
    } else if (op == 1) {  // contrast: blend with the mean gray level
      double mean = 0.0;
      for (size_t i = 0; i < plane; ++i) mean += gray(i);
      mean /= (double)plane;
      for (size_t i = 0; i < plane * C; ++i) img[i] = clamp255(f * img[i] + (1.0 - f) * mean);
    } else if (C == 3) {  // saturation: blend with the pixel's gray (a no-op on gray images)
      for (size_t i = 0; i < plane; ++i) {
        const double g = gray(i);
        for (int ch = 0; ch < 3; ++ch) img[ch * plane + i] = clamp255(f * img[ch * plane + i] + (1.0 - f) * g);
      }
    }
  }
}

void random_erasing(float* img, int C, int H, int W, double prob, const SampleRng& rng) {
  // timm: `if random.random() > probability: return`.
  if (rng.uniform(draw::erasing) > prob) return;
  const double area = (double)H * W;
  const double log_lo = std::log(0.3), log_hi = std::log(1.0 / 0.3);
  for (uint64_t a = 0; a < 10; ++a) {
    const uint64_t d = draw::erasing + 1 + 4 * a;
    const double target = rng.uniform(d, 0.02, 1.0 / 3.0) * area;
    const double aspect = std::exp(rng.uniform(d + 1, log_lo, log_hi));
    const int h = round_even(std::sqrt(target * aspect));
    const int w = round_even(std::sqrt(target / aspect));
    if (w < W && h < H) {
      const int top = (int)rng.randint(d + 2, 0, H - h);
      const int left = (int)rng.randint(d + 3, 0, W - w);
      for (int ch = 0; ch < C; ++ch)
        for (int y = top; y < top + h; ++y) std::fill_n(img + ((size_t)ch * H + y) * W + left, w, 0.0f);
      return;
    }
  }
}

Transform::Transform(const TransformConfig& tc, Split split, int channels, int out_h, int out_w)
    : tc_(tc), split_(split), channels_(channels), out_h_(out_h), out_w_(out_w), interp_(parse_interp(tc.interpolation)) {
  VIT_REQUIRE(channels == 1 || channels == 3, "model.in_chans = ", channels, ": the data pipeline supports 1 or 3");
  VIT_REQUIRE(out_h > 0 && out_w > 0, "model.img_size = [", out_h, ", ", out_w, "]: must be positive");
  VIT_REQUIRE(tc.scale[0] > 0 && tc.scale[0] <= tc.scale[1], "data.transforms.scale = [", tc.scale[0], ", ",
              tc.scale[1], "]: need 0 < min <= max");
  VIT_REQUIRE(tc.ratio[0] > 0 && tc.ratio[0] <= tc.ratio[1], "data.transforms.ratio = [", tc.ratio[0], ", ",
              tc.ratio[1], "]: need 0 < min <= max");
  for (int c = 0; c < channels; ++c) {
    // With one channel, the first mean/std entries apply.
    VIT_REQUIRE(tc.std[c] > 0, "data.transforms.std[", c, "] = ", tc.std[c], ": must be positive");
    scale_[c] = (float)(1.0 / (255.0 * tc.std[c]));
    bias_[c] = (float)(-tc.mean[c] / tc.std[c]);
  }
  if (split == Split::val) (void)eval_geometry(out_w, out_h, out_w, out_h, tc.crop_pct);  // checks crop_pct
}

void Transform::apply(const ImageView& img, const SampleRng& rng, float* dst, TransformScratch& s) const {
  VIT_ASSERT(img.c == channels_, "image has ", img.c, " channels, pipeline ", channels_);
  ResampleGeometry g;
  if (split_ == Split::train) {
    const CropBox b = rrc_params(img.w, img.h, tc_.scale, tc_.ratio, rng);
    g = ResampleGeometry{b.x, b.y, b.w, b.h, out_w_, out_h_, 0, 0, out_w_, out_h_,
                         rng.uniform(draw::hflip) < tc_.hflip, rng.uniform(draw::vflip) < tc_.vflip};
  } else {
    const EvalGeometry e = eval_geometry(img.w, img.h, out_w_, out_h_, tc_.crop_pct);
    g = ResampleGeometry{0, 0, img.w, img.h, e.resize_w, e.resize_h, e.crop_x, e.crop_y, out_w_, out_h_, false, false};
  }
  const bool jitter = split_ == Split::train && tc_.color_jitter > 0;
  if (!jitter) {
    resample_to_planar(img, g, interp_, scale_, bias_, dst, s.resample);
  } else {
    const float one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    resample_to_planar(img, g, interp_, one, zero, dst, s.resample);
    // torchvision ColorJitter: a random order (randperm), factors ~ U[max(0, 1 - s), 1 + s].
    std::array<int, 3> order{0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(order[i], order[rng.randint(draw::jitter + 2 - i, 0, i)]);
    std::array<double, 3> f;
    const double st = tc_.color_jitter;
    for (int k = 0; k < 3; ++k) f[k] = rng.uniform(draw::jitter + 2 + k, std::max(0.0, 1.0 - st), 1.0 + st);
    apply_color_jitter(dst, channels_, out_h_, out_w_, f, order);
    const size_t plane = (size_t)out_h_ * out_w_;
    for (int c = 0; c < channels_; ++c)
      for (size_t i = 0; i < plane; ++i) dst[c * plane + i] = dst[c * plane + i] * scale_[c] + bias_[c];
  }
  if (split_ == Split::train && tc_.random_erasing > 0)
    random_erasing(dst, channels_, out_h_, out_w_, tc_.random_erasing, rng);
}

}  // namespace vit::data
