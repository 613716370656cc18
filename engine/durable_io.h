// POSIX file access for the checkpoint and safetensors formats: an RAII descriptor with exact
// positioned reads and writes (retrying short transfers and EINTR), and the durable-replace recipe
// (write "<file>.tmp", fsync it, rename over <file>, fsync the directory) that makes a crash leave
// either the old file or the new one, never a torn one. Errors are vit::Error naming the path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace vit::io {

namespace fs = std::filesystem;

class File {
 public:
  File() = default;
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  static File open_read(const fs::path& path);
  // Creates or truncates `path` for writing (mode 0644).
  static File create(const fs::path& path);

  uint64_t size() const;
  // Reads exactly out.size() bytes at `offset`; a short file is an error ("unexpected end of file").
  void read_at(uint64_t offset, std::span<std::byte> out) const;
  void write_at(uint64_t offset, std::span<const std::byte> data) const;
  void truncate(uint64_t size) const;
  void sync() const;   // fsync: data and metadata on stable storage
  void close();        // reports close() errors (they can carry delayed write errors)
  const fs::path& path() const { return path_; }
  bool is_open() const { return fd_ >= 0; }

 private:
  File(int fd, fs::path path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  fs::path path_;
};

// fsync a directory so a rename / create / unlink inside it is durable.
void sync_dir(const fs::path& dir);

// rename(from, to) (atomic on POSIX within one file system), then fsync the parent of `to`.
void rename_durable(const fs::path& from, const fs::path& to);

// Writes `text` to "<path>.tmp", fsyncs, renames over `path`, fsyncs the directory.
void write_file_atomic(const fs::path& path, std::string_view text);

// Reads a small text file whole, refusing files above `max_bytes` (they are not ours).
std::string read_small_file(const fs::path& path, uint64_t max_bytes = 16u << 20);

// "<path>.tmp": the name every atomic writer uses for its not-yet-renamed file.
fs::path tmp_path(const fs::path& path);

}  // namespace vit::io
