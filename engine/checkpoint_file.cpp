#include "engine/checkpoint_file.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "engine/check.h"

namespace vit::ckpt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::u8: return 1;
    case DType::i64: return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::u8: return "u8";
    case DType::i64: return "i64";
  }
  return "?";
}

namespace {

bool known_dtype(uint32_t code) { return code >= 1 && code <= 4; }

void put_u32(std::byte* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::byte((v >> (8 * i)) & 0xff);
}
void put_u64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::byte((v >> (8 * i)) & 0xff);
}
uint32_t get_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}
uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}

uint32_t crc(const std::byte* p, uint64_t n) {
  return static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(p), static_cast<z_size_t>(n)));
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }
uint64_t chunks_of(uint64_t bytes, uint64_t chunk) { return (bytes + chunk - 1) / chunk; }
bool is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

// Printable ASCII without spaces, 1..64 bytes: names stay greppable and unambiguous in messages.
bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > kMaxNameBytes) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

bool all_zero(const std::byte* p, size_t n) {
  return std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; });
}

void check_info(const FileInfo& info, const std::string& where) {
  VIT_REQUIRE(info.world_size >= 1 && info.world_size <= kMaxWorldSize, where, "world size ", info.world_size,
              " out of range [1, ", kMaxWorldSize, "]");
  VIT_REQUIRE(info.rank >= 0 && info.rank < info.world_size, where, "rank ", info.rank, " not in [0, world size ",
              info.world_size, ")");
  VIT_REQUIRE(info.step >= 0, where, "negative step ", info.step);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Writer

CheckpointWriter::CheckpointWriter(fs::path path, FileInfo info, uint32_t chunk_bytes)
    : path_(std::move(path)), info_(info), chunk_bytes_(chunk_bytes) {
  const std::string w = "checkpoint " + path_.string() + ": ";
  check_info(info_, w);
  VIT_REQUIRE(is_pow2(chunk_bytes_) && chunk_bytes_ >= kMinChunkBytes && chunk_bytes_ <= kMaxChunkBytes, w,
              "checksum chunk size ", chunk_bytes_, " must be a power of two in [", kMinChunkBytes, ", ",
              kMaxChunkBytes, "]");
}

CheckpointWriter::~CheckpointWriter() = default;

void CheckpointWriter::add(std::string name, DType dtype, uint64_t count, std::span<const std::byte> data) {
  const std::string w = "checkpoint " + path_.string() + ": ";
  VIT_REQUIRE(!written_, w, "section '", name, "' added after write()");
  VIT_REQUIRE(valid_name(name), w, "section name '", name, "' must be 1..", kMaxNameBytes,
              " printable ASCII characters without spaces");
  VIT_REQUIRE(known_dtype(static_cast<uint32_t>(dtype)), w, "section '", name, "' has an unknown dtype");
  VIT_REQUIRE(sections_.size() < kMaxSections, w, "more than ", kMaxSections, " sections");
  for (const Pending& p : sections_) VIT_REQUIRE(p.name != name, w, "section '", name, "' added twice");
  const uint64_t es = dtype_size(dtype);
  VIT_REQUIRE(count <= kMaxSectionBytes / es, w, "section '", name, "' has ", count, " elements, above the ",
              kMaxSectionBytes, "-byte section limit");
  VIT_REQUIRE(data.size() == count * es, w, "section '", name, "': ", count, " ", dtype_name(dtype), " elements need ",
              count * es, " bytes but the span holds ", data.size());
  sections_.push_back({std::move(name), dtype, count, data});
}

void CheckpointWriter::write() {
  VIT_REQUIRE(!written_, "checkpoint ", path_.string(), ": write() called twice");
  written_ = true;
  const uint64_t n = sections_.size();
  const uint64_t chunk = chunk_bytes_;

  // Layout: header, table, chunk CRCs, then 64-byte aligned payloads in order.
  uint64_t total_chunks = 0;
  for (const Pending& p : sections_) total_chunks += chunks_of(p.data.size(), chunk);
  const uint64_t meta_end = kHeaderBytes + n * kEntryBytes + 4 * total_chunks;
  std::vector<uint64_t> offsets(n);
  uint64_t file_bytes = meta_end, cursor = align_up(meta_end, kPayloadAlign);
  for (uint64_t i = 0; i < n; ++i) {
    offsets[i] = cursor;
    file_bytes = cursor + sections_[i].data.size();
    cursor = align_up(file_bytes, kPayloadAlign);
  }

  const fs::path tmp = io::tmp_path(path_);
  // Remove the temporary file on any failure so a retry (or the next step) starts clean.
  struct TmpGuard {
    const fs::path& p;
    bool armed = true;
    ~TmpGuard() {
      if (armed) {
        std::error_code ec;
        fs::remove(p, ec);
      }
    }
  } guard{tmp};

  io::File f = io::File::create(tmp);
  f.truncate(file_bytes);  // gaps between payloads read back as zeros

  std::vector<std::byte> meta(meta_end, std::byte{0});
  std::byte* crcs = meta.data() + kHeaderBytes + n * kEntryBytes;
  uint64_t chunk_index = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const Pending& p = sections_[i];
    std::byte* e = meta.data() + kHeaderBytes + i * kEntryBytes;
    std::memcpy(e, p.name.data(), p.name.size());
    put_u32(e + kEntOffDtype, static_cast<uint32_t>(p.dtype));
    put_u64(e + kEntOffCount, p.count);
    put_u64(e + kEntOffOffset, offsets[i]);
    put_u64(e + kEntOffBytes, p.data.size());
    // One pass over the data: checksum a chunk, write it.
    for (uint64_t b = 0; b < p.data.size(); b += chunk) {
      const uint64_t len = std::min<uint64_t>(chunk, p.data.size() - b);
      put_u32(crcs + 4 * chunk_index++, crc(p.data.data() + b, len));
    }
    f.write_at(offsets[i], p.data);
  }

  std::memcpy(meta.data(), kMagic, sizeof kMagic);
  put_u32(meta.data() + kOffVersion, kVersion);
  put_u32(meta.data() + kOffHeaderBytes, static_cast<uint32_t>(kHeaderBytes));
  put_u32(meta.data() + kOffRank, static_cast<uint32_t>(info_.rank));
  put_u32(meta.data() + kOffWorld, static_cast<uint32_t>(info_.world_size));
  put_u64(meta.data() + kOffLayoutHash, info_.layout_hash);
  put_u64(meta.data() + kOffStep, static_cast<uint64_t>(info_.step));
  put_u32(meta.data() + kOffNumSections, static_cast<uint32_t>(n));
  put_u32(meta.data() + kOffChunkBytes, chunk_bytes_);
  put_u64(meta.data() + kOffFileBytes, file_bytes);
  put_u32(meta.data() + kOffMetaCrc, crc(meta.data(), meta.size()));  // computed with the field still zero
  f.write_at(0, meta);

  f.sync();
  f.close();
  io::rename_durable(tmp, path_);
  guard.armed = false;
}

