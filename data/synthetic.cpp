#include "data/synthetic.h"

#include <cmath>

#include "engine/check.h"
#include "engine/rng.h"

namespace vit::data {

namespace {

class SyntheticDataset final : public Dataset {
 public:
  SyntheticDataset(int64_t n, int k, int h, int w, Split split) : n_(n), k_(k), h_(h), w_(w), split_(split) {
    for (int c = 0; c < k; ++c) names_.push_back(detail::cat("class", c));
  }
  int64_t size() const override { return n_; }
  int num_classes() const override { return k_; }
  const std::vector<std::string>& class_names() const override { return names_; }
  int label(int64_t i) const override { return (int)(i % k_); }
  std::string describe(int64_t i) const override {
    return detail::cat("synthetic ", split_ == Split::train ? "train" : "val", " sample ", i);
  }
  std::string summary() const override {
    return detail::cat("synthetic ", split_ == Split::train ? "train" : "val", ": ", n_, " images ", h_, "x", w_,
                       ", ", k_, " classes");
  }

  bool load(int64_t i, int channels, SampleScratch& s, ImageView& view, std::string&, std::string& note) const override {
    note.clear();
    const int k = label(i);
    // Class look: a base colour on a circle around mid-gray, and a sinusoid of frequencies (1..3, 1..3)
    // and phase from the class number, tinted by a second colour.
    const double two_pi = 6.283185307179586;
    const double fx = 1 + k % 3, fy = 1 + (k / 3) % 3;
    const double phase = two_pi * k / k_;
    double base[3], tint[3];
    for (int c = 0; c < 3; ++c) {
      base[c] = 128.0 + 60.0 * std::cos(two_pi * ((double)k / k_ + c / 3.0));
      tint[c] = 0.5 + 0.5 * std::cos(two_pi * (2.0 * k / k_ + c / 3.0));
    }
    // Per sample: a shift of up to 1/8 of the image and pixel noise, from a fixed seed per split.
    const uint64_t seed = split_ == Split::train ? 0x5157a1ULL : 0x5157a2ULL;
    const double dx = (rng::uniform(seed, (uint64_t)i, 0) - 0.5) * w_ / 4.0;
    const double dy = (rng::uniform(seed, (uint64_t)i, 1) - 0.5) * h_ / 4.0;
    s.pixels.resize((size_t)h_ * w_ * 3);
    uint8_t* p = s.pixels.data();
    for (int y = 0; y < h_; ++y)
      for (int x = 0; x < w_; ++x) {
        const double v = std::sin(two_pi * (fx * (x + dx) / w_ + fy * (y + dy) / h_) + phase);
        for (int c = 0; c < 3; ++c) {
          const double noise = (rng::uniform(seed, (uint64_t)i, 2 + ((uint64_t)y * w_ + x) * 3 + c) - 0.5) * 40.0;
          const double val = base[c] + 60.0 * tint[c] * v + noise;
          *p++ = (uint8_t)std::lround(std::fmin(255.0, std::fmax(0.0, val)));
        }
      }
    view = convert_channels(ImageView{s.pixels.data(), h_, w_, 3}, channels, s.file);
    return true;
  }

 private:
  int64_t n_;
  int k_, h_, w_;
  Split split_;
  std::vector<std::string> names_;
};

}  // namespace

std::unique_ptr<Dataset> make_synthetic_dataset(int64_t n, int classes, int h, int w, Split split) {
  VIT_REQUIRE(n > 0, "data.synthetic", split == Split::train ? "_samples" : "_val_samples", " = ", n, ": must be positive");
  VIT_REQUIRE(classes > 0, "data.synthetic_classes = ", classes, ": must be positive");
  VIT_REQUIRE(h > 0 && w > 0, "synthetic images need a positive size, got ", h, "x", w);
  return std::make_unique<SyntheticDataset>(n, classes, h, w, split);
}

}  // namespace vit::data
