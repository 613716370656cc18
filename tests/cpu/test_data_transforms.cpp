// Transforms against hand-computed values: filter weights, crops, flips, eval geometry, jitter, erasing.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "data/transforms.h"
#include "engine/check.h"

using namespace vit::data;

namespace {

std::vector<uint8_t> pattern(int w, int h, int c) {
  std::vector<uint8_t> p((size_t)w * h * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) p[((size_t)y * w + x) * c + ch] = (uint8_t)((x * 23 + y * 41 + ch * 97 + 5) % 256);
  return p;
}

// Weights of output i, untrimmed positions: (first source pixel, weights...).
std::vector<double> taps(const AxisCoeffs& c, int i) {
  std::vector<double> out{(double)c.start[i]};
  for (int k = 0; k < c.count[i]; ++k) out.push_back(c.w[(size_t)i * c.ksize + k]);
  return out;
}

void check_taps(const AxisCoeffs& c, int i, std::vector<double> want) {
  const auto got = taps(c, i);
  REQUIRE(got.size() == want.size());
  CHECK(got[0] == want[0]);
  for (size_t k = 1; k < want.size(); ++k) CHECK(got[k] == doctest::Approx(want[k]).epsilon(1e-6));
}

const float kOne[3] = {1, 1, 1}, kZero[3] = {0, 0, 0};

}  // namespace

TEST_CASE("data resample: filter weights (PIL's rules) by hand") {
  AxisCoeffs c;
  // Same size: every output is its source pixel (the bicubic kernel is 1 at 0 and 0 at ±1, ±2).
  for (Interp f : {Interp::bilinear, Interp::bicubic}) {
    compute_coeffs(5, 5, 0, 5, f, c);
    for (int i = 0; i < 5; ++i) check_taps(c, i, {(double)i, 1.0});
  }
  // 2× down, bilinear: the triangle stretched to support 2 -> 1/8, 3/8, 3/8, 1/8; at the left edge the
  // window is clipped to 3 taps (3/4, 3/4, 1/4) and renormalised.
  compute_coeffs(8, 4, 0, 4, Interp::bilinear, c);
  check_taps(c, 1, {1, 1.0 / 8, 3.0 / 8, 3.0 / 8, 1.0 / 8});
  check_taps(c, 0, {0, 3.0 / 7, 3.0 / 7, 1.0 / 7});
  // 2× up, bilinear: half-pixel centres -> output 2 = 1/4 src0 + 3/4 src1.
  compute_coeffs(4, 8, 0, 8, Interp::bilinear, c);
  check_taps(c, 2, {0, 0.25, 0.75});
  // 2× up, bicubic (a = -0.5): output 4 has centre 2.25, distances 1.75, 0.75, 0.25, 1.25.
  compute_coeffs(4, 8, 0, 8, Interp::bicubic, c);
  check_taps(c, 4, {0, -0.0234375, 0.2265625, 0.8671875, -0.0703125});
  // A window of the full resize gives the same weights as the full resize.
  AxisCoeffs full;
  compute_coeffs(37, 16, 0, 16, Interp::bicubic, full);
  compute_coeffs(37, 16, 5, 7, Interp::bicubic, c);
  for (int i = 0; i < 7; ++i) CHECK(taps(c, i) == taps(full, i + 5));
}

