// plot_metrics: draw the training curves of a metrics JSON-lines file (written by vit_train) to one PNG.
//   plot_metrics METRICS.jsonl OUT.png [--width W] [--height H]
// Three panels stacked vertically, sharing the step axis: (1) loss and val_loss, (2) val_top1 and val_top5
// in %, (3) lr. Each line of the input is a flat JSON object of numbers; any subset of keys may appear,
// unknown keys are ignored, malformed lines are skipped and counted. Rasterised here into an RGB buffer
// (anti-aliased lines, a built-in 5x7 font) and written with stb_image_write.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/check.h"

// vit_core carries stb_image (decode) but not stb_image_write, so this tool owns the writer; static keeps
// its symbols private to this executable.
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace {

// ---------------------------------------------------------------------------------------------------
// Reading the metrics file.

struct Point {
  double step, value;
};

// Keys the panels draw; everything else in a line is accepted and ignored.
constexpr std::array<std::string_view, 5> kPlotted = {"loss", "val_loss", "val_top1", "val_top5", "lr"};

struct Metrics {
  std::map<std::string, std::vector<Point>, std::less<>> series;  // key -> (step, value), sorted by step
  long long lines = 0, malformed = 0, first_malformed = 0, non_finite = 0;
};

// Parses one flat JSON object {"key": number, ...} into (key, value) pairs. String, true/false/null values
// are tolerated (skipped) so a future non-numeric key does not make every line unreadable; nesting is not.
class LineParser {
 public:
  explicit LineParser(const std::string& line) : s_(line.c_str()) {}

  bool parse(std::vector<std::pair<std::string, double>>& out, std::vector<std::string>& non_numeric) {
    ws();
    if (!eat('{')) return false;
    ws();
    if (eat('}')) return rest_is_blank();
    for (;;) {
      ws();
      std::string key;
      if (!string(&key)) return false;
      ws();
      if (!eat(':')) return false;
      ws();
      if (*s_ == '"') {
        if (!string(nullptr)) return false;
        non_numeric.push_back(key);
      } else if (literal("true") || literal("false") || literal("null")) {
        non_numeric.push_back(key);
      } else {
        if (*s_ == '{' || *s_ == '[' || *s_ == '\0') return false;
        char* end = nullptr;
        const double v = std::strtod(s_, &end);  // also takes the "nan"/"inf" a diverged run prints
        if (end == s_) return false;
        s_ = end;
        out.emplace_back(std::move(key), v);
      }
      ws();
      if (eat(',')) continue;
      if (eat('}')) return rest_is_blank();
      return false;
    }
  }

 private:
  void ws() {
    while (*s_ == ' ' || *s_ == '\t' || *s_ == '\r' || *s_ == '\n') ++s_;
  }
  bool eat(char c) {
    if (*s_ != c) return false;
    ++s_;
    return true;
  }
  bool literal(std::string_view word) {
    if (std::strncmp(s_, word.data(), word.size()) != 0) return false;
    s_ += word.size();
    return true;
  }
  bool string(std::string* out) {
    if (!eat('"')) return false;
    while (*s_ != '"') {
      if (*s_ == '\0') return false;
      if (*s_ == '\\') {
        ++s_;  // keep the escaped character as is: the keys we read never contain escapes
        if (*s_ == '\0') return false;
      }
      if (out) out->push_back(*s_);
      ++s_;
    }
    ++s_;
    return true;
  }
  bool rest_is_blank() {
    ws();
    return *s_ == '\0';
  }

  const char* s_;
};

bool is_plotted(std::string_view key) {
  return std::find(kPlotted.begin(), kPlotted.end(), key) != kPlotted.end();
}

Metrics read_metrics(const std::string& path) {
  std::error_code ec;
  VIT_REQUIRE(!std::filesystem::is_directory(path, ec), "cannot read metrics file '", path, "': it is a directory");
  std::ifstream in(path);
  VIT_REQUIRE(in, "cannot read metrics file '", path, "': ", std::strerror(errno));
  Metrics m;
  std::string line;
  std::vector<std::pair<std::string, double>> kv;
  std::vector<std::string> non_numeric;
  while (std::getline(in, line)) {
    ++m.lines;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines are not errors
    kv.clear();
    non_numeric.clear();
    bool ok = LineParser(line).parse(kv, non_numeric);
    const auto step_it = std::find_if(kv.begin(), kv.end(), [](const auto& p) { return p.first == "step"; });
    ok = ok && step_it != kv.end() && std::isfinite(step_it->second);
    ok = ok && std::none_of(non_numeric.begin(), non_numeric.end(),
                            [](const std::string& k) { return k == "step" || is_plotted(k); });
    if (!ok) {
      if (m.malformed++ == 0) m.first_malformed = m.lines;
      continue;
    }
    for (const auto& [key, value] : kv) {
      if (!is_plotted(key)) continue;
      if (!std::isfinite(value)) {
        ++m.non_finite;  // a NaN loss cannot be drawn; it is reported, the rest of the curve still is
        continue;
      }
      m.series[key].push_back({step_it->second, value});
    }
  }
  VIT_REQUIRE(!in.bad(), "error while reading metrics file '", path, "'");
  // A resumed run appends to the same file and repeats the steps after its checkpoint: order by step and
  // keep the newest value for each step.
  for (auto& [key, pts] : m.series) {
    std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.step < b.step; });
    std::vector<Point> kept;
    kept.reserve(pts.size());
    for (const Point& p : pts) {
      if (!kept.empty() && kept.back().step == p.step)
        kept.back() = p;
      else
        kept.push_back(p);
    }
    pts = std::move(kept);
  }
  return m;
}

