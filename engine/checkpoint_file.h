// One rank's checkpoint file: named, typed sections (master weights, Adam moments, the owned element
// ranges, RNG and loader state) with checksums, written atomically and read back with every size
// validated before anything is allocated or read.
//
// Format, version 1 (all integers little-endian):
//   [0, 64)      header: "VITCKPT\0", u32 version, u32 header bytes (64), i32 rank, i32 world size,
//                u64 layout hash, i64 step, u32 section count, u32 chunk bytes, u64 file bytes,
//                u32 metadata CRC, 4 zero bytes
//   [64, ...)    section table, 128 bytes per section: name (64 bytes, NUL-padded, printable ASCII),
//                u32 dtype, u32 zero, u64 element count, u64 byte offset, u64 byte size, 32 zero bytes
//   then         chunk CRC table: u32 CRC-32 (zlib) per `chunk bytes` piece of each section, in table
//                order (a section of S bytes has ceil(S / chunk) entries)
//   then         payloads, each starting on a 64-byte boundary, in table order; the file ends where
//                the last payload ends.
// The metadata CRC covers header (with the CRC field zeroed), section table and chunk table, so a
// damaged header is reported as such. Payload checksums are per chunk (1 MiB by default) rather than
// per section: a rank resuming on a different rank count reads only the slice it now owns and verifies
// only the chunks that slice touches; a whole-section read verifies every chunk.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "engine/durable_io.h"

namespace vit::ckpt {

namespace fs = std::filesystem;

enum class DType : uint32_t { f32 = 1, bf16 = 2, u8 = 3, i64 = 4 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

// Layout constants, public so tools and tests can reason about the bytes.
inline constexpr char kMagic[8] = {'V', 'I', 'T', 'C', 'K', 'P', 'T', '\0'};
inline constexpr uint32_t kVersion = 1;
inline constexpr uint64_t kHeaderBytes = 64;
inline constexpr uint64_t kEntryBytes = 128;
inline constexpr size_t kMaxNameBytes = 64;
inline constexpr uint64_t kPayloadAlign = 64;
inline constexpr uint32_t kDefaultChunkBytes = 1u << 20;
inline constexpr uint32_t kMinChunkBytes = 1u << 12, kMaxChunkBytes = 1u << 26;
inline constexpr uint32_t kMaxSections = 1u << 16;
inline constexpr uint64_t kMaxSectionBytes = uint64_t(1) << 40;  // 1 TiB: larger is a corrupt size field
inline constexpr int kMaxWorldSize = 1 << 20;
// Byte offsets of header fields (tests patch them to build malformed files).
inline constexpr size_t kOffVersion = 8, kOffHeaderBytes = 12, kOffRank = 16, kOffWorld = 20, kOffLayoutHash = 24,
                        kOffStep = 32, kOffNumSections = 40, kOffChunkBytes = 44, kOffFileBytes = 48, kOffMetaCrc = 56;
// Byte offsets inside a section entry.
inline constexpr size_t kEntOffDtype = 64, kEntOffCount = 72, kEntOffOffset = 80, kEntOffBytes = 88;

struct FileInfo {
  int rank = 0;
  int world_size = 1;
  uint64_t layout_hash = 0;  // the model layout the shards were cut from (the trainer computes it)
  int64_t step = 0;
};

struct SectionInfo {
  std::string name;
  DType dtype = DType::u8;
  uint64_t count = 0;   // elements
  uint64_t offset = 0;  // payload position in the file
  uint64_t bytes = 0;   // count * dtype_size
  uint64_t first_chunk = 0;  // index of its first entry in the chunk CRC table
};

// Collects named spans, then writes "<path>.tmp", fsyncs it, renames it to <path> and fsyncs the
// directory. The spans must stay valid until write(). If write() is never called or throws, <path> is
// untouched and the temporary file is removed.
class CheckpointWriter {
 public:
  CheckpointWriter(fs::path path, FileInfo info, uint32_t chunk_bytes = kDefaultChunkBytes);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // `data` holds `count` elements of `dtype` (data.size() == count * dtype_size(dtype)).
  void add(std::string name, DType dtype, uint64_t count, std::span<const std::byte> data);
  template <class T>
  void add(std::string name, std::span<const T> data) {
    add(std::move(name), dtype_of<std::remove_cv_t<T>>(), data.size(), std::as_bytes(data));
  }
  void write();

 private:
  struct Pending {
    std::string name;
    DType dtype;
    uint64_t count;
    std::span<const std::byte> data;
  };
  fs::path path_;
  FileInfo info_;
  uint32_t chunk_bytes_;
  std::vector<Pending> sections_;
  bool written_ = false;
};

// Opens and validates a checkpoint file's metadata (no payload is read until asked). Every read
// verifies the checksums of the chunks it touches. Methods are const and use positioned reads, so one
// reader may serve several threads.
class CheckpointReader {
 public:
  explicit CheckpointReader(fs::path path);

  const fs::path& path() const { return file_.path(); }
  const FileInfo& info() const { return info_; }
  uint32_t chunk_bytes() const { return chunk_bytes_; }
  uint64_t file_bytes() const { return file_bytes_; }
  const std::vector<SectionInfo>& sections() const { return sections_; }
  const SectionInfo* find(std::string_view name) const;
  // Throws a vit::Error naming the file and the missing section.
  const SectionInfo& section(std::string_view name) const;

  // Whole section into `out` (out.size() must equal the section's byte size).
  void read(std::string_view name, std::span<std::byte> out) const;
  // Elements [first, first + count) of a section into `out` (count * element size bytes).
  void read_range(std::string_view name, uint64_t first, uint64_t count, std::span<std::byte> out) const;

  // Typed helpers: check the section's dtype against T.
  template <class T>
  std::vector<T> read_vector(std::string_view name) const {
    const SectionInfo& s = typed_section(name, dtype_of<T>());
    std::vector<T> v(s.count);
    read(name, std::as_writable_bytes(std::span(v)));
    return v;
  }
  template <class T>
  void read_range_into(std::string_view name, uint64_t first, std::span<T> out) const {
    typed_section(name, dtype_of<T>());
    read_range(name, first, out.size(), std::as_writable_bytes(out));
  }

  // Reads every section and checks every checksum (ckpt_tool verify, resume validation).
  void verify() const;

  // "checkpoint <path>: " — the prefix of every message about this file.
  std::string where() const;
  // The user's fix for a damaged file in a step directory.
  std::string damaged_fix() const;

 private:
  const SectionInfo& typed_section(std::string_view name, DType want) const;
  // Reads bytes [begin, end) of the section into `out`, verifying each chunk touched.
  void read_bytes(const SectionInfo& s, uint64_t begin, uint64_t end, std::byte* out) const;

  io::File file_;
  FileInfo info_;
  uint32_t chunk_bytes_ = 0;
  uint64_t file_bytes_ = 0;
  std::vector<SectionInfo> sections_;
  std::vector<uint32_t> chunk_crcs_;
};

}  // namespace vit::ckpt
