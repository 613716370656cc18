// Drives random and mutated bytes through the decode path (header checks, stb_image, channel conversion)
// and the train transform, to show that no input crashes it. Built twice: as an ordinary tool, and by
// tests/cli/fuzz_decode.sh with -fsanitize=address,undefined, where any memory error or undefined
// behaviour aborts the run.
//   fuzz_decode [iterations=3000] [seed=1]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "data/decode.h"
#include "data/transforms.h"
#include "tests/cpu/test_data_files.h"

using namespace vit::data;
using namespace vit::testing;

namespace {

std::vector<std::vector<uint8_t>> seed_corpus() {
  std::vector<std::vector<uint8_t>> s;
  auto f = [](int x, int y, int c) { return (x * 29 + y * 13 + c * 71) % 256; };
  for (int c : {1, 2, 3, 4}) s.push_back(stb_png(17, 13, c, make_pixels(17, 13, c, f)));
  for (int c : {1, 3}) {
    s.push_back(stb_jpg(33, 20, c, make_pixels(33, 20, c, f), 95));
    s.push_back(stb_jpg(33, 20, c, make_pixels(33, 20, c, f), 50));  // chroma subsampled
  }
  for (int c : {1, 3, 4}) png16(9, 7, c, [](int x, int y, int ch) { return x * 7000 + y * 900 + ch * 13; });
  s.push_back(png16(9, 7, 3, [](int x, int y, int ch) { return x * 7000 + y * 900 + ch * 13; }));
  auto lv = [](int c, int bx, int by) { return (40 * c + 23 * bx + 57 * by) % 256; };
  for (bool prog : {false, true})
    for (int c : {1, 3, 4}) s.push_back(flat_jpeg(20, 12, c, prog, lv));
  return s;
}

void mutate(std::vector<uint8_t>& b, std::mt19937_64& r) {
  auto pick = [&](size_t n) { return n ? (size_t)(r() % n) : 0; };
  const int n = 1 + (int)(r() % 4);
  for (int k = 0; k < n; ++k) {
    switch (r() % 8) {
      case 0:  // flip a bit
        if (!b.empty()) b[pick(b.size())] ^= (uint8_t)(1u << (r() % 8));
        break;
      case 1: {  // an interesting byte
        static const uint8_t v[] = {0x00, 0xFF, 0x7F, 0x80, 0x01, 0xD8, 0xD9, 0xDA, 0xC0, 0xC2};
        if (!b.empty()) b[pick(b.size())] = v[r() % sizeof v];
        break;
      }
      case 2: {  // an interesting 16- or 32-bit big-endian value (lengths, dimensions)
        static const uint32_t v[] = {0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, 16384, 16385};
        const uint32_t x = v[r() % (sizeof v / sizeof v[0])];
        const int bytes = r() % 2 ? 2 : 4;
        if (b.size() >= (size_t)bytes) {
          const size_t at = pick(b.size() - bytes + 1);
          for (int i = 0; i < bytes; ++i) b[at + i] = (uint8_t)(x >> (8 * (bytes - 1 - i)));
        }
        break;
      }
      case 3:  // truncate
        b.resize(pick(b.size() + 1));
        break;
      case 4: {  // delete a range
        if (b.empty()) break;
        const size_t a = pick(b.size()), len = 1 + pick(std::min<size_t>(64, b.size() - a));
        b.erase(b.begin() + (long)a, b.begin() + (long)std::min(b.size(), a + len));
        break;
      }
      case 5: {  // insert random bytes
        const size_t a = pick(b.size() + 1), len = 1 + pick(32);
        std::vector<uint8_t> ins(len);
        for (auto& x : ins) x = (uint8_t)r();
        b.insert(b.begin() + (long)a, ins.begin(), ins.end());
        break;
      }
      case 6: {  // duplicate a range (repeated markers / chunks)
        if (b.empty()) break;
        const size_t a = pick(b.size()), len = 1 + pick(std::min<size_t>(128, b.size() - a));
        std::vector<uint8_t> dup(b.begin() + (long)a, b.begin() + (long)(a + len));
        b.insert(b.begin() + (long)pick(b.size() + 1), dup.begin(), dup.end());
        break;
      }
      default:  // randomise a short run
        for (size_t i = pick(b.size()), e = std::min(b.size(), i + 1 + pick(16)); i < e; ++i) b[i] = (uint8_t)r();
    }
  }
}

// Makes a mutated file get past the structural checks more often, so that the decoders themselves are
// exercised: rewrites every PNG chunk CRC, ends a JPEG with an EOI marker.
void repair(std::vector<uint8_t>& b) {
  const ImageFormat f = sniff_format(b.data(), b.size());
  if (f == ImageFormat::jpeg && (b.size() < 2 || b[b.size() - 2] != 0xFF || b.back() != 0xD9)) {
    b.push_back(0xFF);
    b.push_back(0xD9);
  }
  if (f != ImageFormat::png) return;
  size_t pos = 8;
  while (pos + 12 <= b.size()) {
    const size_t len = (size_t)b[pos] << 24 | (size_t)b[pos + 1] << 16 | (size_t)b[pos + 2] << 8 | b[pos + 3];
    if (len > b.size() - pos - 12) break;
    const uint32_t c = (uint32_t)crc32(0L, b.data() + pos + 4, (uInt)(len + 4));
    for (int i = 0; i < 4; ++i) b[pos + 8 + len + i] = (uint8_t)(c >> (24 - 8 * i));
    pos += 12 + len;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long iters = argc > 1 ? std::atol(argv[1]) : 3000;
  const uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  const auto corpus = seed_corpus();
  std::mt19937_64 r(seed);
  DecodeLimits lim;
  lim.max_side = 2048;            // keeps mutated dimensions cheap; the checks are the same code
  lim.max_pixels = 1 << 20;
  vit::TransformConfig tc;
  tc.color_jitter = 0.4;
  tc.random_erasing = 0.5;
  const Transform tf3(tc, Split::train, 3, 16, 16), tf1(tc, Split::train, 1, 16, 16);
  TransformScratch ts;
  std::vector<float> out(3 * 16 * 16);
  long ok = 0, refused = 0;
  std::map<std::string, long> reasons;  // refusal reasons, up to the first digit (shows what is exercised)
  uint64_t checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < iters; ++it) {
    std::vector<uint8_t> b;
    if (r() % 10 == 0) {  // random bytes behind a real signature
      static const uint8_t jpg[] = {0xFF, 0xD8, 0xFF}, png[] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
      if (r() % 2) b.assign(jpg, jpg + 3);
      else b.assign(png, png + 8);
      for (size_t n = r() % 512; n; --n) b.push_back((uint8_t)r());
    } else {
      b = corpus[r() % corpus.size()];
      mutate(b, r);
      if (r() % 4) repair(b);
    }
    const int channels = r() % 2 ? 3 : 1;
    DecodedImage d;
    std::string why, note;
    if (decode_image(b.data(), b.size(), channels, lim, d, why, &note)) {
      ++ok;
      const ImageView v = d.view();
      for (size_t i = 0; i < v.bytes(); ++i) checksum += v.data[i];  // every pixel readable
      (channels == 3 ? tf3 : tf1).apply(v, SampleRng(seed, it, 0), out.data(), ts);
      for (int i = 0; i < channels * 256; ++i) checksum += (uint64_t)(out[i] * 16.0f);
    } else {
      ++refused;
      reasons[why.substr(0, why.find_first_of("0123456789"))]++;
      if (why.empty()) {
        std::fprintf(stderr, "fuzz_decode: a refusal without a reason at iteration %ld\n", it);
        return 1;
      }
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("fuzz_decode: %ld inputs in %.2f s: %ld decoded, %ld refused (checksum %llu)\n", iters, s, ok, refused,
              (unsigned long long)checksum);
  if (std::getenv("FUZZ_VERBOSE"))
    for (const auto& [w, k] : reasons) std::printf("  %6ld  %s\n", k, w.c_str());
  return 0;
}