// ---------------------------------------------------------------------------------------------
// Reader

std::string CheckpointReader::where() const { return "checkpoint " + file_.path().string() + ": "; }

std::string CheckpointReader::damaged_fix() const {
  const fs::path dir = file_.path().parent_path();
  if (dir.filename().string().rfind("step_", 0) == 0)
    return "delete " + dir.string() + " or resume from another step";
  return "the file is damaged: restore it from a copy or use another checkpoint";
}

CheckpointReader::CheckpointReader(fs::path path) : file_(io::File::open_read(path)) {
  const std::string w = where();
  const uint64_t actual = file_.size();
  VIT_REQUIRE(actual >= kHeaderBytes, w, "only ", actual, " bytes, smaller than the ", kHeaderBytes,
              "-byte header (truncated or not a checkpoint); ", damaged_fix());

  std::byte hdr[kHeaderBytes];
  file_.read_at(0, hdr);
  VIT_REQUIRE(std::memcmp(hdr, kMagic, sizeof kMagic) == 0, w,
              "not a vit checkpoint file (bad magic); pass a rank_<r>.bin file from a step_<N> directory");
  const uint32_t version = get_u32(hdr + kOffVersion);
  VIT_REQUIRE(version == kVersion, w, "format version ", version, ", this build reads version ", kVersion,
              "; use the build that wrote it, or resume from another checkpoint");
  VIT_REQUIRE(get_u32(hdr + kOffHeaderBytes) == kHeaderBytes && all_zero(hdr + 60, 4), w,
              "malformed header (corrupted); ", damaged_fix());
  file_bytes_ = get_u64(hdr + kOffFileBytes);
  VIT_REQUIRE(file_bytes_ == actual, w, "file is ", actual, " bytes but its header says ", file_bytes_,
              actual < file_bytes_ ? " (truncated: the write did not finish); " : " (trailing bytes); ",
              damaged_fix());
  info_.rank = static_cast<int32_t>(get_u32(hdr + kOffRank));
  info_.world_size = static_cast<int32_t>(get_u32(hdr + kOffWorld));
  info_.layout_hash = get_u64(hdr + kOffLayoutHash);
  info_.step = static_cast<int64_t>(get_u64(hdr + kOffStep));
  chunk_bytes_ = get_u32(hdr + kOffChunkBytes);
  VIT_REQUIRE(is_pow2(chunk_bytes_) && chunk_bytes_ >= kMinChunkBytes && chunk_bytes_ <= kMaxChunkBytes, w,
              "checksum chunk size ", chunk_bytes_, " is invalid (corrupted header); ", damaged_fix());
  const uint32_t n = get_u32(hdr + kOffNumSections);
  VIT_REQUIRE(n <= kMaxSections, w, "header claims ", n, " sections, more than ", kMaxSections,
              " (corrupted header); ", damaged_fix());
  const uint64_t table_end = kHeaderBytes + uint64_t(n) * kEntryBytes;
  VIT_REQUIRE(table_end <= file_bytes_, w, "section table (", n, " entries) extends past the end of the file (",
              file_bytes_, " bytes); ", damaged_fix());

  // Allocation bounded by the file size, which was just checked.
  std::vector<std::byte> meta(table_end);
  std::memcpy(meta.data(), hdr, kHeaderBytes);
  file_.read_at(kHeaderBytes, std::span(meta).subspan(kHeaderBytes));
  uint64_t total_chunks = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t bytes = get_u64(meta.data() + kHeaderBytes + i * kEntryBytes + kEntOffBytes);
    VIT_REQUIRE(bytes <= file_bytes_ && bytes <= kMaxSectionBytes, w, "section #", i, " claims ", bytes,
                " bytes, more than the file holds (corrupted table); ", damaged_fix());
    total_chunks += chunks_of(bytes, chunk_bytes_);
  }
  const uint64_t meta_end = table_end + 4 * total_chunks;
  VIT_REQUIRE(meta_end <= file_bytes_, w, "checksum table extends past the end of the file (corrupted table); ",
              damaged_fix());
  meta.resize(meta_end);
  file_.read_at(table_end, std::span(meta).subspan(table_end));

  const uint32_t stored_crc = get_u32(meta.data() + kOffMetaCrc);
  put_u32(meta.data() + kOffMetaCrc, 0);
  VIT_REQUIRE(crc(meta.data(), meta.size()) == stored_crc, w,
              "header checksum mismatch (file corrupted); ", damaged_fix());

  // The metadata is what was written; now check that what was written is coherent.
  check_info(info_, w);
  std::set<std::string, std::less<>> names;
  sections_.reserve(n);
  uint64_t chunk_index = 0;
  for (uint32_t i = 0; i < n; ++i) {
    const std::byte* e = meta.data() + kHeaderBytes + i * kEntryBytes;
    const size_t name_len = std::find(e, e + kMaxNameBytes, std::byte{0}) - e;
    SectionInfo s;
    s.name.assign(reinterpret_cast<const char*>(e), name_len);
    VIT_REQUIRE(valid_name(s.name) && all_zero(e + name_len, kMaxNameBytes - name_len), w, "section #", i,
                " has an invalid name (corrupted table); ", damaged_fix());
    VIT_REQUIRE(names.insert(s.name).second, w, "section '", s.name, "' appears twice (corrupted table); ",
                damaged_fix());
    const uint32_t code = get_u32(e + kEntOffDtype);
    VIT_REQUIRE(known_dtype(code), w, "section '", s.name, "' has unknown dtype code ", code, "; ", damaged_fix());
    VIT_REQUIRE(all_zero(e + 68, 4) && all_zero(e + 96, 32), w, "section '", s.name,
                "' has nonzero reserved bytes (corrupted, or written by a newer version)");
    s.dtype = static_cast<DType>(code);
    s.count = get_u64(e + kEntOffCount);
    s.offset = get_u64(e + kEntOffOffset);
    s.bytes = get_u64(e + kEntOffBytes);
    const uint64_t es = dtype_size(s.dtype);
    VIT_REQUIRE(s.count <= s.bytes / es && s.count * es == s.bytes, w, "section '", s.name, "': ", s.count, " ",
                dtype_name(s.dtype), " elements do not fill its ", s.bytes, " bytes (corrupted table); ",
                damaged_fix());
    VIT_REQUIRE(s.offset % kPayloadAlign == 0, w, "section '", s.name, "' starts at byte ", s.offset,
                ", not on a 64-byte boundary (corrupted table); ", damaged_fix());
    VIT_REQUIRE(s.offset >= meta_end && s.offset <= file_bytes_ && s.bytes <= file_bytes_ - s.offset, w, "section '",
                s.name, "' bytes [", s.offset, ", ", s.offset + s.bytes, ") lie outside the payload area [", meta_end,
                ", ", file_bytes_, ") (corrupted table); ", damaged_fix());
    s.first_chunk = chunk_index;
    chunk_index += chunks_of(s.bytes, chunk_bytes_);
    sections_.push_back(std::move(s));
  }
  std::vector<const SectionInfo*> by_offset;
  for (const SectionInfo& s : sections_)
    if (s.bytes > 0) by_offset.push_back(&s);  // empty sections occupy nothing
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SectionInfo* a, const SectionInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SectionInfo& a = *by_offset[i - 1];
    const SectionInfo& b = *by_offset[i];
    VIT_REQUIRE(a.offset + a.bytes <= b.offset, w, "sections '", a.name, "' and '",
                b.name, "' overlap (corrupted table); ", damaged_fix());
  }
  chunk_crcs_.resize(total_chunks);
  for (uint64_t c = 0; c < total_chunks; ++c) chunk_crcs_[c] = get_u32(meta.data() + table_end + 4 * c);
}

