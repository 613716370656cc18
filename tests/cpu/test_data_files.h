// Image files for the data tests and the decode fuzzer, made in code: stb_image_write for ordinary
// PNG/JPEG, and two small writers of our own for what stb_image_write cannot make (16-bit PNG, headers
// with any dimensions, progressive and 4-component CMYK JPEG). The JPEG writer encodes flat 8×8 blocks
// (DC coefficients only, quantiser 1), so the decoded pixels are known exactly.
#pragma once
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace vit::testing {

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), (std::streamsize)b.size());
}

// A fresh directory under $TMPDIR (or /tmp), removed with its contents at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/vit_data_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

inline void append_to(void* ctx, void* data, int size) {
  auto* v = static_cast<std::vector<uint8_t>*>(ctx);
  const size_t at = v->size();
  v->resize(at + (size_t)size);
  std::memcpy(v->data() + at, data, (size_t)size);
}

// Interleaved 8-bit pixels -> PNG / JPEG bytes (stb_image_write).
inline std::vector<uint8_t> stb_png(int w, int h, int c, const std::vector<uint8_t>& px) {
  std::vector<uint8_t> out;
  stbi_write_png_to_func(append_to, &out, w, h, c, px.data(), w * c);
  return out;
}
inline std::vector<uint8_t> stb_jpg(int w, int h, int c, const std::vector<uint8_t>& px, int quality = 95) {
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(append_to, &out, w, h, c, px.data(), quality);
  return out;
}

// Pixels from a function f(x, y, channel) -> 0..255.
inline std::vector<uint8_t> make_pixels(int w, int h, int c, const std::function<int(int, int, int)>& f) {
  std::vector<uint8_t> px((size_t)w * h * c);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) px[((size_t)y * w + x) * c + ch] = (uint8_t)f(x, y, ch);
  return px;
}

// ---- PNG of any bit depth 8/16 and any header dimensions ----

inline void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back((uint8_t)(v >> s));
  };
  be32((uint32_t)data.size());
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  be32((uint32_t)crc32(0L, out.data() + start, (uInt)(out.size() - start)));
}

// PNG with IHDR (w, h, depth, colour type) and `raw` as the (uncompressed) filtered scanlines.
inline std::vector<uint8_t> png_raw(uint32_t w, uint32_t h, int depth, int color_type, const std::vector<uint8_t>& raw) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  std::vector<uint8_t> ihdr;
  for (uint32_t v : {w, h})
    for (int s = 24; s >= 0; s -= 8) ihdr.push_back((uint8_t)(v >> s));
  ihdr.insert(ihdr.end(), {(uint8_t)depth, (uint8_t)color_type, 0, 0, 0});
  png_chunk(out, "IHDR", ihdr);
  uLongf zn = compressBound((uLong)raw.size());
  std::vector<uint8_t> z(zn);
  compress2(z.data(), &zn, raw.data(), (uLong)raw.size(), 6);
  z.resize(zn);
  png_chunk(out, "IDAT", z);
  png_chunk(out, "IEND", {});
  return out;
}

// 16-bit PNG, channels 1 (gray), 3 (RGB) or 4 (RGBA); f(x, y, c) -> 0..65535.
inline std::vector<uint8_t> png16(int w, int h, int c, const std::function<int(int, int, int)>& f) {
  const int ct = c == 1 ? 0 : c == 3 ? 2 : 6;
  std::vector<uint8_t> raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) {
        const int v = f(x, y, ch);
        raw.push_back((uint8_t)(v >> 8));
        raw.push_back((uint8_t)v);
      }
  }
  return png_raw((uint32_t)w, (uint32_t)h, 16, ct, raw);
}

// ---- JPEG of flat 8×8 blocks ----

struct JpegBits {
  std::vector<uint8_t>& out;
  uint32_t acc = 0;
  int n = 0;
  void put(uint32_t bits, int len) {
    for (int i = len - 1; i >= 0; --i) {
      acc = acc << 1 | ((bits >> i) & 1);
      if (++n == 8) {
        out.push_back((uint8_t)acc);
        if ((uint8_t)acc == 0xFF) out.push_back(0);  // byte stuffing
        acc = 0;
        n = 0;
      }
    }
  }
  void flush() {
    while (n) put(1, 1);
  }
};

