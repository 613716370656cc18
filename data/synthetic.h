// A learnable synthetic dataset made on the fly: sample i has label i % K and shows its class's look (a
// base colour, a low-frequency sinusoid of class-specific frequency, phase and tint) shifted by a few pixels,
// plus noise; every pixel a pure function of (split, i). For CPU end-to-end tests and tiny configs.
#pragma once
#include <memory>

#include "data/dataset.h"

namespace vit::data {

std::unique_ptr<Dataset> make_synthetic_dataset(int64_t n, int classes, int h, int w, Split split);

}  // namespace vit::data
