#include "engine/durable_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "engine/check.h"

namespace vit::io {

namespace {
std::string errno_text() { return std::strerror(errno); }
// Linux moves at most 0x7ffff000 bytes per read/write call; stay well below.
constexpr size_t kMaxTransfer = size_t(1) << 30;
}  // namespace

File::File(File&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

File File::open_read(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open ", path.string(), " for reading: ", errno_text());
  File f(fd, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail("cannot stat ", path.string(), ": ", errno_text());
  if (!S_ISREG(st.st_mode)) fail(path.string(), " is not a regular file");
  return f;
}

File File::create(const fs::path& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fail("cannot create ", path.string(), ": ", errno_text(), " (check that the directory exists and is writable)");
  return File(fd, path);
}

uint64_t File::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail("cannot stat ", path_.string(), ": ", errno_text());
  return static_cast<uint64_t>(st.st_size);
}

void File::read_at(uint64_t offset, std::span<std::byte> out) const {
  size_t done = 0;
  while (done < out.size()) {
    size_t want = std::min(out.size() - done, kMaxTransfer);
    ssize_t n = ::pread(fd_, out.data() + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("read error in ", path_.string(), " at byte ", offset + done, ": ", errno_text());
    }
    if (n == 0) fail("unexpected end of file in ", path_.string(), " at byte ", offset + done, " (file truncated)");
    done += static_cast<size_t>(n);
  }
}

void File::write_at(uint64_t offset, std::span<const std::byte> data) const {
  size_t done = 0;
  while (done < data.size()) {
    size_t want = std::min(data.size() - done, kMaxTransfer);
    ssize_t n = ::pwrite(fd_, data.data() + done, want, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write error in ", path_.string(), ": ", errno_text(), " (free disk space or choose another directory)");
    }
    done += static_cast<size_t>(n);
  }
}

void File::truncate(uint64_t size) const {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    fail("cannot size ", path_.string(), " to ", size, " bytes: ", errno_text());
}

void File::sync() const {
  if (::fsync(fd_) != 0) fail("fsync of ", path_.string(), " failed: ", errno_text());
}

void File::close() {
  if (fd_ < 0) return;
  int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) fail("close of ", path_.string(), " failed: ", errno_text());
}

void sync_dir(const fs::path& dir) {
  const fs::path d = dir.empty() ? fs::path(".") : dir;
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail("cannot open directory ", d.string(), " to fsync it: ", errno_text());
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) fail("fsync of directory ", d.string(), " failed: ", std::strerror(err));
}

void rename_durable(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail("cannot rename ", from.string(), " to ", to.string(), ": ", errno_text());
  sync_dir(to.parent_path());
}

fs::path tmp_path(const fs::path& path) {
  fs::path t = path;
  t += ".tmp";
  return t;
}

void write_file_atomic(const fs::path& path, std::string_view text) {
  const fs::path tmp = tmp_path(path);
  {
    File f = File::create(tmp);
    f.write_at(0, std::as_bytes(std::span(text.data(), text.size())));
    f.sync();
    f.close();
  }
  rename_durable(tmp, path);
}

std::string read_small_file(const fs::path& path, uint64_t max_bytes) {
  File f = File::open_read(path);
  const uint64_t n = f.size();
  if (n > max_bytes) fail(path.string(), " is ", n, " bytes, more than the ", max_bytes, " expected: not a file written by this engine");
  std::string s(static_cast<size_t>(n), '\0');
  f.read_at(0, std::as_writable_bytes(std::span(s.data(), s.size())));
  return s;
}

}  // namespace vit::io
