#include "data/packed.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/check.h"

namespace fs = std::filesystem;

namespace vit::data {

static const char kMagic[8] = {'V', 'I', 'T', 'P', 'A', 'C', 'K', '\0'};

// ---- writer ----

PackWriter::PackWriter(const std::string& path, int channels, std::vector<std::string> class_names)
    : path_(path), tmp_(path + ".tmp"), channels_(channels), names_(std::move(class_names)) {
  VIT_REQUIRE(channels == 1 || channels == 3, path, ": packs hold 1 or 3 channels, not ", channels);
  VIT_REQUIRE(!names_.empty(), path, ": a pack needs at least one class name");
  for (const auto& n : names_) VIT_REQUIRE(n.find('\0') == std::string::npos, path, ": class name with a NUL byte");
  f_ = std::fopen(tmp_.c_str(), "wb");
  VIT_REQUIRE(f_, "cannot create ", tmp_, " (", std::strerror(errno), ")");
  std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  PackHeader h{};
  write(&h, sizeof h);  // placeholder, rewritten by finish()
}

PackWriter::~PackWriter() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void PackWriter::write(const void* p, size_t n) {
  if (n && std::fwrite(p, 1, n, f_) != n) fail("cannot write ", tmp_, " (", std::strerror(errno), ")");
}

void PackWriter::add(const ImageView& img, int label) {
  VIT_REQUIRE(f_, path_, ": add() after finish()");
  VIT_ASSERT(img.c == channels_, "image has ", img.c, " channels, pack ", channels_);
  VIT_REQUIRE(img.h >= 1 && img.w >= 1 && img.h <= kPackMaxSide && img.w <= kPackMaxSide, path_, ": image of ",
              img.w, "x", img.h, " does not fit a pack record (1..", kPackMaxSide, " a side)");
  VIT_REQUIRE(label >= 0 && label < (int)names_.size(), path_, ": label ", label, " outside [0, ", names_.size(), ")");
  const size_t n = img.bytes();
  PackRecord r{data_bytes_, (uint32_t)img.h, (uint32_t)img.w, label, (uint32_t)crc32(0L, img.data, (uInt)n)};
  write(img.data, n);
  data_bytes_ += n;
  index_.push_back(r);
}

void PackWriter::finish() {
  VIT_REQUIRE(f_, path_, ": finish() twice");
  PackHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kPackVersion;
  h.channels = (uint32_t)channels_;
  h.count = index_.size();
  h.num_classes = (uint32_t)names_.size();
  h.data_offset = sizeof(PackHeader);
  h.data_bytes = data_bytes_;
  h.index_offset = (h.data_offset + data_bytes_ + 7) & ~uint64_t(7);  // records are read in place: align
  h.names_offset = h.index_offset + index_.size() * sizeof(PackRecord);
  const uint8_t pad[8] = {};
  write(pad, h.index_offset - (h.data_offset + data_bytes_));
  write(index_.data(), index_.size() * sizeof(PackRecord));
  for (const auto& n : names_) write(n.c_str(), n.size() + 1);
  if (std::fseek(f_, 0, SEEK_SET) != 0) fail("cannot seek in ", tmp_, " (", std::strerror(errno), ")");
  write(&h, sizeof h);
  const bool ok = std::fflush(f_) == 0 && ::fsync(fileno(f_)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok || !closed) {
    std::remove(tmp_.c_str());
    fail("cannot write ", tmp_, " (", std::strerror(err), ")");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp_.c_str());
    fail("cannot rename ", tmp_, " to ", path_, " (", std::strerror(e), ")");
  }
}

// ---- reader ----

PackReader::PackReader(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VIT_REQUIRE(fd >= 0, "cannot open ", path, " (", std::strerror(errno), ")");
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  bytes_ = (size_t)st.st_size;
  if (bytes_ < sizeof(PackHeader)) {
    ::close(fd);
    fail(path, ": not a .vitpack file (", bytes_, " bytes, shorter than the header)");
  }
  void* p = ::mmap(nullptr, bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  VIT_REQUIRE(p != MAP_FAILED, "cannot mmap ", path, " (", std::strerror(err), ")");
  base_ = static_cast<const uint8_t*>(p);
  // From here a throw must unmap: validate inside a try.
  try {
    std::memcpy(&hdr_, base_, sizeof hdr_);
    VIT_REQUIRE(std::memcmp(hdr_.magic, kMagic, 8) == 0, path, ": not a .vitpack file (bad magic)");
    VIT_REQUIRE(hdr_.version == kPackVersion, path, ": .vitpack version ", hdr_.version, ", this build reads ",
                kPackVersion, " (re-pack with tools/pack_dataset or fmnist_convert)");
    auto corrupt = [&](const char* what) { fail(path, ": corrupt .vitpack (", what, ")"); };
    if (hdr_.channels != 1 && hdr_.channels != 3) corrupt("channels");
    if (hdr_.num_classes == 0) corrupt("no classes");
    if (hdr_.data_offset < sizeof(PackHeader) || hdr_.data_offset > bytes_) corrupt("data offset");
    if (hdr_.data_bytes > bytes_ - hdr_.data_offset) corrupt("data size");
    if (hdr_.index_offset < hdr_.data_offset + hdr_.data_bytes || hdr_.index_offset > bytes_) corrupt("index offset");
    if (hdr_.count > (bytes_ - hdr_.index_offset) / sizeof(PackRecord)) corrupt("record count");
    if (hdr_.names_offset < hdr_.index_offset + hdr_.count * sizeof(PackRecord) || hdr_.names_offset > bytes_)
      corrupt("names offset");
    if ((hdr_.index_offset & 7) != 0) corrupt("index alignment");
    // Class names.
    size_t pos = hdr_.names_offset;
    for (uint32_t c = 0; c < hdr_.num_classes; ++c) {
      const void* end = std::memchr(base_ + pos, 0, bytes_ - pos);
      if (!end) corrupt("class names");
      const size_t len = (size_t)(static_cast<const uint8_t*>(end) - (base_ + pos));
      names_.emplace_back(reinterpret_cast<const char*>(base_ + pos), len);
      pos += len + 1;
    }
    // Records.
    for (uint64_t i = 0; i < hdr_.count; ++i) {
      const PackRecord& r = rec((int64_t)i);
      if (r.h < 1 || r.w < 1 || r.h > (uint32_t)kPackMaxSide || r.w > (uint32_t)kPackMaxSide) corrupt("record size");
      const uint64_t n = (uint64_t)r.h * r.w * hdr_.channels;
      if (r.offset > hdr_.data_bytes || n > hdr_.data_bytes - r.offset) corrupt("record outside the data section");
      if (r.label < 0 || (uint32_t)r.label >= hdr_.num_classes) corrupt("label outside the class list");
    }
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), bytes_);
    throw;
  }
}

