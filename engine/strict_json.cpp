#include "engine/strict_json.h"

#include <unordered_set>

#include "engine/check.h"

namespace vit::json {

const Value* Value::get(std::string_view key) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] == key) return &items[i];
  return nullptr;
}

const char* kind_name(Value::Kind k) {
  switch (k) {
    case Value::Kind::null: return "null";
    case Value::Kind::boolean: return "a boolean";
    case Value::Kind::number: return "a number";
    case Value::Kind::string: return "a string";
    case Value::Kind::array: return "an array";
    case Value::Kind::object: return "an object";
  }
  return "?";
}

namespace {

// Decodes one UTF-8 sequence at s[i]; returns its length, or 0 if malformed.
size_t utf8_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
  else return 0;  // continuation byte, overlong 2-byte lead (c0, c1) or above U+10FFFF (f5..ff)
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;  // overlong or surrogate
  if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
  return len;
}

void put_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

class Parser {
 public:
  Parser(std::string_view s, std::string_view origin, int max_depth) : s_(s), origin_(origin), max_depth_(max_depth) {}

  Value document() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (i_ != s_.size()) error("unexpected characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(std::string_view what) const {
    fail(origin_, ": invalid JSON at byte ", i_, ": ", what);
  }
  bool at_end() const { return i_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[i_]; }
  void skip_ws() {
    while (!at_end() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c, std::string_view what) {
    if (peek() != c || at_end()) error(what);
    ++i_;
  }
  void literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) error("unknown literal (expected a value)");
    i_ += word.size();
  }

  Value value(int depth) {
    if (at_end()) error("unexpected end of input (expected a value)");
    Value v;
    switch (peek()) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': v.kind = Value::Kind::string; v.text = string(); return v;
      case 't': literal("true"); v.kind = Value::Kind::boolean; v.boolean = true; return v;
      case 'f': literal("false"); v.kind = Value::Kind::boolean; return v;
      case 'n': literal("null"); return v;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number();
        error("unexpected character (expected a value)");
    }
  }

  Value object(int depth) {
    if (depth > max_depth_) error("nesting deeper than the allowed limit");
    ++i_;  // '{'
    Value v;
    v.kind = Value::Kind::object;
    std::unordered_set<std::string> seen;
    skip_ws();
    if (peek() == '}') {
      ++i_;
      return v;
    }
    for (;;) {
      skip_ws();
      if (peek() != '"' || at_end()) error("expected a string key");
      const size_t key_pos = i_;
      std::string key = string();
      if (!seen.insert(key).second) {
        i_ = key_pos;
        error("duplicate key \"" + key + "\"");
      }
      skip_ws();
      expect(':', "expected ':' after a key");
      skip_ws();
      v.items.push_back(value(depth));
      v.keys.push_back(std::move(key));
      skip_ws();
      if (peek() == ',' && !at_end()) {
        ++i_;
        continue;
      }
      expect('}', "expected ',' or '}' in an object");
      return v;
    }
  }

  Value array(int depth) {
    if (depth > max_depth_) error("nesting deeper than the allowed limit");
    ++i_;  // '['
    Value v;
    v.kind = Value::Kind::array;
    skip_ws();
    if (peek() == ']' && !at_end()) {
      ++i_;
      return v;
    }
    for (;;) {
      skip_ws();
      v.items.push_back(value(depth));
      skip_ws();
      if (peek() == ',' && !at_end()) {
        ++i_;
        continue;
      }
      expect(']', "expected ',' or ']' in an array");
      return v;
    }
  }

  uint32_t hex4() {
    if (i_ + 4 > s_.size()) error("truncated \\u escape");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else error("bad hex digit in \\u escape");
    }
    return v;
  }

  std::string string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) error("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) error("raw control character in a string (must be escaped)");
      if (c == '\\') {
        ++i_;
        if (at_end()) error("unterminated escape");
        const char e = s_[i_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t cp = hex4();
            if (cp >= 0xdc00 && cp <= 0xdfff) error("lone low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
              if (s_.substr(i_, 2) != "\\u") error("high surrogate not followed by a low surrogate");
              i_ += 2;
              const uint32_t lo = hex4();
              if (lo < 0xdc00 || lo > 0xdfff) error("high surrogate not followed by a low surrogate");
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            put_utf8(out, cp);
            break;
          }
          default: --i_; error("invalid escape sequence");
        }
        continue;
      }
      const size_t len = utf8_length(s_, i_);
      if (len == 0) error("invalid UTF-8");
      out.append(s_.substr(i_, len));
      i_ += len;
    }
  }

  Value number() {
    const size_t start = i_;
    const auto digits = [&] {
      const size_t d = i_;
      while (!at_end() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - d;
    };
    if (peek() == '-') ++i_;
    if (peek() == '0' && !at_end()) {
      ++i_;
      if (!at_end() && s_[i_] >= '0' && s_[i_] <= '9') error("leading zero in a number");
    } else if (digits() == 0) {
      error("expected digits in a number");
    }
    if (peek() == '.' && !at_end()) {
      ++i_;
      if (digits() == 0) error("expected digits after the decimal point");
    }
    if ((peek() == 'e' || peek() == 'E') && !at_end()) {
      ++i_;
      if ((peek() == '+' || peek() == '-') && !at_end()) ++i_;
      if (digits() == 0) error("expected digits in the exponent");
    }
    Value v;
    v.kind = Value::Kind::number;
    v.text.assign(s_.substr(start, i_ - start));
    return v;
  }

  std::string_view s_;
  std::string_view origin_;
  int max_depth_;
  size_t i_ = 0;
};

}  // namespace

Value parse(std::string_view text, std::string_view origin, int max_depth) {
  return Parser(text, origin, max_depth).document();
}

std::optional<uint64_t> as_u64(const Value& v) {
  if (v.kind != Value::Kind::number || v.text.empty()) return std::nullopt;
  uint64_t x = 0;
  for (char c : v.text) {
    if (c < '0' || c > '9') return std::nullopt;  // sign, fraction or exponent
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (x > (UINT64_MAX - d) / 10) return std::nullopt;
    x = x * 10 + d;
  }
  return x;
}

void append_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = utf8_length(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace vit::json
