// A dataset: N samples, each a label and 8-bit pixels loaded on demand (thread-safe, const).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/decode.h"
#include "data/transforms.h"
#include "engine/config.h"

namespace vit::data {

// Where the data pipeline's messages go (one line each, no newline). Called from worker threads: the
// loader serialises calls.
using LogFn = std::function<void(const std::string&)>;

// Per-thread buffers reused across samples.
struct SampleScratch {
  std::vector<uint8_t> file;     // raw file bytes
  DecodedImage decoded;
  std::vector<uint8_t> pixels;   // converted / generated pixels
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int num_classes() const = 0;
  virtual const std::vector<std::string>& class_names() const = 0;
  virtual int label(int64_t i) const = 0;
  // Loads sample i with `channels` channels; `view` points into `s` or into the dataset's own memory and
  // stays valid until the next load with the same scratch. Returns false with `why` if the sample is
  // unusable; `note` gets a remark when a usable file needed a conversion (else "").
  virtual bool load(int64_t i, int channels, SampleScratch& s, ImageView& view, std::string& why,
                    std::string& note) const = 0;
  // The sample's file (or a description) for messages.
  virtual std::string describe(int64_t i) const = 0;
  // One line: what this dataset is (format, path, sizes).
  virtual std::string summary() const = 0;
};

// Builds the dataset of `split` from the config (format synthetic | folder | tiny_imagenet | packed).
// `img_h`, `img_w` size the synthetic images. Throws vit::Error naming the key or path on bad input.
std::unique_ptr<Dataset> make_dataset(const DataConfig& dc, Split split, int img_h, int img_w, const LogFn& log);

}  // namespace vit::data