PackReader::~PackReader() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), bytes_);
}

ImageView PackReader::image(int64_t i) const {
  const PackRecord& r = rec(i);
  return ImageView{base_ + hdr_.data_offset + r.offset, (int)r.h, (int)r.w, (int)hdr_.channels};
}

bool PackReader::verify(int64_t i) const {
  const ImageView v = image(i);
  return (uint32_t)crc32(0L, v.data, (uInt)v.bytes()) == rec(i).crc;
}

std::vector<std::string> pack_files(const std::string& path, const char* key) {
  std::error_code ec;
  VIT_REQUIRE(!path.empty(), key, " is empty: set it to a .vitpack file or a directory of them");
  if (fs::is_regular_file(path, ec)) return {path};
  VIT_REQUIRE(fs::is_directory(path, ec), key, " = \"", path, "\": no such file or directory");
  std::vector<std::string> files;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".vitpack" && it->is_regular_file(ec)) files.push_back(it->path().string());
  std::sort(files.begin(), files.end());
  VIT_REQUIRE(!files.empty(), key, " = \"", path, "\": no .vitpack files in the directory");
  return files;
}

namespace {

class PackedDataset final : public Dataset {
 public:
  PackedDataset(const std::string& path, const std::vector<std::string>& files) : path_(path) {
    for (const auto& f : files) {
      shards_.push_back(std::make_unique<PackReader>(f));
      const PackReader& s = *shards_.back();
      VIT_REQUIRE(s.class_names() == shards_[0]->class_names(), f, ": its class list differs from ",
                  shards_[0]->path(), "'s (shards of one dataset must share it)");
      VIT_REQUIRE(s.channels() == shards_[0]->channels(), f, ": ", s.channels(), " channels, ",
                  shards_[0]->path(), " has ", shards_[0]->channels());
      start_.push_back(total_);
      total_ += s.size();
    }
  }
  int64_t size() const override { return total_; }
  int num_classes() const override { return (int)shards_[0]->class_names().size(); }
  const std::vector<std::string>& class_names() const override { return shards_[0]->class_names(); }
  int label(int64_t i) const override {
    auto [s, j] = locate(i);
    return shards_[s]->label(j);
  }
  std::string describe(int64_t i) const override {
    auto [s, j] = locate(i);
    return detail::cat(shards_[s]->path(), " record ", j);
  }
  std::string summary() const override {
    return detail::cat("packed ", path_, ": ", total_, " images, ", num_classes(), " classes, ",
                       shards_[0]->channels(), " channel(s), ", shards_.size(), " shard(s)");
  }
  bool load(int64_t i, int channels, SampleScratch& s, ImageView& view, std::string&, std::string& note) const override {
    auto [sh, j] = locate(i);
    note.clear();
    view = convert_channels(shards_[sh]->image(j), channels, s.pixels);
    return true;
  }

 private:
  std::pair<size_t, int64_t> locate(int64_t i) const {
    const size_t s = (size_t)(std::upper_bound(start_.begin(), start_.end(), i) - start_.begin()) - 1;
    return {s, i - start_[s]};
  }
  std::string path_;
  std::vector<std::unique_ptr<PackReader>> shards_;
  std::vector<int64_t> start_;
  int64_t total_ = 0;
};

}  // namespace

std::unique_ptr<Dataset> open_packed_dataset(const std::string& path, const char* key, const LogFn& log) {
  auto ds = std::make_unique<PackedDataset>(path, pack_files(path, key));
  if (log) log(ds->summary());
  VIT_REQUIRE(ds->size() > 0, key, " = \"", path, "\": the pack holds no images");
  return ds;
}

}  // namespace vit::data