TEST_CASE("data resample: crops at scale 1 copy pixels - flips mirror - 2x down and up by hand") {
  const int W = 11, H = 9;
  for (int C : {1, 3}) {
    CAPTURE(C);
    const auto p = pattern(W, H, C);
    const ImageView img{p.data(), H, W, C};
    ResampleScratch s;
    for (Interp f : {Interp::bilinear, Interp::bicubic})
      for (bool hf : {false, true})
        for (bool vf : {false, true}) {
          ResampleGeometry g{3, 2, 5, 4, 5, 4, 0, 0, 5, 4, hf, vf};
          std::vector<float> out((size_t)C * 5 * 4);
          resample_to_planar(img, g, f, kOne, kZero, out.data(), s);
          int bad = 0;
          for (int ch = 0; ch < C; ++ch)
            for (int y = 0; y < 4; ++y)
              for (int x = 0; x < 5; ++x) {
                const int sx = 3 + (hf ? 4 - x : x), sy = 2 + (vf ? 3 - y : y);
                bad += std::abs(out[((size_t)ch * 4 + y) * 5 + x] - p[((size_t)sy * W + sx) * C + ch]) > 1e-4f;
              }
          CHECK(bad == 0);
        }
  }
  // 8×8 gray ramp v = 10x + 3y, 2× down bilinear: interior output (1, 1) is the 4×4 window rows/cols
  // 1..4 with weights (1, 3, 3, 1)/8 on each axis; a linear ramp gives its value at the centre (2.5, 2.5).
  std::vector<uint8_t> ramp(64);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) ramp[y * 8 + x] = (uint8_t)(10 * x + 3 * y);
  ResampleScratch s;
  std::vector<float> out(16);
  resample_to_planar(ImageView{ramp.data(), 8, 8, 1}, ResampleGeometry{0, 0, 8, 8, 4, 4, 0, 0, 4, 4}, Interp::bilinear,
                     kOne, kZero, out.data(), s);
  CHECK(out[1 * 4 + 1] == doctest::Approx(10 * 2.5 + 3 * 2.5));
  // Left edge, clipped window (3, 3, 1)/7 over columns 0..2: 10 · (0·3 + 1·3 + 2·1)/7 + rows as above.
  CHECK(out[1 * 4 + 0] == doctest::Approx(10 * 5.0 / 7 + 3 * 2.5));
  // Right edge: columns 5..7 with weights (1, 3, 3)/7.
  CHECK(out[1 * 4 + 3] == doctest::Approx(10 * 44.0 / 7 + 3 * 2.5));
  // 2× up bilinear along x only: interior output x = 4 sits at source 1.75.
  out.assign(16 * 8, 0);
  resample_to_planar(ImageView{ramp.data(), 8, 8, 1}, ResampleGeometry{0, 0, 8, 8, 16, 8, 0, 0, 16, 8},
                     Interp::bilinear, kOne, kZero, out.data(), s);
  CHECK(out[3 * 16 + 4] == doctest::Approx(10 * 1.75 + 3 * 3));
  // Normalization folded in: scale/bias per channel.
  const float sc[1] = {0.5f}, bi[1] = {-1.0f};
  out.assign(64, 0);
  resample_to_planar(ImageView{ramp.data(), 8, 8, 1}, ResampleGeometry{0, 0, 8, 8, 8, 8, 0, 0, 8, 8}, Interp::bicubic,
                     sc, bi, out.data(), s);
  CHECK(out[5 * 8 + 6] == doctest::Approx(0.5 * (10 * 6 + 3 * 5) - 1.0));
}

TEST_CASE("data transforms: RandomResizedCrop parameters") {
  // scale = ratio = 1 on a square image: the whole image.
  CHECK(rrc_params(10, 10, {1, 1}, {1, 1}, SampleRng(1, 0, 0)) == CropBox{0, 0, 10, 10});
  // An impossible scale forces torchvision's fallback: clamp the aspect ratio to [3/4, 4/3], centre.
  const std::array<double, 2> big{2, 3}, r{3.0 / 4, 4.0 / 3};
  CHECK(rrc_params(100, 20, big, r, SampleRng(1, 0, 0)) == CropBox{36, 0, 27, 20});  // w = round(20·4/3) = 27
  CHECK(rrc_params(20, 100, big, r, SampleRng(1, 0, 0)) == CropBox{0, 36, 20, 27});  // h = round(20/(3/4)) = 27
  CHECK(rrc_params(30, 31, big, r, SampleRng(1, 0, 0)) == CropBox{0, 0, 30, 31});
  // Random boxes: inside the image, area and aspect within the ranges (up to rounding to pixels).
  int inside = 0, area_ok = 0, aspect_ok = 0, differ = 0;
  const int n = 2000;
  CropBox prev;
  for (int i = 0; i < n; ++i) {
    const CropBox b = rrc_params(300, 200, {0.08, 1.0}, r, SampleRng(7, 3, i));
    inside += b.x >= 0 && b.y >= 0 && b.w >= 1 && b.h >= 1 && b.x + b.w <= 300 && b.y + b.h <= 200;
    const double a = (double)b.w * b.h / (300.0 * 200.0);
    area_ok += a >= 0.08 * 0.95 && a <= 1.0;
    const double asp = (double)b.w / b.h;
    aspect_ok += asp >= 0.75 * 0.93 && asp <= 4.0 / 3 * 1.07;
    differ += i > 0 && !(b == prev);
    prev = b;
    CHECK(b == rrc_params(300, 200, {0.08, 1.0}, r, SampleRng(7, 3, i)));  // a pure function of the key
  }
  CHECK(inside == n);
  CHECK(area_ok == n);
  CHECK(aspect_ok == n);
  CHECK(differ > n * 9 / 10);
}

