// The one table that drives the configuration: for every dotted key its type, allowed values, default
// (read from the Config structs) and the member it sets. Parsing, overrides, error messages, to_toml and
// the --help reference all walk this table, so a key exists in exactly one place.
// TOML-free on purpose: config.cpp turns toml++ nodes into Values before they reach the schema.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/config.h"

namespace vit::config_schema {

// A parsed TOML value, reduced to what configs use. `Other` stands for what no key accepts (dates,
// times, tables inside values), kept as its kind and text for messages.
struct Value {
  struct Other {
    std::string kind;  // "date", "table", ...
    std::string text;
    bool operator==(const Other&) const = default;
  };
  std::variant<bool, int64_t, double, std::string, std::vector<Value>, Other> v;
};

// "string \"abc\"", "integer 3", "array [1, 2]": how a bad value is shown in a message.
std::string describe(const Value& v);
// The value as TOML text: 3, 1.5, "abc", [1, 2].
std::string to_toml_text(const Value& v);
// Shortest decimal text that reads back to the same double, always a valid TOML float ("4.0", "1e-08").
std::string format_double(double x);
// A TOML basic string literal with escapes.
std::string quote(std::string_view s);

struct Field {
  std::string key;      // "model.embed_dim"
  std::string type;     // "an integer", "a number", "a boolean", "a string", "an integer or [H, W]", ...
  std::string allowed;  // "[1, 4096]", "one of: token, avg, map, none", or "" (any value of the type)
  std::string doc;      // one line: what it does
  // A bare override word (run.device=cpu) or any non-string override value (run.name=42) may be taken
  // as the string it spells: true for string keys that accept no booleans.
  bool string_like = false;
  // Checks `v` (type, range, allowed set) and stores it into the config. Returns the problem as text
  // ("expects an integer, got string \"abc\"", "= 0 is out of range [1, 256]"), without the key.
  std::function<std::optional<std::string>(Config&, const Value&)> set;
  // The current value as TOML text.
  std::function<std::string(const Config&)> emit;

  std::string section() const { return key.substr(0, key.rfind('.')); }
  std::string leaf() const { return key.substr(key.rfind('.') + 1); }
};

// Every key, in the fixed order of to_toml (sections contiguous: run, model, data, data.transforms,
// training, training.checkpoint, optimizer, scheduler, distributed, logging).
const std::vector<Field>& fields();
const Field* find_field(std::string_view key);
// The section names ("run", "data", "data.transforms", ...), in to_toml order.
const std::vector<std::string>& sections();
bool is_section(std::string_view name);

// The valid key or section closest to an unknown one: a key with the same last component if there is
// one ("training.embed_dim" -> "model.embed_dim"), else the smallest edit distance over all names.
std::string closest_name(std::string_view unknown);
// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
size_t edit_distance(std::string_view a, std::string_view b);

// Every key with its type, allowed values, default and meaning: the text behind --help.
std::string reference();

}  // namespace vit::config_schema