// comps: 1 (gray), 3 (component ids 'R','G','B': decoded without colour transform) or 4 (Adobe APP14
// transform 0: CMYK as Adobe stores it, inverted). value(c, bx, by) is block (bx, by)'s level in
// component c. progressive: SOF2 with an interleaved DC scan, then one AC scan per component.
inline std::vector<uint8_t> flat_jpeg(int w, int h, int comps, bool progressive,
                                      const std::function<int(int, int, int)>& value) {
  std::vector<uint8_t> o = {0xFF, 0xD8};
  auto seg = [&](uint8_t m, const std::vector<uint8_t>& d) {
    o.insert(o.end(), {0xFF, m, (uint8_t)((d.size() + 2) >> 8), (uint8_t)(d.size() + 2)});
    o.insert(o.end(), d.begin(), d.end());
  };
  if (comps == 4) seg(0xEE, {'A', 'd', 'o', 'b', 'e', 0x00, 0x64, 0, 0, 0, 0, 0});
  std::vector<uint8_t> dqt = {0x00};
  dqt.insert(dqt.end(), 64, 1);
  seg(0xDB, dqt);
  const uint8_t ids3[3] = {'R', 'G', 'B'};
  auto id = [&](int c) { return comps == 3 ? ids3[c] : (uint8_t)(c + 1); };
  std::vector<uint8_t> sof = {8, (uint8_t)(h >> 8), (uint8_t)h, (uint8_t)(w >> 8), (uint8_t)w, (uint8_t)comps};
  for (int c = 0; c < comps; ++c) sof.insert(sof.end(), {id(c), 0x11, 0});
  seg(progressive ? 0xC2 : 0xC0, sof);
  // DC table: categories 0..11, all 4-bit codes (code = category); AC table: EOB only, code "0".
  std::vector<uint8_t> dht = {0x00, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int s = 0; s < 12; ++s) dht.push_back((uint8_t)s);
  dht.insert(dht.end(), {0x10, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00});
  seg(0xC4, dht);
  const int bw = (w + 7) / 8, bh = (h + 7) / 8;
  auto dc_code = [](JpegBits& bits, int diff) {
    int s = 0;
    for (int a = diff < 0 ? -diff : diff; a; a >>= 1) ++s;
    bits.put((uint32_t)s, 4);
    if (s) bits.put((uint32_t)(diff >= 0 ? diff : diff + (1 << s) - 1), s);
  };
  auto sos = [&](const std::vector<int>& cs, int ss, int se) {
    std::vector<uint8_t> d = {(uint8_t)cs.size()};
    for (int c : cs) d.insert(d.end(), {id(c), 0x00});
    d.insert(d.end(), {(uint8_t)ss, (uint8_t)se, 0});
    seg(0xDA, d);
  };
  std::vector<int> all;
  for (int c = 0; c < comps; ++c) all.push_back(c);
  // DC (and for baseline the AC EOB) of every block, interleaved.
  sos(all, 0, progressive ? 0 : 63);
  {
    JpegBits bits{o};
    std::vector<int> pred(comps, 0);
    for (int by = 0; by < bh; ++by)
      for (int bx = 0; bx < bw; ++bx)
        for (int c = 0; c < comps; ++c) {
          const int dc = 8 * (value(c, bx, by) - 128);
          dc_code(bits, dc - pred[c]);
          pred[c] = dc;
          if (!progressive) bits.put(0, 1);  // EOB
        }
    bits.flush();
  }
  if (progressive)
    for (int c = 0; c < comps; ++c) {
      sos({c}, 1, 63);
      JpegBits bits{o};
      for (int b = 0; b < bw * bh; ++b) bits.put(0, 1);  // EOB run of 1
      bits.flush();
    }
  o.insert(o.end(), {0xFF, 0xD9});
  return o;
}

}  // namespace vit::testing