TEST_CASE("data transforms: eval resize and center crop geometry (timm: floor(img / crop_pct))") {
  // 20×10, img 8, crop_pct 0.875: scale_size = floor(9.14) = 9 on the shorter side (h), w = int(9·20/10) = 18,
  // crop top = round(0.5) = 0 (half to even), left = 5.
  CHECK(eval_geometry(20, 10, 8, 8, 0.875) == EvalGeometry{18, 9, 5, 0});
  // ImageNet-like 500×375 at 224: 256 on the short side, int(256·500/375) = 341, left = round(58.5) = 58.
  CHECK(eval_geometry(500, 375, 224, 224, 0.875) == EvalGeometry{341, 256, 58, 16});
  CHECK(eval_geometry(375, 500, 224, 224, 0.875) == EvalGeometry{256, 341, 16, 58});
  // crop_pct = 1 on an image of the output size: no resize, no crop.
  CHECK(eval_geometry(32, 32, 32, 32, 1.0) == EvalGeometry{32, 32, 0, 0});
  CHECK_THROWS_AS(eval_geometry(32, 32, 32, 32, 1.5), vit::Error);
  // The eval transform at crop_pct 1 on an output-sized image is the identity (then normalize).
  vit::TransformConfig tc;
  tc.crop_pct = 1.0;
  tc.mean = {0.5, 0.25, 0.125};
  tc.std = {0.5, 0.25, 2.0};
  const auto p = pattern(6, 5, 3);
  Transform t(tc, Split::val, 3, 5, 6);
  std::vector<float> out(3 * 30);
  TransformScratch s;
  t.apply(ImageView{p.data(), 5, 6, 3}, SampleRng(0, 0, 0), out.data(), s);
  double maxerr = 0;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 30; ++i)
      maxerr = std::max(maxerr, std::abs(out[c * 30 + i] - (p[i * 3 + c] / 255.0 - tc.mean[c]) / tc.std[c]));
  MESSAGE("eval identity + normalize, max abs error " << maxerr);
  CHECK(maxerr < 1e-5);
}

