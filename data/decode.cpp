#include "data/decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>

#include "engine/check.h"

// stb_image compiled into this file only (static functions), JPEG and PNG decoders only: the smaller
// the parser surface, the smaller the fuzzing surface. Memory input only: files are read by read_file.
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#pragma GCC diagnostic pop

namespace vit::data {

void DecodedImage::StbFree::operator()(uint8_t* p) const { stbi_image_free(p); }

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::png: return "PNG";
    default: return "unknown";
  }
}

ImageFormat sniff_format(const uint8_t* p, size_t n) {
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return ImageFormat::jpeg;
  if (n >= 8 && std::memcmp(p, png_sig, 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

ImageFormat format_from_name(const std::string& path) {
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || path.find('/', dot) != std::string::npos) return ImageFormat::unknown;
  std::string ext = path.substr(dot + 1);
  for (auto& ch : ext) ch = (char)std::tolower((unsigned char)ch);
  if (ext == "jpg" || ext == "jpeg") return ImageFormat::jpeg;
  if (ext == "png") return ImageFormat::png;
  return ImageFormat::unknown;
}

namespace {

uint32_t be16(const uint8_t* p) { return (uint32_t)p[0] << 8 | p[1]; }
uint32_t be32(const uint8_t* p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

bool is_sof(uint8_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

// Checks a DHT segment's tables: stb_image 2.27 writes past its Huffman arrays when a table's code
// counts add up to more than 256 (fixed upstream in 2.28), so such files must never reach it.
bool check_dht(const uint8_t* s, size_t len, std::string& why) {
  size_t pos = 0;
  while (pos < len) {
    if (len - pos < 17) { why = "corrupt JPEG (short Huffman table)"; return false; }
    const int tc = s[pos] >> 4, th = s[pos] & 15;
    if (tc > 1 || th > 3) { why = "corrupt JPEG (bad Huffman table id)"; return false; }
    size_t n = 0;
    for (int i = 1; i <= 16; ++i) n += s[pos + i];
    if (n > 256) { why = detail::cat("corrupt JPEG (Huffman table with ", n, " codes)"); return false; }
    if (len - pos - 17 < n) { why = "corrupt JPEG (short Huffman table)"; return false; }
    pos += 17 + n;
  }
  return true;
}

// Walks every JPEG marker from SOI to EOI as a decoder meets them (segments by their lengths, the
// entropy-coded data after each SOS up to the next marker: the encoder stuffs every 0xFF in it), reading
// the frame header on the way and checking every Huffman table. A file cut anywhere before its EOI is
// reported as truncated (stb_image would decode the missing part as gray).
bool scan_jpeg(const uint8_t* p, size_t n, ImageHeader& h, std::string& why) {
  size_t pos = 2;
  bool have_sof = false, in_scan = false;
  for (;;) {
    if (in_scan) {  // entropy-coded data: up to FF followed by neither 00 (stuffing), FF (fill) nor RSTn
      while (pos + 1 < n && !(p[pos] == 0xFF && p[pos + 1] != 0x00 && p[pos + 1] != 0xFF &&
                              (p[pos + 1] < 0xD0 || p[pos + 1] > 0xD7)))
        ++pos;
    }
    if (pos >= n || (in_scan && pos + 1 >= n)) {
      why = in_scan ? "truncated JPEG (no end-of-image marker)" : "truncated JPEG (ends before the image data)";
      return false;
    }
    if (p[pos] != 0xFF) { why = detail::cat("corrupt JPEG (no marker at byte ", pos, ")"); return false; }
    while (pos < n && p[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) { why = "truncated JPEG (ends in a marker)"; return false; }
    const uint8_t m = p[pos++];
    if (m == 0xD9) {
      if (!in_scan) { why = "corrupt JPEG (no image data before the end-of-image marker)"; return false; }
      return true;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // markers without a segment
    if (m == 0x00 || m == 0xD8) { why = "corrupt JPEG (misplaced marker)"; return false; }
    if (pos + 2 > n) { why = "truncated JPEG (in a marker segment)"; return false; }
    const size_t len = be16(p + pos);
    if (len < 2) { why = "corrupt JPEG (bad segment length)"; return false; }
    if (pos + len > n) { why = "truncated JPEG (in a marker segment)"; return false; }
    const uint8_t* s = p + pos + 2;
    if (is_sof(m)) {
      if (have_sof) { why = "corrupt JPEG (two frame headers)"; return false; }
      if (len < 8 || len < 8 + 3 * (size_t)s[5]) { why = "corrupt JPEG (short frame header)"; return false; }
      h.bit_depth = s[0];
      h.h = (int)be16(s + 1);
      h.w = (int)be16(s + 3);
      h.stored_channels = s[5];
      h.progressive = (m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE);
      h.adobe_cmyk = (s[5] == 4);
      have_sof = true;
    } else if (m == 0xC4) {
      if (!check_dht(s, len - 2, why)) return false;
    } else if (m == 0xDA) {
      if (!have_sof) { why = "corrupt JPEG (scan before the frame header)"; return false; }
      in_scan = true;
    }
    pos += len;
  }
}

// Walks the PNG chunks: every length within the file, every CRC right, IHDR first, IEND present.
bool scan_png(const uint8_t* p, size_t n, ImageHeader& h, std::string& why) {
  size_t pos = 8;
  bool first = true;
  for (;;) {
    if (pos + 12 > n) { why = "truncated PNG (no IEND chunk)"; return false; }
    const size_t len = be32(p + pos);
    const uint8_t* type = p + pos + 4;
    if (len > n - pos - 12) { why = "truncated PNG (chunk extends past the end of the file)"; return false; }
    const uLong crc = crc32(crc32(0L, Z_NULL, 0), type, (uInt)(len + 4));
    if (crc != be32(p + pos + 8 + len)) {
      std::string name((const char*)type, 4);
      for (auto& ch : name) ch = std::isalnum((unsigned char)ch) ? ch : '?';  // messages stay printable
      why = detail::cat("corrupt PNG (CRC mismatch in chunk '", name, "')");
      return false;
    }
    const bool ihdr = std::memcmp(type, "IHDR", 4) == 0;
    if (first != ihdr) { why = "corrupt PNG (IHDR is not the first chunk)"; return false; }
    if (ihdr) {
      if (len != 13) { why = "corrupt PNG (bad IHDR length)"; return false; }
      const uint8_t* s = p + pos + 8;
      const uint32_t w = be32(s), hh = be32(s + 4);
      h.w = w > (uint32_t)INT_MAX ? INT_MAX : (int)w;
      h.h = hh > (uint32_t)INT_MAX ? INT_MAX : (int)hh;
      h.bit_depth = s[8];
      switch (s[9]) {
        case 0: h.stored_channels = 1; break;
        case 2: h.stored_channels = 3; break;
        case 3: h.stored_channels = 3; break;  // palette
        case 4: h.stored_channels = 2; break;
        case 6: h.stored_channels = 4; break;
        default: why = detail::cat("corrupt PNG (colour type ", (int)s[9], ")"); return false;
      }
    }
    first = false;
    if (std::memcmp(type, "IEND", 4) == 0) return true;
    pos += 12 + len;
  }
}

}  // namespace

bool read_header(const uint8_t* bytes, size_t n, ImageHeader& hdr, std::string& why) {
  hdr = ImageHeader{};
  if (n == 0) { why = "empty file (0 bytes)"; return false; }
  hdr.format = sniff_format(bytes, n);
  switch (hdr.format) {
    case ImageFormat::jpeg: return scan_jpeg(bytes, n, hdr, why);
    case ImageFormat::png: return scan_png(bytes, n, hdr, why);
    default: why = "not a JPEG or PNG image"; return false;
  }
}

bool decode_image(const uint8_t* bytes, size_t n, int channels, const DecodeLimits& limits, DecodedImage& out,
                  std::string& why, std::string* note) {
  VIT_ASSERT(channels == 1 || channels == 3, "channels ", channels);
  why.clear();
  if (note) note->clear();
  out.stb_.reset();
  out.view_ = {};
  ImageHeader hdr;
  if (!read_header(bytes, n, hdr, why)) return false;
  if (n > (size_t)INT_MAX) { why = "file too large for the decoder"; return false; }
  // The limits before any allocation: on our own parse of the header, then on stb's reading of it.
  auto check_size = [&](int w, int h) {
    if (w <= 0 || h <= 0) { why = detail::cat("bad dimensions ", w, "x", h); return false; }
    if (w > limits.max_side || h > limits.max_side || (int64_t)w * h > limits.max_pixels) {
      why = detail::cat("image too large: ", w, "x", h, " (limits: ", limits.max_side, " px a side, ",
                        limits.max_pixels, " pixels)");
      return false;
    }
    return true;
  };
  if (!check_size(hdr.w, hdr.h)) return false;
  int x = 0, y = 0, comp = 0;
  if (!stbi_info_from_memory(bytes, (int)n, &x, &y, &comp)) {
    why = detail::cat("cannot decode ", format_name(hdr.format), " (", stbi_failure_reason(), ")");
    return false;
  }
  if (!check_size(x, y)) return false;
  const int req = (channels == 1 && comp <= 2) ? 1 : 3;
  int c = 0;
  uint8_t* px = stbi_load_from_memory(bytes, (int)n, &x, &y, &c, req);
  if (!px) {
    why = detail::cat("cannot decode ", format_name(hdr.format), " (", stbi_failure_reason(), ")");
    return false;
  }
  out.stb_.reset(px);
  out.view_ = ImageView{px, y, x, req};
  if (channels != req) {
    out.view_ = convert_channels(out.view_, channels, out.converted_);
    out.stb_.reset();
  }
  if (note) {
    if (hdr.format == ImageFormat::jpeg && hdr.adobe_cmyk) *note = "4-component (CMYK/YCCK) JPEG converted to RGB";
    else if (hdr.format == ImageFormat::png && hdr.bit_depth == 16) *note = "16-bit PNG reduced to 8 bits";
  }
  return true;
}

namespace {
struct Fd {
  int fd;
  ~Fd() { if (fd >= 0) ::close(fd); }
};
}  // namespace

bool read_file(const std::string& path, std::vector<uint8_t>& buf, size_t max_bytes, std::string& why) {
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) { why = detail::cat("cannot open (", std::strerror(errno), ")"); return false; }
  struct stat st{};
  if (::fstat(f.fd, &st) != 0) { why = detail::cat("cannot stat (", std::strerror(errno), ")"); return false; }
  if (!S_ISREG(st.st_mode)) { why = "not a regular file"; return false; }
  if ((uint64_t)st.st_size > max_bytes) {
    why = detail::cat("file too large (", st.st_size, " bytes, limit ", max_bytes, ")");
    return false;
  }
  buf.resize((size_t)st.st_size);
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t r = ::read(f.fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) { why = detail::cat("read error (", std::strerror(errno), ")"); return false; }
    if (r == 0) break;  // the file shrank while we read it
    got += (size_t)r;
  }
  buf.resize(got);
  return true;
}

}  // namespace vit::data
