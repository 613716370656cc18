// Decoding: every supported kind of file gives the right pixels, every bad kind a reason, no crash.
#include <doctest/doctest.h>

#include <cstdlib>

#include "data/decode.h"
#include "test_data_files.h"

using namespace vit::data;
using namespace vit::testing;

namespace {

bool decode(const std::vector<uint8_t>& b, int channels, DecodedImage& out, std::string& why,
            std::string* note = nullptr, DecodeLimits lim = {}) {
  return decode_image(b.data(), b.size(), channels, lim, out, why, note);
}

int px(const ImageView& v, int x, int y, int c) { return v.data[((size_t)y * v.w + x) * v.c + c]; }

// Block levels that differ per block and component, inside 0..255.
int level(int c, int bx, int by) { return (37 * bx + 71 * by + 90 * c + 11) % 256; }

}  // namespace

TEST_CASE("data decode: PNG gray, RGB, RGBA are exact - gray/RGB conversions follow BT.601") {
  const int w = 13, h = 7;
  auto f = [](int x, int y, int c) { return (x * 19 + y * 31 + c * 77) % 256; };
  for (int c : {1, 2, 3, 4}) {
    CAPTURE(c);
    const auto src = make_pixels(w, h, c, f);
    const auto png = stb_png(w, h, c, src);
    DecodedImage d;
    std::string why, note;
    REQUIRE(decode(png, 3, d, why, &note));
    CHECK(note.empty());
    const ImageView v = d.view();
    REQUIRE(v.w == w);
    REQUIRE(v.h == h);
    REQUIRE(v.c == 3);
    int bad = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          // gray (+alpha) replicated; RGB(A) as stored, alpha dropped.
          const int want = c <= 2 ? f(x, y, 0) : f(x, y, ch);
          bad += px(v, x, y, ch) != want;
        }
    CHECK(bad == 0);
    REQUIRE(decode(png, 1, d, why));
    const ImageView g = d.view();
    REQUIRE(g.c == 1);
    bad = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int want = c <= 2 ? f(x, y, 0) : (299 * f(x, y, 0) + 587 * f(x, y, 1) + 114 * f(x, y, 2) + 500) / 1000;
        bad += px(g, x, y, 0) != want;
      }
    CHECK(bad == 0);
  }
}

TEST_CASE("data decode: baseline and progressive JPEG (gray and RGB) give the encoded block levels") {
  for (bool prog : {false, true})
    for (int comps : {1, 3}) {
      CAPTURE(prog);
      CAPTURE(comps);
      const int w = 21, h = 11;  // partial blocks at the right and bottom edges
      const auto jpg = flat_jpeg(w, h, comps, prog, level);
      ImageHeader hdr;
      std::string why;
      REQUIRE(read_header(jpg.data(), jpg.size(), hdr, why));
      CHECK(hdr.progressive == prog);
      CHECK(hdr.stored_channels == comps);
      DecodedImage d;
      REQUIRE_MESSAGE(decode(jpg, 3, d, why), why);
      const ImageView v = d.view();
      REQUIRE(v.w == w);
      REQUIRE(v.h == h);
      int maxerr = 0;
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          for (int ch = 0; ch < 3; ++ch)
            maxerr = std::max(maxerr, std::abs(px(v, x, y, ch) - level(comps == 1 ? 0 : ch, x / 8, y / 8)));
      CHECK(maxerr == 0);
    }
}

TEST_CASE("data decode: CMYK JPEG, 16-bit PNG are converted (with a note) - RGB JPEG from stb_image_write is close") {
  std::string why, note;
  DecodedImage d;
  // Adobe CMYK (stored inverted): RGB = C·K/255 per channel.
  const auto cmyk = flat_jpeg(16, 16, 4, false, level);
  REQUIRE_MESSAGE(decode(cmyk, 3, d, why, &note), why);
  CHECK(note.find("CMYK") != std::string::npos);
  int maxerr = 0;
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        const double want = level(ch, x / 8, y / 8) * level(3, x / 8, y / 8) / 255.0;
        maxerr = std::max(maxerr, (int)std::lround(std::abs(px(d.view(), x, y, ch) - want)));
      }
  CHECK(maxerr <= 1);  // stb's blend rounds x·y/255 in integers
  // 16-bit: the high byte.
  auto f16 = [](int x, int y, int c) { return (x * 5003 + y * 7919 + c * 3001) % 65536; };
  const auto p16 = png16(9, 5, 3, f16);
  REQUIRE_MESSAGE(decode(p16, 3, d, why, &note), why);
  CHECK(note.find("16-bit") != std::string::npos);
  int bad = 0;
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 9; ++x)
      for (int ch = 0; ch < 3; ++ch) bad += px(d.view(), x, y, ch) != (f16(x, y, ch) >> 8);
  CHECK(bad == 0);
  // A smooth RGB picture through stb_image_write's JPEG (YCbCr, lossy): close to the source.
  auto smooth = [](int x, int y, int c) { return 40 + 3 * x + 2 * y + 30 * c; };
  const auto jpg = stb_jpg(32, 24, 3, make_pixels(32, 24, 3, smooth), 100);
  REQUIRE(decode(jpg, 3, d, why, &note));
  CHECK(note.empty());
  double err = 0;
  for (int y = 0; y < 24; ++y)
    for (int x = 0; x < 32; ++x)
      for (int ch = 0; ch < 3; ++ch) err = std::max(err, (double)std::abs(px(d.view(), x, y, ch) - smooth(x, y, ch)));
  MESSAGE("stb JPEG q100 round trip, max abs error " << err);
  CHECK(err <= 8);
}