TEST_CASE("data transforms: color jitter and random erasing by hand") {
  // Two RGB pixels, planar.
  const std::vector<float> src{100, 200, 50, 20, 250, 0};  // R: 100 200, G: 50 20, B: 250 0
  auto run = [&](std::array<double, 3> f, std::array<int, 3> order) {
    auto v = src;
    apply_color_jitter(v.data(), 3, 1, 2, f, order);
    return v;
  };
  // Brightness 1.5 alone (contrast and saturation factors 1): 1.5·v clamped to 255.
  auto b = run({1.5, 1, 1}, {0, 1, 2});
  CHECK(b == std::vector<float>{150, 255, 75, 30, 255, 0});
  // Contrast 0.5: blend with the mean gray: gray = .299R + .587G + .114B per pixel.
  const double g0 = 0.299 * 100 + 0.587 * 50 + 0.114 * 250, g1 = 0.299 * 200 + 0.587 * 20 + 0.114 * 0;
  const double mean = (g0 + g1) / 2;
  auto c = run({1, 0.5, 1}, {1, 0, 2});
  for (int i = 0; i < 6; ++i) CHECK(c[i] == doctest::Approx(0.5 * src[i] + 0.5 * mean));
  // Saturation 0: every channel becomes the pixel's gray.
  auto s = run({1, 1, 0}, {2, 1, 0});
  for (int ch = 0; ch < 3; ++ch) {
    CHECK(s[ch * 2] == doctest::Approx(g0));
    CHECK(s[ch * 2 + 1] == doctest::Approx(g1));
  }
  // Order matters: brightness 2 then contrast 0 (all to the mean) is not contrast 0 then brightness 2.
  auto bc = run({2, 0, 1}, {0, 1, 2}), cb = run({2, 0, 1}, {1, 0, 2});
  CHECK(bc[0] != doctest::Approx(cb[0]));
  CHECK(cb[0] == doctest::Approx(std::min(255.0, 2 * mean)));

  // Random erasing, probability 1: one zero rectangle (same in every channel), area 2%..33%.
  const int C = 3, H = 40, W = 50;
  int checked = 0;
  for (int i = 0; i < 50; ++i) {
    std::vector<float> img((size_t)C * H * W, 1.0f);
    random_erasing(img.data(), C, H, W, 1.0, SampleRng(3, 1, i));
    int x0 = W, x1 = -1, y0 = H, y1 = -1, zeros = 0;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        if (img[(size_t)y * W + x] == 0.0f) {
          ++zeros;
          x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
        }
    if (!zeros) continue;  // all 10 attempts may miss (rare)
    ++checked;
    CHECK(zeros == (x1 - x0 + 1) * (y1 - y0 + 1));  // a rectangle
    CHECK(zeros >= 0.02 * H * W * 0.8);
    CHECK(zeros <= H * W / 3.0 * 1.2);
    int mismatch = 0;
    for (int ch = 1; ch < C; ++ch)
      for (int k = 0; k < H * W; ++k) mismatch += (img[(size_t)ch * H * W + k] == 0.0f) != (img[k] == 0.0f);
    CHECK(mismatch == 0);
  }
  CHECK(checked > 40);
  std::vector<float> img((size_t)C * H * W, 1.0f);
  random_erasing(img.data(), C, H, W, 0.0, SampleRng(3, 1, 0));
  CHECK(std::count(img.begin(), img.end(), 0.0f) == 0);
}

TEST_CASE("data transforms: train pipeline is keyed by the RNG - hflip mirrors the same crop") {
  vit::TransformConfig tc;
  tc.color_jitter = 0.4;
  tc.random_erasing = 0.25;
  const auto p = pattern(40, 30, 3);
  const ImageView img{p.data(), 30, 40, 3};
  TransformScratch s;
  auto run = [&](const vit::TransformConfig& c, const SampleRng& r) {
    Transform t(c, Split::train, 3, 16, 16);
    std::vector<float> out(3 * 256);
    t.apply(img, r, out.data(), s);
    return out;
  };
  CHECK(run(tc, SampleRng(5, 2, 9)) == run(tc, SampleRng(5, 2, 9)));
  CHECK(run(tc, SampleRng(5, 2, 9)) != run(tc, SampleRng(5, 2, 10)));
  CHECK(run(tc, SampleRng(5, 2, 9)) != run(tc, SampleRng(5, 3, 9)));
  vit::TransformConfig a, b;
  a.hflip = 0.0;
  b.hflip = 1.0;
  const auto o0 = run(a, SampleRng(1, 1, 1)), o1 = run(b, SampleRng(1, 1, 1));
  int bad = 0;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 16; ++y)
      for (int x = 0; x < 16; ++x) bad += o0[(c * 16 + y) * 16 + x] != o1[(c * 16 + y) * 16 + 15 - x];
  CHECK(bad == 0);
}
