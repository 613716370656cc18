// IDX files (the MNIST / Fashion-MNIST format), plain or gzipped, and the Fashion-MNIST converter that
// turns the Debian package dataset-fashion-mnist into .vitpack files.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace vit::data {

struct IdxImages {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count × rows × cols
};

// Whole file, gunzipped if it is gzip (zlib reads plain files unchanged). Throws vit::Error.
std::vector<uint8_t> read_gz_file(const std::string& path);
// An idx3-ubyte image file; throws vit::Error naming the file on a bad magic, dims or size.
IdxImages read_idx_images(const std::string& path);
// An idx1-ubyte label file.
std::vector<uint8_t> read_idx_labels(const std::string& path);

// The ten Fashion-MNIST class names, label order.
const std::vector<std::string>& fmnist_class_names();
inline constexpr const char* kFmnistDir = "/usr/share/datasets/fashion-mnist";

// Converts `split` ("train" or "t10k") of the IDX files in `in_dir` to a 1-channel .vitpack at `out`.
// Returns the number of images written.
int64_t convert_fmnist(const std::string& in_dir, const std::string& split, const std::string& out);

}  // namespace vit::data