TEST_CASE("data decode: bad files fail with a reason, never crash") {
  const auto good_jpg = flat_jpeg(24, 16, 3, false, level);
  const auto good_png = stb_png(8, 8, 3, make_pixels(8, 8, 3, [](int x, int y, int c) { return x + y + c; }));
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    const char* reason;  // a word the reason must contain
  };
  std::vector<Case> cases;
  cases.push_back({"zero bytes", {}, "empty"});
  cases.push_back({"text", {'h', 'e', 'l', 'l', 'o', '\n'}, "not a JPEG or PNG"});
  cases.push_back({"truncated JPEG", {good_jpg.begin(), good_jpg.begin() + (long)good_jpg.size() * 2 / 3}, "truncated"});
  cases.push_back({"JPEG header only", {good_jpg.begin(), good_jpg.begin() + 20}, "truncated"});
  cases.push_back({"truncated PNG", {good_png.begin(), good_png.end() - 20}, "truncated"});
  auto png_bitflip = good_png;
  png_bitflip[png_bitflip.size() / 2] ^= 0x10;
  cases.push_back({"PNG with a flipped bit", png_bitflip, "CRC"});
  auto jpg_badsof = good_jpg;
  for (size_t i = 0; i + 1 < jpg_badsof.size(); ++i)
    if (jpg_badsof[i] == 0xFF && jpg_badsof[i + 1] == 0xC0) {
      jpg_badsof[i + 1] = 0xC3;  // lossless JPEG: not supported by stb_image
      break;
    }
  cases.push_back({"lossless JPEG", jpg_badsof, "cannot decode"});
  auto jpg_nomarker = good_jpg;
  for (size_t i = 2; i + 1 < jpg_nomarker.size(); ++i)
    if (jpg_nomarker[i] == 0xFF && jpg_nomarker[i + 1] == 0xC0) {
      jpg_nomarker[i] = 0x00;  // the frame header no longer starts with a marker
      break;
    }
  cases.push_back({"JPEG with a broken marker chain", jpg_nomarker, "corrupt"});
  // A Huffman table of 300 codes (at most 256 are possible): stb_image 2.27 would write past its tables.
  std::vector<uint8_t> dht = {0xFF, 0xC4, (uint8_t)((2 + 17 + 300) >> 8), (uint8_t)(2 + 17 + 300), 0x00};
  for (int i = 0; i < 16; ++i) dht.push_back(i == 14 ? 45 : i == 15 ? 255 : 0);
  dht.insert(dht.end(), 300, 0x01);
  auto jpg_bigdht = good_jpg;
  jpg_bigdht.insert(jpg_bigdht.begin() + 2, dht.begin(), dht.end());
  cases.push_back({"JPEG with an oversized Huffman table", jpg_bigdht, "300 codes"});
  cases.push_back({"huge PNG", png_raw(100000, 100000, 8, 0, {0, 0, 0}), "too large"});
  cases.push_back({"16385 px wide PNG", png_raw(16385, 1, 8, 0, {0, 0, 0}), "too large"});
  cases.push_back({"huge JPEG", flat_jpeg(8, 8, 1, false, level), "too large"});
  // Patch the last one's frame header to 60000 × 60000.
  for (size_t i = 0; i + 8 < cases.back().bytes.size(); ++i)
    if (cases.back().bytes[i] == 0xFF && cases.back().bytes[i + 1] == 0xC0) {
      for (int k : {5, 7}) {
        cases.back().bytes[i + k] = 0xEA;
        cases.back().bytes[i + k + 1] = 0x60;
      }
      break;
    }
  for (const auto& c : cases) {
    CAPTURE(c.name);
    DecodedImage d;
    std::string why;
    CHECK_FALSE(decode(c.bytes, 3, d, why));
    CHECK_MESSAGE(why.find(c.reason) != std::string::npos, why);
  }
  // Smaller limits apply too (2^28 pixels cannot be passed without also passing 16384 a side).
  DecodedImage d;
  std::string why;
  DecodeLimits lim;
  lim.max_pixels = 63;  // the image is 8 × 8
  CHECK_FALSE(decode(good_png, 3, d, why, nullptr, lim));
  CHECK(why.find("too large") != std::string::npos);
  lim.max_pixels = 64;
  CHECK(decode(good_png, 3, d, why, nullptr, lim));
  lim.max_side = 7;
  CHECK_FALSE(decode(good_png, 3, d, why, nullptr, lim));
}

TEST_CASE("data decode: format by content and by name") {
  const auto png = stb_png(2, 2, 1, {1, 2, 3, 4});
  CHECK(sniff_format(png.data(), png.size()) == ImageFormat::png);
  const auto jpg = flat_jpeg(8, 8, 1, false, level);
  CHECK(sniff_format(jpg.data(), jpg.size()) == ImageFormat::jpeg);
  CHECK(format_from_name("a/b/x.JPEG") == ImageFormat::jpeg);
  CHECK(format_from_name("x.jPg") == ImageFormat::jpeg);
  CHECK(format_from_name("x.Png") == ImageFormat::png);
  CHECK(format_from_name("x.png.txt") == ImageFormat::unknown);
  CHECK(format_from_name("dir.jpg/file") == ImageFormat::unknown);
}
