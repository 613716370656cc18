// Helpers shared by the checkpoint and safetensors tests: a self-deleting temporary directory and
// whole-file byte access for building damaged files.
#pragma once
#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "engine/check.h"
#include "engine/rng.h"

namespace vit::test {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "vit_ckpt_test_XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& s) const { return path_ / s; }

 private:
  fs::path path_;
};

inline std::vector<std::byte> read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> b(c.size());
  if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
  return b;
}

inline void write_all(const fs::path& p, const std::vector<std::byte>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline void write_all(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
}

// Flips one bit of byte `at` in the file.
inline void flip_bit(const fs::path& p, uint64_t at) {
  std::vector<std::byte> b = read_all(p);
  b.at(at) ^= std::byte{0x10};
  write_all(p, b);
}

// Random bytes from the counter RNG (every bit pattern, NaN floats included).
inline std::vector<std::byte> random_bytes(size_t n, uint64_t stream) {
  std::vector<std::byte> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = std::byte(rng::bits(1234, stream, i) & 0xff);
  return b;
}

// The message of the vit::Error that f() throws, or "<no error>".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const vit::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace vit::test

// Checks that `expr` throws a vit::Error whose message contains every one of the given strings.
#define CHECK_ERROR(expr, ...)                                                    \
  do {                                                                            \
    const std::string vit_msg_ = ::vit::test::error_of([&] { (void)(expr); });    \
    INFO("message: ", vit_msg_);                                                  \
    for (const char* vit_s_ : {__VA_ARGS__})                                      \
      CHECK_MESSAGE(vit_msg_.find(vit_s_) != std::string::npos, "expected in the message: ", std::string(vit_s_)); \
  } while (0)