// ---------------------------------------------------------------------------------------------------
// A 5x7 bitmap font (cell 6x8: one column of spacing, one row for descenders), drawn for this tool.
// Each glyph is eight rows of five bits, most significant bit leftmost.

struct Glyph {
  char c;
  std::array<uint8_t, 8> rows;
};

constexpr Glyph kGlyphs[] = {
    {' ', {0, 0, 0, 0, 0, 0, 0, 0}},
    {'0', {0b01110, 0b10001, 0b10001, 0b10101, 0b10001, 0b10001, 0b01110, 0}},
    {'1', {0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0}},
    {'2', {0b01110, 0b10001, 0b00001, 0b00110, 0b01000, 0b10000, 0b11111, 0}},
    {'3', {0b01110, 0b10001, 0b00001, 0b00110, 0b00001, 0b10001, 0b01110, 0}},
    {'4', {0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010, 0}},
    {'5', {0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110, 0}},
    {'6', {0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110, 0}},
    {'7', {0b11111, 0b00001, 0b00010, 0b00100, 0b00100, 0b01000, 0b01000, 0}},
    {'8', {0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110, 0}},
    {'9', {0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100, 0}},
    {'A', {0b00100, 0b01010, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0}},
    {'B', {0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110, 0}},
    {'C', {0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110, 0}},
    {'D', {0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100, 0}},
    {'E', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111, 0}},
    {'F', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000, 0}},
    {'G', {0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111, 0}},
    {'H', {0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001, 0}},
    {'I', {0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0}},
    {'J', {0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100, 0}},
    {'K', {0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001, 0}},
    {'L', {0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111, 0}},
    {'M', {0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001, 0}},
    {'N', {0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001, 0b10001, 0}},
    {'O', {0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0}},
    {'P', {0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000, 0}},
    {'Q', {0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101, 0}},
    {'R', {0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001, 0}},
    {'S', {0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110, 0}},
    {'T', {0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0}},
    {'U', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110, 0}},
    {'V', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0}},
    {'W', {0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010, 0}},
    {'X', {0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001, 0}},
    {'Y', {0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100, 0b00100, 0}},
    {'Z', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111, 0}},
    {'a', {0, 0, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111, 0}},
    {'b', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110, 0}},
    {'c', {0, 0, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110, 0}},
    {'d', {0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111, 0}},
    {'e', {0, 0, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110, 0}},
    {'f', {0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000, 0}},
    {'g', {0, 0, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}},
    {'h', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0}},
    {'i', {0b00100, 0, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110, 0}},
    {'j', {0b00010, 0, 0b00110, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100}},
    {'k', {0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0}},
    {'l', {0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110, 0}},
    {'m', {0, 0, 0b11010, 0b10101, 0b10101, 0b10101, 0b10001, 0}},
    {'n', {0, 0, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001, 0}},
    {'o', {0, 0, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110, 0}},
    {'p', {0, 0, 0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000}},
    {'q', {0, 0, 0b01111, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001}},
    {'r', {0, 0, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000, 0}},
    {'s', {0, 0, 0b01111, 0b10000, 0b01110, 0b00001, 0b11110, 0}},
    {'t', {0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110, 0}},
    {'u', {0, 0, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101, 0}},
    {'v', {0, 0, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0}},
    {'w', {0, 0, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010, 0}},
    {'x', {0, 0, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0}},
    {'y', {0, 0, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}},
    {'z', {0, 0, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111, 0}},
    {'.', {0, 0, 0, 0, 0, 0b01100, 0b01100, 0}},
    {',', {0, 0, 0, 0, 0, 0b01100, 0b00100, 0b01000}},
    {'-', {0, 0, 0, 0b01110, 0, 0, 0, 0}},
    {'+', {0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0, 0}},
    {'%', {0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011, 0}},
    {'_', {0, 0, 0, 0, 0, 0, 0, 0b11111}},
    {'(', {0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010, 0}},
    {')', {0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000, 0}},
    {':', {0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0, 0}},
    {'/', {0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0, 0}},
    {'=', {0, 0, 0b11111, 0, 0b11111, 0, 0, 0}},
    {'?', {0b01110, 0b10001, 0b00001, 0b00110, 0b00100, 0, 0b00100, 0}},
};

