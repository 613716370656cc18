// 8-bit images as the data pipeline passes them between stages: interleaved HWC, 1 or 3 channels.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace vit::data {

// A read-only view of interleaved pixels (row-major, `c` bytes per pixel, no row padding).
struct ImageView {
  const uint8_t* data = nullptr;
  int h = 0, w = 0, c = 0;
  size_t bytes() const { return (size_t)h * (size_t)w * (size_t)c; }
};

// ITU-R BT.601 luma with the integer weights PIL's convert("L") uses (299, 587, 114 per mille).
inline uint8_t luma601(uint8_t r, uint8_t g, uint8_t b) {
  return (uint8_t)((299u * r + 587u * g + 114u * b + 500u) / 1000u);
}

// Converts `src` to `channels` (1 or 3) into `dst` (resized as needed): RGB to gray by BT.601, gray
// replicated to RGB. Returns a view of `dst`, or of `src` itself when no conversion is needed.
ImageView convert_channels(const ImageView& src, int channels, std::vector<uint8_t>& dst);

}  // namespace vit::data
