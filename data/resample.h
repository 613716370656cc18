// Separable image resampling as PIL's Image.resize does it (which is what timm's default PIL pipeline
// runs): per output pixel a window of source pixels weighted by the filter, the filter stretched by the
// scale factor when downscaling (antialiasing), windows clipped at the box edges and renormalised.
// Float arithmetic throughout (PIL rounds to uint8 between passes; we keep the fraction).
#pragma once
#include <string>
#include <vector>

#include "data/image.h"

namespace vit::data {

enum class Interp { bilinear, bicubic };
// "bilinear" | "bicubic"; throws vit::Error naming `key` otherwise.
Interp parse_interp(const std::string& s, const char* key = "data.transforms.interpolation");

// Filter weights for one axis. Output pixel i reads source pixels [start[i], start[i] + count[i]) of the
// box with weights w[i * ksize + k].
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> start, count;
  std::vector<float> w;
};

// Weights for resizing a source span of `in_len` pixels to `full_out` pixels, for the outputs
// [out0, out0 + out_n) only (a window of the full resize: eval's center crop).
void compute_coeffs(int in_len, int full_out, int out0, int out_n, Interp interp, AxisCoeffs& c);

struct ResampleScratch {
  AxisCoeffs hx, vy;
  std::vector<float> row, hrow;
};

// Geometry of one resample: the source box, the size the box is resized to, the window of that resized
// image that is produced, and mirroring of the window.
struct ResampleGeometry {
  int box_x = 0, box_y = 0, box_w = 0, box_h = 0;  // in the source image
  int full_w = 0, full_h = 0;                      // the box is resized to this
  int win_x = 0, win_y = 0, win_w = 0, win_h = 0;  // produced part of the resized image
  bool hflip = false, vflip = false;               // mirror the produced window
};

// Writes the window as planar float (C, win_h, win_w): dst = clamp(v, 0, 255) * scale[c] + bias[c].
void resample_to_planar(const ImageView& src, const ResampleGeometry& g, Interp interp, const float* scale,
                        const float* bias, float* dst, ResampleScratch& s);

// Resizes the whole image to (new_w, new_h) as interleaved uint8 (rounded, clamped) into `out`.
ImageView resize_u8(const ImageView& src, int new_w, int new_h, Interp interp, std::vector<uint8_t>& out,
                    ResampleScratch& s);

}  // namespace vit::data