constexpr int kCellW = 6, kCellH = 8;

const Glyph& glyph(char c) {
  for (const Glyph& g : kGlyphs)
    if (g.c == c) return g;
  return glyph('?');
}

// ---------------------------------------------------------------------------------------------------
// The raster.

struct Rgb {
  uint8_t r, g, b;
};

constexpr Rgb kWhite{255, 255, 255}, kBlack{0, 0, 0}, kText{40, 40, 40}, kGrid{228, 228, 228},
    kFrame{90, 90, 90};

Rgb mix(Rgb a, Rgb b, float t) {  // t = 0 gives a, 1 gives b
  auto m = [t](uint8_t x, uint8_t y) { return static_cast<uint8_t>(std::lround(x + (y - x) * t)); };
  return {m(a.r, b.r), m(a.g, b.g), m(a.b, b.b)};
}

struct Rect {
  int x0, y0, x1, y1;  // half-open: [x0, x1) x [y0, y1)
  int width() const { return x1 - x0; }
  int height() const { return y1 - y0; }
};

class Canvas {
 public:
  Canvas(int w, int h, Rgb bg) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3), clip_{0, 0, w, h} {
    for (size_t i = 0; i < px_.size(); i += 3) px_[i] = bg.r, px_[i + 1] = bg.g, px_[i + 2] = bg.b;
  }
  int width() const { return w_; }
  int height() const { return h_; }
  const uint8_t* data() const { return px_.data(); }

  // Drawing outside the clip rectangle is dropped, so curves stay inside their plot area.
  void set_clip(Rect r) {
    clip_ = {std::max(r.x0, 0), std::max(r.y0, 0), std::min(r.x1, w_), std::min(r.y1, h_)};
  }
  void reset_clip() { clip_ = {0, 0, w_, h_}; }

  void blend(int x, int y, Rgb c, float alpha) {
    if (x < clip_.x0 || x >= clip_.x1 || y < clip_.y0 || y >= clip_.y1 || alpha <= 0.f) return;
    uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
    const Rgb out = mix({p[0], p[1], p[2]}, c, std::min(alpha, 1.f));
    p[0] = out.r, p[1] = out.g, p[2] = out.b;
  }

  void fill(Rect r, Rgb c, float alpha = 1.f) {
    for (int y = r.y0; y < r.y1; ++y)
      for (int x = r.x0; x < r.x1; ++x) blend(x, y, c, alpha);
  }

  // Anti-aliased segment of the given width: coverage falls off over one pixel at the stroke's edge.
  void line(float ax, float ay, float bx, float by, Rgb c, float width) {
    const float half = 0.5f * width;
    const int x0 = static_cast<int>(std::floor(std::min(ax, bx) - half - 1));
    const int x1 = static_cast<int>(std::ceil(std::max(ax, bx) + half + 1));
    const int y0 = static_cast<int>(std::floor(std::min(ay, by) - half - 1));
    const int y1 = static_cast<int>(std::ceil(std::max(ay, by) + half + 1));
    const float dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (int y = std::max(y0, clip_.y0); y < std::min(y1, clip_.y1); ++y)
      for (int x = std::max(x0, clip_.x0); x < std::min(x1, clip_.x1); ++x) {
        const float px = x + 0.5f - ax, py = y + 0.5f - ay;
        const float t = len2 > 0 ? std::clamp((px * dx + py * dy) / len2, 0.f, 1.f) : 0.f;
        const float d = std::hypot(px - t * dx, py - t * dy);
        blend(x, y, c, half + 0.5f - d);
      }
  }

  void disc(float cx, float cy, float r, Rgb c) { line(cx, cy, cx, cy, c, 2 * r); }

  // Text with its top-left corner at (x, y), each font pixel drawn as a scale x scale square.
  void text(int x, int y, std::string_view s, Rgb c, int scale) {
    for (char ch : s) {
      const Glyph& g = glyph(ch);
      for (int row = 0; row < kCellH; ++row)
        for (int col = 0; col < 5; ++col)
          if (g.rows[row] & (0b10000 >> col))
            fill({x + col * scale, y + row * scale, x + (col + 1) * scale, y + (row + 1) * scale}, c);
      x += kCellW * scale;
    }
  }
  static int text_width(std::string_view s, int scale) {
    return s.empty() ? 0 : (static_cast<int>(s.size()) * kCellW - 1) * scale;
  }

 private:
  int w_, h_;
  std::vector<uint8_t> px_;
  Rect clip_;
};