const SectionInfo* CheckpointReader::find(std::string_view name) const {
  for (const SectionInfo& s : sections_)
    if (s.name == name) return &s;
  return nullptr;
}

const SectionInfo& CheckpointReader::section(std::string_view name) const {
  const SectionInfo* s = find(name);
  if (!s)
    fail(where(), "no section '", name, "' (the file holds ", sections_.size(),
         " sections; it was written by a different model or engine version: resume from a matching checkpoint "
         "or start fresh)");
  return *s;
}

const SectionInfo& CheckpointReader::typed_section(std::string_view name, DType want) const {
  const SectionInfo& s = section(name);
  VIT_REQUIRE(s.dtype == want, where(), "section '", name, "' holds ", dtype_name(s.dtype), ", expected ",
              dtype_name(want), " (written by a different engine version or configuration)");
  return s;
}

void CheckpointReader::read_bytes(const SectionInfo& s, uint64_t begin, uint64_t end, std::byte* out) const {
  if (begin == end) return;
  const uint64_t chunk = chunk_bytes_;
  std::vector<std::byte> scratch;  // only for chunks the range covers partly
  for (uint64_t c = begin / chunk; c <= (end - 1) / chunk; ++c) {
    const uint64_t cb = c * chunk, ce = std::min(cb + chunk, s.bytes);
    std::byte* dst;
    if (cb >= begin && ce <= end) {
      dst = out + (cb - begin);
    } else {
      scratch.resize(ce - cb);
      dst = scratch.data();
    }
    file_.read_at(s.offset + cb, std::span(dst, ce - cb));
    VIT_REQUIRE(crc(dst, ce - cb) == chunk_crcs_[s.first_chunk + c], where(), "section '", s.name,
                "' checksum mismatch in bytes [", cb, ", ", ce, ") (file corrupted); ", damaged_fix());
    if (dst == scratch.data()) {
      const uint64_t lo = std::max(cb, begin), hi = std::min(ce, end);
      std::memcpy(out + (lo - begin), dst + (lo - cb), hi - lo);
    }
  }
}

