#include "data/fmnist.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "data/packed.h"
#include "engine/check.h"

namespace vit::data {

namespace {

uint32_t be32(const uint8_t* p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

// Parses an IDX header of unsigned bytes with `ndims` dimensions; returns the dims.
std::vector<uint32_t> idx_dims(const std::vector<uint8_t>& b, int ndims, const std::string& path) {
  VIT_REQUIRE(b.size() >= 4 + 4 * (size_t)ndims, path, ": too short for an IDX file (", b.size(), " bytes)");
  VIT_REQUIRE(b[0] == 0 && b[1] == 0 && b[2] == 0x08, path, ": not an unsigned-byte IDX file (bad magic)");
  VIT_REQUIRE(b[3] == ndims, path, ": IDX file with ", (int)b[3], " dimensions, expected ", ndims);
  std::vector<uint32_t> d(ndims);
  uint64_t n = 1;
  for (int i = 0; i < ndims; ++i) {
    d[i] = be32(b.data() + 4 + 4 * i);
    n *= d[i];
    VIT_REQUIRE(n <= (uint64_t)b.size(), path, ": IDX dimensions larger than the file");
  }
  VIT_REQUIRE(b.size() == 4 + 4 * (size_t)ndims + n, path, ": IDX file of ", b.size(), " bytes, its header says ",
              4 + 4 * ndims + n);
  return d;
}

}  // namespace

std::vector<uint8_t> read_gz_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  VIT_REQUIRE(f, "cannot open ", path, " (", std::strerror(errno), ")");
  gzbuffer(f, 1 << 20);
  std::vector<uint8_t> out;
  size_t got = 0;
  for (;;) {
    out.resize(got + (16u << 20));
    const int r = gzread(f, out.data() + got, (unsigned)(out.size() - got));
    if (r < 0) {
      int code = 0;
      std::string msg = gzerror(f, &code);
      gzclose(f);
      fail(path, ": cannot decompress (", msg, ")");
    }
    got += (size_t)r;
    if (r == 0) break;
  }
  const int rc = gzclose(f);
  VIT_REQUIRE(rc == Z_OK, path, ": truncated or corrupt gzip data");
  out.resize(got);
  return out;
}

IdxImages read_idx_images(const std::string& path) {
  std::vector<uint8_t> b = read_gz_file(path);
  const auto d = idx_dims(b, 3, path);
  VIT_REQUIRE(d[1] > 0 && d[2] > 0 && d[1] <= (uint32_t)kPackMaxSide && d[2] <= (uint32_t)kPackMaxSide, path,
              ": bad image size ", d[1], "x", d[2]);
  IdxImages im;
  im.count = d[0];
  im.rows = (int)d[1];
  im.cols = (int)d[2];
  b.erase(b.begin(), b.begin() + 16);
  im.pixels = std::move(b);
  return im;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  std::vector<uint8_t> b = read_gz_file(path);
  idx_dims(b, 1, path);
  b.erase(b.begin(), b.begin() + 8);
  return b;
}

const std::vector<std::string>& fmnist_class_names() {
  static const std::vector<std::string> names{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  return names;
}

int64_t convert_fmnist(const std::string& in_dir, const std::string& split, const std::string& out) {
  VIT_REQUIRE(split == "train" || split == "t10k", "fashion-mnist split \"", split, "\": expected train or t10k");
  auto pick = [&](const char* kind) {
    // The Debian package ships .gz; accept unpacked copies too.
    const std::string base = in_dir + "/" + split + "-" + kind;
    return std::filesystem::exists(base + ".gz") ? base + ".gz" : base;
  };
  const std::string ip = pick("images-idx3-ubyte"), lp = pick("labels-idx1-ubyte");
  VIT_REQUIRE(std::filesystem::exists(ip), "missing ", ip,
              " (install the Debian package dataset-fashion-mnist, or pass the folder holding the IDX files)");
  const IdxImages im = read_idx_images(ip);
  const std::vector<uint8_t> labels = read_idx_labels(lp);
  VIT_REQUIRE((int64_t)labels.size() == im.count, lp, ": ", labels.size(), " labels for ", im.count, " images in ", ip);
  const auto& names = fmnist_class_names();
  PackWriter w(out, 1, names);
  const size_t n = (size_t)im.rows * im.cols;
  for (int64_t i = 0; i < im.count; ++i) {
    VIT_REQUIRE(labels[i] < names.size(), lp, ": label ", (int)labels[i], " at ", i, " is not a Fashion-MNIST class");
    w.add(ImageView{im.pixels.data() + i * n, im.rows, im.cols, 1}, labels[i]);
  }
  w.finish();
  return im.count;
}

}  // namespace vit::data
