// The augmentations of timm's ImageNet pipeline, on 8-bit HWC input, writing normalized planar float:
//   train: RandomResizedCrop (torchvision's parameter search) -> flips -> color jitter -> normalize ->
//          random erasing ('const' mode: zeros after normalization)
//   eval:  resize (shorter side to floor(img / crop_pct)) -> center crop -> normalize
// Every random number comes from a SampleRng (see sample_rng.h).
#pragma once
#include <array>

#include "data/resample.h"
#include "data/sample_rng.h"
#include "engine/config.h"

namespace vit::data {

enum class Split { train, val };

// A crop box in source pixels (torchvision's (i, j, h, w) = (y, x, h, w)).
struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;
  bool operator==(const CropBox&) const = default;
};

// torchvision RandomResizedCrop.get_params: 10 attempts at area fraction ~ U(scale) and log-uniform
// aspect ratio; then the center-crop fallback clamped to `ratio`.
CropBox rrc_params(int img_w, int img_h, std::array<double, 2> scale, std::array<double, 2> ratio,
                   const SampleRng& rng);

// Eval geometry: the size the whole image is resized to and the window (center crop) taken from it.
struct EvalGeometry {
  int resize_w = 0, resize_h = 0, crop_x = 0, crop_y = 0;
  bool operator==(const EvalGeometry&) const = default;
};
EvalGeometry eval_geometry(int img_w, int img_h, int out_w, int out_h, double crop_pct);

// Color jitter in 0..255 space, planar (C, H, W): brightness, contrast, saturation with the given
// factors, applied in `order` (0 = brightness, 1 = contrast, 2 = saturation), as torchvision's tensor
// ColorJitter (contrast around the mean BT.601 gray level; saturation blends with the pixel's gray).
void apply_color_jitter(float* img, int C, int H, int W, const std::array<double, 3>& factors,
                        const std::array<int, 3>& order);

// timm RandomErasing (mode 'const', one rectangle, area 2%..33%, aspect 0.3..3.3) on normalized planar
// data: with probability `prob`, zeros a rectangle in every channel.
void random_erasing(float* img, int C, int H, int W, double prob, const SampleRng& rng);

struct TransformScratch {
  ResampleScratch resample;
};

// One split's pipeline, set up once from the config.
class Transform {
 public:
  Transform(const TransformConfig& tc, Split split, int channels, int out_h, int out_w);
  // Writes the sample as normalized planar float (C, out_h, out_w) into dst.
  void apply(const ImageView& img, const SampleRng& rng, float* dst, TransformScratch& s) const;
  int channels() const { return channels_; }
  int out_h() const { return out_h_; }
  int out_w() const { return out_w_; }
  size_t sample_floats() const { return (size_t)channels_ * out_h_ * out_w_; }

 private:
  TransformConfig tc_;
  Split split_;
  int channels_, out_h_, out_w_;
  Interp interp_;
  float scale_[3], bias_[3];  // normalize: v * scale + bias == (v / 255 - mean) / std
};

}  // namespace vit::data