// ---------------------------------------------------------------------------------------------------
// Axes: tick spacing and labels.

// A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about `target` intervals over span.
double nice_step(double span, int target) {
  const double raw = span / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

std::vector<double> ticks(double lo, double hi, double step) {
  std::vector<double> out;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k += 1) out.push_back(k * step);
  return out;
}

// Shortest labels that tell neighbouring ticks apart: fixed point for ordinary magnitudes, otherwise
// mantissa-e-exponent with a compact exponent ("2.5e-4"), all with the digits the largest tick needs.
std::vector<std::string> tick_labels(const std::vector<double>& vs, double step) {
  const int k = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  double vmax = 0;
  for (double v : vs) vmax = std::max(vmax, std::fabs(v));
  const bool sci = k < -3 || vmax >= 1e6;
  const int digits = sci ? std::max(0, static_cast<int>(std::floor(std::log10(vmax) + 1e-9)) - k) : std::max(0, -k);
  std::vector<std::string> out;
  char buf[64];
  for (double v : vs) {
    if (std::fabs(v) < step * 1e-6) {
      out.emplace_back("0");
    } else if (sci) {
      std::snprintf(buf, sizeof buf, "%.*e", digits, v);
      const std::string t = buf;
      const size_t e = t.find('e');
      out.push_back(t.substr(0, e) + "e" + std::to_string(std::atoi(t.c_str() + e + 1)));
    } else {
      std::snprintf(buf, sizeof buf, "%.*f", digits, v);
      out.emplace_back(buf);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Panels.

struct Series {
  std::string label;
  Rgb color;
  std::vector<Point> pts;
  bool markers = false;  // sparse series (evaluations) show their points
  float width = 2.f;     // stroke width in units of the text scale
};

struct Panel {
  std::string title;
  std::vector<Series> series;
  bool y_from_zero = false;   // learning rate: the schedule's floor is 0
  double y_cap = INFINITY;    // accuracy: never above 100 %
};

struct Layout {
  int scale;             // text scale (pixels per font pixel)
  double xlo, xhi;       // shared step range
  int left, right;       // plot-area margins, the same in every panel so the step axes line up
};

constexpr std::string_view kEmpty = "no data in this file";

struct Pixel {
  float x, y;
};

// The legend goes in whichever corner of the plot covers the fewest drawn pixels (points and mid-segments).
void draw_legend(Canvas& cv, Rect plot, const Panel& p, const std::vector<Pixel>& drawn, int s) {
  std::vector<const Series*> shown;
  int text_w = 0;
  for (const Series& se : p.series)
    if (!se.pts.empty()) shown.push_back(&se), text_w = std::max(text_w, Canvas::text_width(se.label, s));
  if (shown.empty()) return;
  const int pad = 5 * s, sample = 16 * s, row_h = 11 * s;
  const int w = pad + sample + 4 * s + text_w + pad, h = pad + static_cast<int>(shown.size()) * row_h + pad - 3 * s;
  const int m = 6 * s;
  const Rect corners[4] = {{plot.x1 - m - w, plot.y0 + m, plot.x1 - m, plot.y0 + m + h},
                           {plot.x0 + m, plot.y0 + m, plot.x0 + m + w, plot.y0 + m + h},
                           {plot.x1 - m - w, plot.y1 - m - h, plot.x1 - m, plot.y1 - m},
                           {plot.x0 + m, plot.y1 - m - h, plot.x0 + m + w, plot.y1 - m}};
  Rect box = corners[0];
  double best = INFINITY;
  for (const Rect& r : corners) {
    const auto n = std::count_if(drawn.begin(), drawn.end(), [&](const Pixel& q) {
      return q.x >= r.x0 - m && q.x < r.x1 + m && q.y >= r.y0 - m && q.y < r.y1 + m;
    });
    if (n < best) best = static_cast<double>(n), box = r;
  }
  cv.fill(box, kWhite, 0.88f);
  cv.fill({box.x0, box.y0, box.x1, box.y0 + 1}, kFrame);
  cv.fill({box.x0, box.y1 - 1, box.x1, box.y1}, kFrame);
  cv.fill({box.x0, box.y0, box.x0 + 1, box.y1}, kFrame);
  cv.fill({box.x1 - 1, box.y0, box.x1, box.y1}, kFrame);
  int y = box.y0 + pad;
  for (const Series* se : shown) {
    const float cy = y + 3.5f * s;
    cv.line(box.x0 + pad, cy, box.x0 + pad + sample, cy, se->color, se->width * s);
    if (se->markers || se->pts.size() == 1) cv.disc(box.x0 + pad + sample * 0.5f, cy, 2.5f * s, se->color);
    cv.text(box.x0 + pad + sample + 4 * s, y, se->label, kText, s);
    y += row_h;
  }
}

void draw_panel(Canvas& cv, Rect area, const Panel& p, const Layout& L) {
  const int s = L.scale;
  const Rect plot{area.x0 + L.left, area.y0 + 20 * s, area.x1 - L.right, area.y1 - 32 * s};
  cv.text(plot.x0 + (plot.width() - Canvas::text_width(p.title, s)) / 2, area.y0 + 7 * s, p.title, kBlack, s);

  // y range from the drawn values, padded so curves do not run along the frame.
  double lo = INFINITY, hi = -INFINITY;
  for (const Series& se : p.series)
    for (const Point& pt : se.pts) lo = std::min(lo, pt.value), hi = std::max(hi, pt.value);
  const bool empty = !(lo <= hi);
  if (empty) lo = 0, hi = 1;
  if (p.y_from_zero) lo = std::min(lo, 0.0);
  if (hi - lo <= 0) {
    const double d = lo != 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo -= d, hi += d;
  }
  const double pad = 0.06 * (hi - lo);
  const bool touches_cap = hi <= p.y_cap;
  hi += pad;
  if (!(p.y_from_zero && lo == 0)) lo -= pad;
  if (touches_cap) hi = std::min(hi, p.y_cap);

  auto X = [&](double step) {
    return static_cast<float>(plot.x0 + (step - L.xlo) / (L.xhi - L.xlo) * (plot.width() - 1) + 0.5);
  };
  auto Y = [&](double v) { return static_cast<float>(plot.y1 - 1 - (v - lo) / (hi - lo) * (plot.height() - 1) + 0.5); };

  // Grid, ticks and their labels.
  const double ystep = nice_step(hi - lo, std::max(2, plot.height() / (22 * s)));
  const std::vector<double> yticks = empty ? std::vector<double>{} : ticks(lo, hi, ystep);
  const std::vector<std::string> ylabels = tick_labels(yticks, ystep);
  for (size_t i = 0; i < yticks.size(); ++i) {
    const int y = static_cast<int>(Y(yticks[i]));
    cv.fill({plot.x0, y, plot.x1, y + 1}, kGrid);
    cv.fill({plot.x0 - 4 * s, y, plot.x0, y + std::max(1, s / 2)}, kFrame);
    const std::string& label = ylabels[i];
    cv.text(plot.x0 - 7 * s - Canvas::text_width(label, s), y - 3 * s, label, kText, s);
  }
  const double xstep = std::max(1.0, nice_step(L.xhi - L.xlo, std::max(2, plot.width() / (60 * s))));
  const std::vector<double> xticks = ticks(L.xlo, L.xhi, xstep);
  const std::vector<std::string> xlabels = tick_labels(xticks, xstep);
  for (size_t i = 0; i < xticks.size(); ++i) {
    const int x = static_cast<int>(X(xticks[i]));
    cv.fill({x, plot.y0, x + 1, plot.y1}, kGrid);
    cv.fill({x, plot.y1, x + std::max(1, s / 2), plot.y1 + 4 * s}, kFrame);
    const int w = Canvas::text_width(xlabels[i], s);  // centred under the tick, kept inside the image
    cv.text(std::clamp(x - w / 2, 0, std::max(0, cv.width() - w - s)), plot.y1 + 7 * s, xlabels[i], kText, s);
  }
  cv.text(plot.x0 + (plot.width() - Canvas::text_width("step", s)) / 2, plot.y1 + 19 * s, "step", kText, s);
  cv.fill({plot.x0 - 1, plot.y0 - 1, plot.x1 + 1, plot.y0}, kFrame);
  cv.fill({plot.x0 - 1, plot.y1, plot.x1 + 1, plot.y1 + 1}, kFrame);
  cv.fill({plot.x0 - 1, plot.y0, plot.x0, plot.y1}, kFrame);
  cv.fill({plot.x1, plot.y0, plot.x1 + 1, plot.y1}, kFrame);

  if (empty) {
    cv.text(plot.x0 + (plot.width() - Canvas::text_width(kEmpty, s)) / 2, (plot.y0 + plot.y1) / 2 - 4 * s, kEmpty,
            kFrame, s);
    return;
  }

  cv.set_clip(plot);
  std::vector<Pixel> drawn;
  for (const Series& se : p.series) {
    for (size_t i = 0; i < se.pts.size(); ++i) {
      const Pixel b{X(se.pts[i].step), Y(se.pts[i].value)};
      drawn.push_back(b);
      if (i == 0) continue;
      const Pixel a{X(se.pts[i - 1].step), Y(se.pts[i - 1].value)};
      cv.line(a.x, a.y, b.x, b.y, se.color, se.width * s);
      drawn.push_back({0.5f * (a.x + b.x), 0.5f * (a.y + b.y)});
    }
    if (se.pts.size() == 1 || se.markers)
      for (const Point& pt : se.pts) cv.disc(X(pt.step), Y(pt.value), 2.5f * s, se.color);
  }
  cv.reset_clip();
  draw_legend(cv, plot, p, drawn, s);
}

// A centred moving average over a window of about 2% of the points: the trend under a noisy loss.
std::vector<Point> smoothed(const std::vector<Point>& pts) {
  const size_t n = pts.size(), half = n / 100;
  std::vector<double> prefix(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + pts[i].value;
  std::vector<Point> out(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t a = i >= half ? i - half : 0, b = std::min(n, i + half + 1);
    out[i] = {pts[i].step, (prefix[b] - prefix[a]) / static_cast<double>(b - a)};
  }
  return out;
}

std::vector<Point> take(Metrics& m, std::string_view key) {
  auto it = m.series.find(key);
  return it == m.series.end() ? std::vector<Point>{} : std::move(it->second);
}

std::vector<Panel> build_panels(Metrics& m) {
  constexpr Rgb kBlue{31, 119, 180}, kOrange{230, 120, 20}, kGreen{44, 160, 44}, kPurple{148, 103, 189},
      kRed{214, 39, 40};
  std::vector<Panel> panels(3);

  panels[0].title = "Training loss";
  std::vector<Point> loss = take(m, "loss");
  if (loss.size() >= 50) {  // noisy enough that the raw curve hides the trend: draw both
    std::vector<Point> avg = smoothed(loss);
    panels[0].series.push_back({"loss", mix(kBlue, kWhite, 0.6f), std::move(loss), false, 1.f});
    panels[0].series.push_back({"loss (mean)", kBlue, std::move(avg), false, 2.f});
  } else {
    panels[0].series.push_back({"loss", kBlue, std::move(loss), false, 2.f});
  }
  panels[0].series.push_back({"val_loss", kOrange, take(m, "val_loss"), true, 2.f});

  // The trainer writes accuracies as fractions; a file that already holds percentages is left as is.
  panels[1].title = "Validation accuracy (%)";
  panels[1].y_cap = 100;
  for (auto [key, color] : {std::pair{"val_top1", kGreen}, std::pair{"val_top5", kPurple}}) {
    std::vector<Point> pts = take(m, key);
    const bool fraction = std::all_of(pts.begin(), pts.end(), [](const Point& p) { return p.value <= 1.0; });
    if (fraction)
      for (Point& p : pts) p.value *= 100;
    panels[1].series.push_back({key, color, std::move(pts), true, 2.f});
  }

  panels[2].title = "Learning rate";
  panels[2].y_from_zero = true;
  panels[2].series.push_back({"lr", kRed, take(m, "lr"), false, 2.f});
  return panels;
}

int usage() {
  std::fprintf(stderr,
               "usage: plot_metrics METRICS.jsonl OUT.png [--width W] [--height H]\n"
               "Draws loss/val_loss, val_top1/val_top5 (%%) and lr against step, stacked, into one PNG.\n"
               "W in [240, 8000] (default 1000), H in [300, 8000] (default 1200).\n");
  return 2;
}

bool parse_dim(const char* text, int lo, int hi, int* out) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || v < lo || v > hi) return false;
  *out = static_cast<int>(v);
  return true;
}

int run(const std::string& in_path, const std::string& out_path, int width, int height) {
  Metrics m = read_metrics(in_path);
  size_t n_points = 0;
  double xlo = INFINITY, xhi = -INFINITY;
  for (const auto& [key, pts] : m.series)
    for (const Point& p : pts) ++n_points, xlo = std::min(xlo, p.step), xhi = std::max(xhi, p.step);
  VIT_REQUIRE(n_points > 0, "no usable line in metrics file '", in_path, "' (", m.lines, " line(s), ", m.malformed,
              " malformed; expected JSON objects with \"step\" and one of loss, val_loss, val_top1, val_top5, lr)");
  const double first_step = xlo, last_step = xhi;
  if (xhi - xlo < 1) xlo -= 1, xhi += 1;  // one step only: give it some room

  const std::vector<Panel> panels = build_panels(m);
  const int s = (width >= 640 && height >= 720) ? 2 : 1;
  const Layout L{s, xlo, xhi, 9 * kCellW * s + 8 * s, 14 * s};
  Canvas cv(width, height, kWhite);
  const int n = static_cast<int>(panels.size());
  for (int i = 0; i < n; ++i) draw_panel(cv, {0, height * i / n, width, height * (i + 1) / n}, panels[i], L);

  VIT_REQUIRE(stbi_write_png(out_path.c_str(), width, height, 3, cv.data(), width * 3) != 0, "cannot write PNG '",
              out_path, "'");
  std::printf("wrote %s (%dx%d): %zu point(s), steps %.0f..%.0f", out_path.c_str(), width, height, n_points,
              first_step, last_step);
  if (m.malformed) std::printf(", skipped %lld malformed line(s) (first: line %lld)", m.malformed, m.first_malformed);
  if (m.non_finite) std::printf(", dropped %lld non-finite value(s)", m.non_finite);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  int width = 1000, height = 1200;
  for (int i = 3; i < argc; i += 2) {
    const std::string opt = argv[i];
    if (i + 1 >= argc) return usage();
    if (opt == "--width" && parse_dim(argv[i + 1], 240, 8000, &width)) continue;
    if (opt == "--height" && parse_dim(argv[i + 1], 300, 8000, &height)) continue;
    return usage();
  }
  try {
    return run(argv[1], argv[2], width, height);
  } catch (const vit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