void CheckpointReader::read(std::string_view name, std::span<std::byte> out) const {
  const SectionInfo& s = section(name);
  VIT_REQUIRE(out.size() == s.bytes, where(), "section '", name, "' is ", s.bytes, " bytes (", s.count, " ",
              dtype_name(s.dtype), "), the destination holds ", out.size(),
              " (the checkpoint's model layout differs from this run's)");
  read_bytes(s, 0, s.bytes, out.data());
}

void CheckpointReader::read_range(std::string_view name, uint64_t first, uint64_t count,
                                  std::span<std::byte> out) const {
  const SectionInfo& s = section(name);
  VIT_REQUIRE(first <= s.count && count <= s.count - first, where(), "elements [", first, ", ", first + count,
              ") requested from section '", name, "' which holds ", s.count,
              " (the checkpoint's model layout differs from this run's)");
  const uint64_t es = dtype_size(s.dtype);
  VIT_REQUIRE(out.size() == count * es, where(), "destination for ", count, " elements of section '", name,
              "' holds ", out.size(), " bytes, expected ", count * es);
  read_bytes(s, first * es, (first + count) * es, out.data());
}

void CheckpointReader::verify() const {
  std::vector<std::byte> scratch;
  for (const SectionInfo& s : sections_) {
    for (uint64_t b = 0; b < s.bytes; b += chunk_bytes_) {
      const uint64_t len = std::min<uint64_t>(chunk_bytes_, s.bytes - b);
      scratch.resize(len);
      read_bytes(s, b, b + len, scratch.data());
    }
  }
}

}  // namespace vit::ckpt
