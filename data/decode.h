// Image decoding (stb_image, JPEG and PNG only) behind checks that make a bad file a reported failure,
// never a crash: format sniffing by content, a structural walk of the file (markers / chunks, CRCs,
// truncation), size limits read from the header before any pixel is decoded.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/image.h"

namespace vit::data {

enum class ImageFormat { unknown, jpeg, png };
const char* format_name(ImageFormat f);
// By content (magic bytes), not by name.
ImageFormat sniff_format(const uint8_t* p, size_t n);
// By file name extension (case-insensitive .jpg/.jpeg/.png), `unknown` otherwise.
ImageFormat format_from_name(const std::string& path);

struct DecodeLimits {
  int max_side = 16384;                      // pixels, either side
  int64_t max_pixels = int64_t(1) << 28;     // width × height
  size_t max_file_bytes = size_t(1) << 30;   // refuse to read larger files
  // Files that decode only through a conversion (CMYK JPEG, 16-bit PNG, a PNG named .JPEG): skipped as bad
  // files unless data.convert_odd_images is set, then decoded with a note.
  bool convert_odd = false;
};

// What the header says (read without decoding pixels).
struct ImageHeader {
  ImageFormat format = ImageFormat::unknown;
  int w = 0, h = 0;
  int stored_channels = 0;   // as stored: JPEG components (1, 3, 4), PNG channels (1-4)
  int bit_depth = 8;         // PNG: 1, 2, 4, 8, 16
  bool progressive = false;  // JPEG SOF2
  bool adobe_cmyk = false;   // 4-component JPEG (CMYK or YCCK)
};

// Decoded pixels; owns stb's buffer (or a converted copy).
class DecodedImage {
 public:
  ImageView view() const { return view_; }
 private:
  friend bool decode_image(const uint8_t*, size_t, int, const DecodeLimits&, DecodedImage&, std::string&, std::string*);
  struct StbFree { void operator()(uint8_t* p) const; };
  std::unique_ptr<uint8_t, StbFree> stb_;
  std::vector<uint8_t> converted_;
  ImageView view_;
};

// Reads and checks the header and structure: format, dimensions; JPEG: every marker segment from SOI to
// EOI (a missing EOI means truncated), every Huffman table (stb_image 2.27 overflows on tables of more
// than 256 codes); PNG: chunk lengths, CRCs, IHDR first, IEND present. Returns false with `why`.
bool read_header(const uint8_t* bytes, size_t n, ImageHeader& hdr, std::string& why);

// Decodes JPEG or PNG bytes into 8-bit pixels with `channels` (1 or 3) channels: gray stays gray for 1
// channel, colour becomes gray by BT.601, gray is replicated for 3, alpha is dropped, CMYK/YCCK become
// RGB, 16-bit samples keep their high byte. Returns false with a short `why` on any failure; `note`
// (if given) receives a remark when the data needed such a conversion (CMYK, 16-bit), else "".
bool decode_image(const uint8_t* bytes, size_t n, int channels, const DecodeLimits& limits, DecodedImage& out,
                  std::string& why, std::string* note = nullptr);

// Reads a whole file into `buf` (reused). Returns false with `why` (missing, unreadable, too large).
bool read_file(const std::string& path, std::vector<uint8_t>& buf, size_t max_bytes, std::string& why);

}  // namespace vit::data
