// The safetensors format (the weights format of timm / Hugging Face): 8-byte little-endian header length
// N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the byte buffer the offsets index. The reader validates the whole header before reading any
// tensor; the writer produces what the reference implementation produces (tensors ordered by
// decreasing dtype alignment, then name, packed without gaps; header keys in that order after
// "__metadata__"; header padded with spaces to a multiple of 8), so safetensors.torch.load_file reads it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/durable_io.h"

namespace vit::safetensors {

namespace fs = std::filesystem;

// In the reference implementation's order, which is increasing alignment (the writer sorts on it).
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };
size_t dtype_size(Dtype t);
const char* dtype_name(Dtype t);
std::optional<Dtype> parse_dtype(std::string_view name);

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference's limit

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data buffer (after the header)
  uint64_t numel = 0;
};

// IEEE half and bfloat16 bit patterns to float (exact; NaN payloads kept).
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t h);

class Reader {
 public:
  explicit Reader(fs::path path);

  const fs::path& path() const { return file_.path(); }
  // Sorted by name.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(std::string_view name) const;
  // Throws a vit::Error naming the file and the missing tensor.
  const TensorInfo& tensor(std::string_view name) const;

  // Raw little-endian bytes as stored.
  std::vector<std::byte> read_raw(std::string_view name) const;
  void read_raw(std::string_view name, std::span<std::byte> out) const;
  // As float32, converting F16, BF16 and F64 (other dtypes are refused: read them raw).
  std::vector<float> read_f32(std::string_view name) const;
  void read_f32(std::string_view name, std::span<float> out) const;

 private:
  std::string where() const { return "safetensors " + file_.path().string() + ": "; }
  io::File file_;
  uint64_t data_start_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors (spans must stay valid until write()), then writes the file atomically
// ("<path>.tmp", fsync, rename, fsync of the directory).
class Writer {
 public:
  void add(std::string name, Dtype dtype, std::vector<int64_t> shape, std::span<const std::byte> data);
  void add_f32(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
    add(std::move(name), Dtype::F32, std::move(shape), std::as_bytes(data));
  }
  void set_metadata(std::string key, std::string value);
  // The padded header JSON the file will hold (tests compare it with the reference's bytes).
  std::string header() const;
  void write(const fs::path& path) const;

 private:
  struct Pending {
    std::string name;
    Dtype dtype;
    std::vector<int64_t> shape;
    std::span<const std::byte> data;
  };
  std::vector<const Pending*> ordered() const;
  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace vit::safetensors
