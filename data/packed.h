// Packed dataset files (.vitpack): pre-decoded 8-bit images read through mmap, so training does no
// decoding. A dataset may be one file or a directory of shards (*.vitpack, in name order).
//
// Layout (little-endian):
//   PackHeader (64 bytes)
//   pixel data: record r is h × w × channels bytes (interleaved HWC) at data_offset + offset
//   index:      count × PackRecord (24 bytes each) at index_offset
//   names:      num_classes NUL-terminated class names at names_offset, to the end of the file
// Every offset, size and label is checked against the file size when it is opened.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace vit::data {

struct PackHeader {
  char magic[8];            // "VITPACK\0"
  uint32_t version;         // 1
  uint32_t channels;        // 1 or 3
  uint64_t count;
  uint32_t num_classes;
  uint32_t flags;           // 0
  uint64_t data_offset;
  uint64_t data_bytes;
  uint64_t index_offset;
  uint64_t names_offset;
};
static_assert(sizeof(PackHeader) == 64);

struct PackRecord {
  uint64_t offset;          // from data_offset
  uint32_t h, w;
  int32_t label;
  uint32_t crc;             // zlib crc32 of the pixels
};
static_assert(sizeof(PackRecord) == 24);

inline constexpr uint32_t kPackVersion = 1;
inline constexpr int kPackMaxSide = 65535;

// Writes a .vitpack: to `path`.tmp, renamed to `path` by finish() (an unfinished file never appears
// under the final name).
class PackWriter {
 public:
  PackWriter(const std::string& path, int channels, std::vector<std::string> class_names);
  ~PackWriter();
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;
  void add(const ImageView& img, int label);
  void finish();
  int64_t count() const { return (int64_t)index_.size(); }
  const std::string& path() const { return path_; }

 private:
  void write(const void* p, size_t n);
  std::string path_, tmp_;
  int channels_;
  std::vector<std::string> names_;
  std::FILE* f_ = nullptr;
  std::vector<PackRecord> index_;
  uint64_t data_bytes_ = 0;
};

// One .vitpack file, mapped read-only and validated.
class PackReader {
 public:
  explicit PackReader(const std::string& path);
  ~PackReader();
  PackReader(const PackReader&) = delete;
  PackReader& operator=(const PackReader&) = delete;
  int64_t size() const { return (int64_t)hdr_.count; }
  int channels() const { return (int)hdr_.channels; }
  const std::vector<std::string>& class_names() const { return names_; }
  int label(int64_t i) const { return rec(i).label; }
  ImageView image(int64_t i) const;
  // Whether record i's pixels match their stored CRC.
  bool verify(int64_t i) const;
  const std::string& path() const { return path_; }

 private:
  const PackRecord& rec(int64_t i) const { return reinterpret_cast<const PackRecord*>(base_ + hdr_.index_offset)[i]; }
  std::string path_;
  const uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  PackHeader hdr_{};
  std::vector<std::string> names_;
};

// The .vitpack files a path names: itself if a file, else the directory's *.vitpack in name order.
std::vector<std::string> pack_files(const std::string& path, const char* key);

std::unique_ptr<Dataset> open_packed_dataset(const std::string& path, const char* key, const LogFn& log);

}  // namespace vit::data
