// A small strict JSON (RFC 8259) parser and string writer, enough for safetensors headers. No third-party
// library: the header is untrusted input, so the parser bounds nesting depth and refuses everything the
// grammar does not allow (comments, trailing commas, leading zeros, raw control characters, invalid
// UTF-8, lone surrogates) plus duplicate object keys, which JSON permits but a tensor table must not have.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vit::json {

struct Value {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  std::string text;                // string: decoded UTF-8; number: the literal as written
  std::vector<Value> items;        // array elements, or object values (parallel to keys)
  std::vector<std::string> keys;   // object keys, in file order

  // Object member by key, or nullptr.
  const Value* get(std::string_view key) const;
};

const char* kind_name(Value::Kind k);

// Parses `text` as exactly one JSON value with optional surrounding whitespace. Throws vit::Error
// "<origin>: invalid JSON at byte <pos>: <what>".
Value parse(std::string_view text, std::string_view origin, int max_depth = 64);

// A number literal as an exact unsigned 64-bit integer (no sign, fraction or exponent), else nullopt.
std::optional<uint64_t> as_u64(const Value& v);

// Appends `s` as a JSON string literal: quotes, backslash and control characters escaped (\n \t \r \b \f,
// others \u00XX); everything else, including non-ASCII UTF-8, written as is.
void append_string(std::string& out, std::string_view s);

// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
bool valid_utf8(std::string_view s);

}  // namespace vit::json
