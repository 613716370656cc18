#include "data/image.h"

#include "engine/check.h"

namespace vit::data {

ImageView convert_channels(const ImageView& src, int channels, std::vector<uint8_t>& dst) {
  VIT_ASSERT(src.c == 1 || src.c == 3, "channels ", src.c);
  VIT_ASSERT(channels == 1 || channels == 3, "channels ", channels);
  if (src.c == channels) return src;
  const size_t n = (size_t)src.h * (size_t)src.w;
  dst.resize(n * (size_t)channels);
  const uint8_t* s = src.data;
  uint8_t* d = dst.data();
  if (channels == 1) {
    for (size_t i = 0; i < n; ++i) d[i] = luma601(s[3 * i], s[3 * i + 1], s[3 * i + 2]);
  } else {
    for (size_t i = 0; i < n; ++i) d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
  }
  return ImageView{dst.data(), src.h, src.w, channels};
}

}  // namespace vit::data
