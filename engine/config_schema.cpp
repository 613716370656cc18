#include "engine/config_schema.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <sstream>
#include <type_traits>

#include "engine/check.h"

namespace vit::config_schema {

// ---- value text -------------------------------------------------------------------------------------

namespace {

// Shortest round-trip text of a double; may look like an integer ("4").
std::string shortest(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  std::array<char, 64> buf{};
  auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), x);
  VIT_ASSERT(ec == std::errc());
  return std::string(buf.data(), end);
}

}  // namespace

std::string format_double(double x) {
  std::string s = shortest(x);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // "n": nan/inf stay as they are
  return s;
}

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    switch (ch) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch < 0x20 || ch == 0x7f) {
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", ch);
          out += esc;
        } else {
          out += static_cast<char>(ch);
        }
    }
  }
  return out + "\"";
}

std::string to_toml_text(const Value& v) {
  struct Visit {
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return format_double(d); }
    std::string operator()(const std::string& s) const { return quote(s); }
    std::string operator()(const std::vector<Value>& a) const {
      std::string out = "[";
      for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + to_toml_text(a[i]);
      return out + "]";
    }
    std::string operator()(const Value::Other& o) const { return o.text; }
  };
  return std::visit(Visit{}, v.v);
}

std::string describe(const Value& v) {
  struct Visit {
    std::string operator()(bool) const { return "boolean"; }
    std::string operator()(int64_t) const { return "integer"; }
    std::string operator()(double) const { return "float"; }
    std::string operator()(const std::string&) const { return "string"; }
    std::string operator()(const std::vector<Value>&) const { return "array"; }
    std::string operator()(const Value::Other& o) const { return o.kind; }
  };
  return std::visit(Visit{}, v.v) + " " + to_toml_text(v);
}

// ---- field builders ---------------------------------------------------------------------------------

namespace {

using Problem = std::optional<std::string>;

// The member a key sets, for const and non-const configs alike.
#define VIT_MEMBER(path) [](auto& c) -> auto& { return c.path; }

template <class Acc>
using MemberT = std::remove_cvref_t<decltype(std::declval<Acc>()(std::declval<Config&>()))>;

struct Range {
  double lo, hi;
  bool lo_open = false, hi_open = false;
  bool contains(double x) const {  // false for NaN
    return (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
  }
  std::string text() const {
    return std::string(lo_open ? "(" : "[") + shortest(lo) + ", " + shortest(hi) + (hi_open ? ")" : "]");
  }
};
Range closed(double lo, double hi) { return {lo, hi}; }
Range open_hi(double lo, double hi) { return {lo, hi, false, true}; }  // [lo, hi)
Range open_lo(double lo, double hi) { return {lo, hi, true, false}; }  // (lo, hi]

// "expects an integer, got string \"abc\" (e.g. model.depth = 12)"
std::string expects(const Field& f, const std::string& example, const Value& got) {
  return "expects " + f.type + ", got " + describe(got) + " (e.g. " + f.key + " = " + example + ")";
}

Field base(std::string key, std::string type, std::string allowed, std::string doc) {
  Field f;
  f.key = std::move(key);
  f.type = std::move(type);
  f.allowed = std::move(allowed);
  f.doc = std::move(doc);
  return f;
}

// Fills emit from the accessor and returns the default's TOML text (the example in type errors).
template <class Acc, class Emit>
std::string set_emit(Field& f, Acc acc, Emit emit_value) {
  f.emit = [acc, emit_value](const Config& c) { return emit_value(acc(c)); };
  return f.emit(Config{});
}

template <class Acc>
Field int_field(std::string key, Acc acc, int64_t lo, int64_t hi, std::string doc) {
  using T = MemberT<Acc>;
  static_assert(std::is_integral_v<T>);
  VIT_ASSERT(lo >= std::numeric_limits<T>::min() && hi <= std::numeric_limits<T>::max(), key);
  Field f = base(std::move(key), "an integer", "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                 std::move(doc));
  const std::string example = set_emit(f, acc, [](T x) { return std::to_string(x); });
  f.set = [acc, lo, hi, f, example](Config& c, const Value& v) -> Problem {
    const auto* i = std::get_if<int64_t>(&v.v);
    if (!i) return expects(f, example, v);
    if (*i < lo || *i > hi) return "= " + std::to_string(*i) + " is out of range " + f.allowed;
    acc(c) = static_cast<T>(*i);
    return std::nullopt;
  };
  return f;
}

// Integers are accepted where a number is expected (lr = 1 means 1.0).
std::optional<double> as_number(const Value& v) {
  if (const auto* d = std::get_if<double>(&v.v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v.v)) return static_cast<double>(*i);
  return std::nullopt;
}

template <class Acc>
Field float_field(std::string key, Acc acc, Range r, std::string doc) {
  static_assert(std::is_same_v<MemberT<Acc>, double>);
  Field f = base(std::move(key), "a number", r.text(), std::move(doc));
  const std::string example = set_emit(f, acc, [](double x) { return format_double(x); });
  f.set = [acc, r, f, example](Config& c, const Value& v) -> Problem {
    auto x = as_number(v);
    if (!x) return expects(f, example, v);
    if (!r.contains(*x)) return "= " + shortest(*x) + " is out of range " + r.text();
    acc(c) = *x;
    return std::nullopt;
  };
  return f;
}

template <class Acc>
Field bool_field(std::string key, Acc acc, std::string doc) {
  static_assert(std::is_same_v<MemberT<Acc>, bool>);
  Field f = base(std::move(key), "a boolean", "true or false", std::move(doc));
  const std::string example = set_emit(f, acc, [](bool b) { return std::string(b ? "true" : "false"); });
  f.set = [acc, f, example](Config& c, const Value& v) -> Problem {
    const auto* b = std::get_if<bool>(&v.v);
    if (!b) return expects(f, example, v);
    acc(c) = *b;
    return std::nullopt;
  };
  return f;
}

// Free-form string; `nonempty` rejects "".
template <class Acc>
Field string_field(std::string key, Acc acc, bool nonempty, std::string doc) {
  static_assert(std::is_same_v<MemberT<Acc>, std::string>);
  Field f = base(std::move(key), "a string", nonempty ? "not empty" : "", std::move(doc));
  f.string_like = true;
  const std::string example = set_emit(f, acc, [](const std::string& s) { return quote(s); });
  f.set = [acc, nonempty, f, example](Config& c, const Value& v) -> Problem {
    const auto* s = std::get_if<std::string>(&v.v);
    if (!s) return expects(f, example, v);
    if (nonempty && s->empty()) return "must not be empty (e.g. " + f.key + " = " + example + ")";
    acc(c) = *s;
    return std::nullopt;
  };
  return f;
}

// A string from a fixed set. Booleans may stand for two of the choices (the recipe writes
// pos_embed = true, fc_norm = true); with `emit_bool` those choices are written back as booleans.
struct BoolAlias {
  std::string if_true, if_false;
  bool emit_bool = false;
};

std::string choice_list(const std::vector<std::string>& choices) {
  std::string out;
  for (const auto& c : choices) out += (out.empty() ? "" : ", ") + (c.empty() ? std::string("\"\"") : c);
  return out;
}

template <class Acc>
Field choice_field(std::string key, Acc acc, std::vector<std::string> choices, std::string doc,
                   std::optional<BoolAlias> alias = std::nullopt) {
  static_assert(std::is_same_v<MemberT<Acc>, std::string>);
  Field f = base(std::move(key), alias ? "a string or boolean" : "a string", "one of: " + choice_list(choices),
                 std::move(doc));
  f.string_like = !alias;
  const std::string example = set_emit(f, acc, [alias](const std::string& s) {
    if (alias && alias->emit_bool && (s == alias->if_true || s == alias->if_false))
      return std::string(s == alias->if_true ? "true" : "false");
    return quote(s);
  });
  f.set = [acc, choices, alias, f, example](Config& c, const Value& v) -> Problem {
    std::string s;
    if (const auto* b = std::get_if<bool>(&v.v); b && alias) {
      s = *b ? alias->if_true : alias->if_false;
    } else if (const auto* str = std::get_if<std::string>(&v.v)) {
      s = *str;
    } else {
      return expects(f, example, v);
    }
    if (std::find(choices.begin(), choices.end(), s) == choices.end())
      return "= " + quote(s) + " is not one of: " + choice_list(choices);
    acc(c) = s;
    return std::nullopt;
  };
  return f;
}

// A string checked by `check` (returns the problem or nullopt).
template <class Acc, class Check>
Field checked_string_field(std::string key, Acc acc, std::string allowed, Check check, std::string doc) {
  Field f = string_field(std::move(key), acc, false, std::move(doc));
  f.allowed = std::move(allowed);
  auto plain = f.set;
  f.set = [plain, acc, check](Config& c, const Value& v) -> Problem {
    Config probe = c;
    if (auto p = plain(probe, v)) return p;
    if (auto p = check(acc(probe))) return "= " + to_toml_text(v) + " " + *p;
    acc(c) = acc(probe);
    return std::nullopt;
  };
  return f;
}

// Exactly N numbers, each in `r`; `ordered` requires a[0] <= a[1] (a min/max pair).
template <class Acc>
Field float_array_field(std::string key, Acc acc, Range r, bool ordered, std::string doc) {
  using T = MemberT<Acc>;
  constexpr size_t N = std::tuple_size_v<T>;
  Field f = base(std::move(key), "an array of " + std::to_string(N) + " numbers",
                 "each in " + r.text() + (ordered ? ", first <= second" : ""), std::move(doc));
  const std::string example = set_emit(f, acc, [](const T& a) {
    std::string out = "[";
    for (size_t i = 0; i < N; ++i) out += (i ? ", " : "") + format_double(a[i]);
    return out + "]";
  });
  f.set = [acc, r, ordered, f, example](Config& c, const Value& v) -> Problem {
    const auto* arr = std::get_if<std::vector<Value>>(&v.v);
    if (!arr || arr->size() != N) return expects(f, example, v);
    T out{};
    for (size_t i = 0; i < N; ++i) {
      auto x = as_number((*arr)[i]);
      if (!x) return expects(f, example, v);
      if (!r.contains(*x))
        return "[" + std::to_string(i) + "] = " + shortest(*x) + " is out of range " + r.text();
      out[i] = *x;
    }
    if (ordered && !(out[0] <= out[1]))
      return "= " + to_toml_text(v) + " must be ordered [min, max]";
    acc(c) = out;
    return std::nullopt;
  };
  return f;
}

// An int (square) or [H, W].
template <class Acc>
Field size2_field(std::string key, Acc acc, int64_t lo, int64_t hi, std::string doc) {
  static_assert(std::is_same_v<MemberT<Acc>, std::array<int, 2>>);
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  Field f = base(std::move(key), "an integer or [H, W]", "each in " + range, std::move(doc));
  const std::string example = set_emit(f, acc, [](const std::array<int, 2>& a) {
    return a[0] == a[1] ? std::to_string(a[0]) : "[" + std::to_string(a[0]) + ", " + std::to_string(a[1]) + "]";
  });
  f.set = [acc, lo, hi, range, f, example](Config& c, const Value& v) -> Problem {
    std::array<int64_t, 2> hw{};
    if (const auto* i = std::get_if<int64_t>(&v.v)) {
      hw = {*i, *i};
    } else if (const auto* arr = std::get_if<std::vector<Value>>(&v.v); arr && arr->size() == 2) {
      for (size_t k = 0; k < 2; ++k) {
        const auto* i = std::get_if<int64_t>(&(*arr)[k].v);
        if (!i) return expects(f, example, v);
        hw[k] = *i;
      }
    } else {
      return expects(f, example, v);
    }
    for (int64_t x : hw)
      if (x < lo || x > hi) return "= " + to_toml_text(v) + " is out of range " + range;
    acc(c) = {static_cast<int>(hw[0]), static_cast<int>(hw[1])};
    return std::nullopt;
  };
  return f;
}

// An array of distinct non-empty strings.
template <class Acc>
Field string_list_field(std::string key, Acc acc, std::string doc) {
  static_assert(std::is_same_v<MemberT<Acc>, std::vector<std::string>>);
  Field f = base(std::move(key), "an array of strings", "distinct, not empty", std::move(doc));
  const std::string example = "[\"n01443537\", \"n01629819\"]";
  set_emit(f, acc, [](const std::vector<std::string>& a) {
    std::string out = "[";
    for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + quote(a[i]);
    return out + "]";
  });
  f.set = [acc, f, example](Config& c, const Value& v) -> Problem {
    const auto* arr = std::get_if<std::vector<Value>>(&v.v);
    if (!arr) return expects(f, example, v);
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const auto& e : *arr) {
      const auto* s = std::get_if<std::string>(&e.v);
      if (!s) return expects(f, example, v);
      if (s->empty()) return "contains an empty string";
      if (!seen.insert(*s).second) return "lists " + quote(*s) + " twice";
      out.push_back(*s);
    }
    acc(c) = std::move(out);
    return std::nullopt;
  };
  return f;
}

// "" or +name / -name: the metric whose best value picks the checkpoint to resume from.
std::optional<std::string> check_metric(const std::string& s) {
  if (s.empty()) return std::nullopt;
  const bool ok = s.size() >= 2 && (s[0] == '+' || s[0] == '-') &&
                  std::all_of(s.begin() + 1, s.end(), [](char ch) {
                    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
                  });
  if (ok) return std::nullopt;
  return std::string("is not \"\" or +metric / -metric (e.g. \"-val_loss\" for the lowest validation loss, "
                     "\"+val_top1\" for the highest accuracy)");
}

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kBig = 1'000'000'000'000;  // step counts

std::vector<Field> build_fields() {
  std::vector<Field> f;
  // [run]
  f.push_back(choice_field("run.device", VIT_MEMBER(run.device), {"auto", "cuda", "cpu"},
                           "where to train: auto = CUDA if a GPU is present, else the CPU reference backend"));
  f.push_back(int_field("run.seed", VIT_MEMBER(run.seed), 0, kI64Max,
                        "every random value is a pure function of (seed, stream, index)"));
  f.push_back(string_field("run.output_dir", VIT_MEMBER(run.output_dir), true, "logs, metrics and the resolved config go here"));
  f.push_back(string_field("run.name", VIT_MEMBER(run.name), true, "the run's name in logs"));
  // [model] (timm's VisionTransformer arguments)
  f.push_back(size2_field("model.img_size", VIT_MEMBER(model.img_size), 1, 8192, "input size: an int (square) or [H, W]"));
  f.push_back(int_field("model.patch_size", VIT_MEMBER(model.patch_size), 1, 1024, "square patch side in pixels"));
  f.push_back(int_field("model.in_chans", VIT_MEMBER(model.in_chans), 1, 16, "input channels (3 RGB, 1 gray)"));
  f.push_back(int_field("model.num_classes", VIT_MEMBER(model.num_classes), 1, 10'000'000, "classifier outputs"));
  f.push_back(choice_field("model.global_pool", VIT_MEMBER(model.global_pool), {"token", "avg", "map", "none"},
                           "token = class token, avg = mean of patch tokens, map = attention pooling, none = no pooling"));
  f.push_back(int_field("model.embed_dim", VIT_MEMBER(model.embed_dim), 1, 65536, "token width"));
  f.push_back(int_field("model.depth", VIT_MEMBER(model.depth), 1, 256, "transformer blocks"));
  f.push_back(int_field("model.num_heads", VIT_MEMBER(model.num_heads), 1, 1024, "attention heads (embed_dim must divide)"));
  f.push_back(float_field("model.mlp_ratio", VIT_MEMBER(model.mlp_ratio), open_lo(0, 64), "MLP hidden width / embed_dim"));
  f.push_back(bool_field("model.qkv_bias", VIT_MEMBER(model.qkv_bias), "bias in the qkv projection"));
  f.push_back(bool_field("model.qk_norm", VIT_MEMBER(model.qk_norm), "layer norm on q and k per head"));
  f.push_back(bool_field("model.scale_attn_norm", VIT_MEMBER(model.scale_attn_norm), "layer norm before the attention output projection"));
  f.push_back(bool_field("model.scale_mlp_norm", VIT_MEMBER(model.scale_mlp_norm), "layer norm after the MLP activation"));
  f.push_back(bool_field("model.proj_bias", VIT_MEMBER(model.proj_bias), "bias in the attention output projection"));
  f.push_back(float_field("model.init_values", VIT_MEMBER(model.init_values), closed(0, 10), "layer scale init; 0 = no layer scale"));
  f.push_back(bool_field("model.class_token", VIT_MEMBER(model.class_token), "prepend a class token"));
  f.push_back(int_field("model.reg_tokens", VIT_MEMBER(model.reg_tokens), 0, 1024, "register tokens after the class token"));
  f.push_back(choice_field("model.pos_embed", VIT_MEMBER(model.pos_embed), {"learn", "none"},
                           "learned position embedding or none (true/false accepted)", BoolAlias{"learn", "none", false}));
  f.push_back(bool_field("model.no_embed_class", VIT_MEMBER(model.no_embed_class), "position embedding excludes the prefix tokens"));
  f.push_back(bool_field("model.pre_norm", VIT_MEMBER(model.pre_norm), "layer norm before the blocks"));
  f.push_back(bool_field("model.final_norm", VIT_MEMBER(model.final_norm), "layer norm after the blocks"));
  f.push_back(choice_field("model.fc_norm", VIT_MEMBER(model.fc_norm), {"auto", "true", "false"},
                           "norm after pooling instead of before; auto = only for global_pool = avg",
                           BoolAlias{"true", "false", true}));
  f.push_back(float_field("model.drop_rate", VIT_MEMBER(model.drop_rate), open_hi(0, 1), "dropout before the head"));
  f.push_back(float_field("model.pos_drop_rate", VIT_MEMBER(model.pos_drop_rate), open_hi(0, 1), "dropout after the position embedding"));
  f.push_back(float_field("model.patch_drop_rate", VIT_MEMBER(model.patch_drop_rate), open_hi(0, 1), "fraction of patch tokens dropped in training"));
  f.push_back(float_field("model.proj_drop_rate", VIT_MEMBER(model.proj_drop_rate), open_hi(0, 1), "dropout after projections and MLP"));
  f.push_back(float_field("model.attn_drop_rate", VIT_MEMBER(model.attn_drop_rate), open_hi(0, 1), "dropout on attention probabilities"));
  f.push_back(float_field("model.drop_path_rate", VIT_MEMBER(model.drop_path_rate), open_hi(0, 1), "stochastic depth, linear over blocks up to this"));
  f.push_back(choice_field("model.weight_init", VIT_MEMBER(model.weight_init), {"", "jax", "jax_nlhb", "moco", "skip"},
                           "timm's init scheme: \"\" (trunc_normal .02), jax / jax_nlhb (xavier, lecun patch conv, zero head), moco, skip (PyTorch module defaults)"));
  f.push_back(bool_field("model.init_variance_rescale", VIT_MEMBER(model.init_variance_rescale), "scale block output projections by 1/sqrt(2 * layer)"));
  f.push_back(choice_field("model.act", VIT_MEMBER(model.act), {"gelu", "gelu_tanh"}, "MLP activation"));
  f.push_back(string_field("model.init_from", VIT_MEMBER(model.init_from), false, "safetensors file in timm naming to start from (\"\" = random init)"));
  // [data]
  f.push_back(choice_field("data.format", VIT_MEMBER(data.format), {"synthetic", "folder", "tiny_imagenet", "packed"},
                           "dataset layout"));
  f.push_back(string_field("data.train_path", VIT_MEMBER(data.train_path), false, "training images (folder tree, Tiny ImageNet train/ or packed file)"));
  f.push_back(string_field("data.val_path", VIT_MEMBER(data.val_path), false, "validation images (\"\" = no validation)"));
  f.push_back(string_field("data.class_map", VIT_MEMBER(data.class_map), false, "words.txt / wnids.txt style class list (\"\" = classes from the folders)"));
  f.push_back(string_list_field("data.classes", VIT_MEMBER(data.classes), "only these classes (empty = all)"));
  f.push_back(int_field("data.num_workers", VIT_MEMBER(data.num_workers), 0, 256, "decode threads"));
  f.push_back(int_field("data.prefetch", VIT_MEMBER(data.prefetch), 1, 256, "batches decoded ahead"));
  f.push_back(int_field("data.synthetic_samples", VIT_MEMBER(data.synthetic_samples), 1, kIntMax, "synthetic: images per epoch"));
  f.push_back(bool_field("data.convert_odd_images", VIT_MEMBER(data.convert_odd_images),
                         "decode CMYK JPEGs, 16-bit PNGs and misnamed files (else skipped as bad files)"));
  f.push_back(int_field("data.synthetic_classes", VIT_MEMBER(data.synthetic_classes), 1, 1 << 20, "synthetic: number of classes"));
  f.push_back(int_field("data.synthetic_val_samples", VIT_MEMBER(data.synthetic_val_samples), 1, kIntMax,
                        "synthetic: validation images"));
  // [data.transforms]
  f.push_back(float_array_field("data.transforms.scale", VIT_MEMBER(data.transforms.scale), open_lo(0, 1), true,
                                "RandomResizedCrop area fraction [min, max]"));
  f.push_back(float_array_field("data.transforms.ratio", VIT_MEMBER(data.transforms.ratio), open_lo(0, 100), true,
                                "RandomResizedCrop aspect ratio [min, max]"));
  f.push_back(choice_field("data.transforms.interpolation", VIT_MEMBER(data.transforms.interpolation), {"bilinear", "bicubic"},
                           "resize filter"));
  f.push_back(float_field("data.transforms.hflip", VIT_MEMBER(data.transforms.hflip), closed(0, 1), "horizontal flip probability"));
  f.push_back(float_field("data.transforms.vflip", VIT_MEMBER(data.transforms.vflip), closed(0, 1), "vertical flip probability"));
  f.push_back(float_field("data.transforms.color_jitter", VIT_MEMBER(data.transforms.color_jitter), closed(0, 1),
                          "brightness = contrast = saturation jitter strength"));
  f.push_back(float_field("data.transforms.random_erasing", VIT_MEMBER(data.transforms.random_erasing), closed(0, 1),
                          "random erasing probability"));
  f.push_back(float_array_field("data.transforms.mean", VIT_MEMBER(data.transforms.mean), closed(0, 1), false,
                                "per-channel mean (images in [0, 1]); channel 0 for in_chans = 1"));
  f.push_back(float_array_field("data.transforms.std", VIT_MEMBER(data.transforms.std), open_lo(0, 10), false,
                                "per-channel std; channel 0 for in_chans = 1"));
  f.push_back(float_field("data.transforms.crop_pct", VIT_MEMBER(data.transforms.crop_pct), open_lo(0, 1),
                          "eval: resize to img_size / crop_pct, then center crop"));
  // [training]
  f.push_back(int_field("training.micro_batch_size", VIT_MEMBER(training.micro_batch_size), 1, 1 << 20, "images per rank per micro-step"));
  f.push_back(int_field("training.grad_accum", VIT_MEMBER(training.grad_accum), 1, 1 << 16, "micro-steps per optimizer step"));
  f.push_back(int_field("training.steps", VIT_MEMBER(training.steps), 0, kBig, "optimizer steps (0 = train by epochs)"));
  f.push_back(int_field("training.epochs", VIT_MEMBER(training.epochs), 0, 1'000'000, "epochs when steps = 0"));
  f.push_back(int_field("training.val_interval", VIT_MEMBER(training.val_interval), 0, kBig, "steps between validations (0 = only at the end)"));
  f.push_back(int_field("training.log_interval", VIT_MEMBER(training.log_interval), 1, kBig, "steps between log lines"));
  f.push_back(float_field("training.label_smoothing", VIT_MEMBER(training.label_smoothing), open_hi(0, 1), "cross-entropy label smoothing"));
  f.push_back(float_field("training.grad_clip", VIT_MEMBER(training.grad_clip), closed(0, 1e6), "max global gradient norm (0 = off)"));
  f.push_back(int_field("training.stop_after_steps", VIT_MEMBER(training.stop_after_steps), 0, kBig,
                        "checkpoint and exit 0 after this many steps in this run (time-sliced jobs; 0 = off)"));
  // [training.checkpoint]
  f.push_back(string_field("training.checkpoint.path", VIT_MEMBER(training.checkpoint.path), false, "checkpoint directory (\"\" = no checkpoints)"));
  f.push_back(int_field("training.checkpoint.interval", VIT_MEMBER(training.checkpoint.interval), 0, kBig,
                        "steps between checkpoints (0 = only at the end)"));
  f.push_back(int_field("training.checkpoint.keep_last", VIT_MEMBER(training.checkpoint.keep_last), 0, 1'000'000,
                        "committed checkpoints kept (0 = keep all)"));
  f.push_back(checked_string_field("training.checkpoint.resume_from_metric", VIT_MEMBER(training.checkpoint.resume_from_metric),
                                   "\"\" or +metric / -metric", check_metric,
                                   "\"\" = resume from the newest; \"+val_top1\" = highest, \"-val_loss\" = lowest"));
  f.push_back(bool_field("training.checkpoint.resume", VIT_MEMBER(training.checkpoint.resume), "resume from path if a committed checkpoint exists"));
  // [optimizer] (AdamW)
  f.push_back(float_field("optimizer.lr", VIT_MEMBER(optimizer.lr), open_lo(0, 10), "peak learning rate"));
  f.push_back(float_array_field("optimizer.betas", VIT_MEMBER(optimizer.betas), open_hi(0, 1), false, "Adam (beta1, beta2)"));
  f.push_back(float_field("optimizer.eps", VIT_MEMBER(optimizer.eps), open_lo(0, 1), "Adam epsilon"));
  f.push_back(float_field("optimizer.weight_decay", VIT_MEMBER(optimizer.weight_decay), closed(0, 10),
                          "decoupled weight decay (not on norms, biases, tokens, pos embed)"));
  // [scheduler]
  f.push_back(choice_field("scheduler.name", VIT_MEMBER(scheduler.name), {"cosine", "linear", "constant"}, "decay after warmup"));
  f.push_back(int_field("scheduler.warmup_steps", VIT_MEMBER(scheduler.warmup_steps), 0, kBig, "linear warmup from 0"));
  f.push_back(float_field("scheduler.min_lr", VIT_MEMBER(scheduler.min_lr), closed(0, 10), "final learning rate"));
  // [distributed]
  f.push_back(choice_field("distributed.strategy", VIT_MEMBER(distributed.strategy),
                           {"no_shard", "optim", "optim_grads", "optim_grads_params"},
                           "what is sharded over dp_shard (Megatron-FSDP zero_dp_strategy 0..3)"));
  f.push_back(int_field("distributed.dp_shard", VIT_MEMBER(distributed.dp_shard), 0, 1 << 20, "ranks per shard group (0 = world / dp_outer)"));
  f.push_back(int_field("distributed.dp_outer", VIT_MEMBER(distributed.dp_outer), 1, 1 << 20, "shard groups (hybrid sharding)"));
  f.push_back(choice_field("distributed.outer_strategy", VIT_MEMBER(distributed.outer_strategy), {"replicate", "shard"},
                           "outer groups replicate, or shard the optimizer state"));
  f.push_back(choice_field("distributed.grad_reduce_dtype", VIT_MEMBER(distributed.grad_reduce_dtype), {"fp32", "bf16"},
                           "gradient reduce-scatter precision"));
  f.push_back(bool_field("distributed.reshard_after_forward", VIT_MEMBER(distributed.reshard_after_forward),
                          "ZeRO-3: false keeps the gathered parameters for backward (no backward all-gathers); "
                          "the other strategies hold full parameters anyway"));
  f.push_back(int_field("distributed.comm_burst", VIT_MEMBER(distributed.comm_burst), 1, 1024,
                        "ZeRO-3 gathers k units at once, ZeRO-2/3 reduce-scatter k units at once, so the GPUs' links "
                        "idle between bursts (+k-1 gathered units, +2k-2 unit gradients per rank; same results, "
                        "measured no faster)"));
  f.push_back(choice_field("distributed.transport", VIT_MEMBER(distributed.transport), {"auto", "nccl", "copy_engine", "host_memory"},
                           "GPU shard groups of one host: collectives by the copy engines over NVLink (copy_engine: no SMs) "
                           "or through shared host memory over PCIe (host_memory: NVLink stays asleep, its power left "
                           "to the SMs), or NCCL's kernels; auto = host memory in a 2-GPU job, copy engines otherwise, "
                           "NCCL where neither works; the CPU backend (MPI) is unaffected"));
  f.push_back(float_field("distributed.timeout_s", VIT_MEMBER(distributed.timeout_s), open_lo(0, 1e6), "a stalled collective ends the job after this"));
  // [logging]
  f.push_back(string_field("logging.metrics_file", VIT_MEMBER(logging.metrics_file), true, "JSON lines, relative to run.output_dir"));
  f.push_back(float_field("logging.peak_tflops", VIT_MEMBER(logging.peak_tflops), open_lo(0, 1e6), "peak bf16 TFLOP/s for MFU"));
  return f;
}

#undef VIT_MEMBER

std::vector<std::string> build_sections(const std::vector<Field>& fs) {
  std::vector<std::string> out;
  for (const auto& f : fs) {
    const std::string s = f.section();
    if (out.empty() || out.back() != s) {
      // A section seen before and left again would make to_toml write it twice.
      VIT_ASSERT(std::find(out.begin(), out.end(), s) == out.end(), "section not contiguous: ", s);
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace

const std::vector<Field>& fields() {
  static const std::vector<Field> table = build_fields();  // immutable after first use
  return table;
}

const std::vector<std::string>& sections() {
  static const std::vector<std::string> names = build_sections(fields());
  return names;
}

const Field* find_field(std::string_view key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(std::string_view name) {
  const auto& s = sections();
  return std::find(s.begin(), s.end(), name) != s.end();
}

size_t edit_distance(std::string_view a, std::string_view b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

std::string closest_name(std::string_view unknown) {
  const size_t dot = unknown.rfind('.');
  const std::string_view leaf = dot == std::string_view::npos ? unknown : unknown.substr(dot + 1);
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  // A key whose last component matches exactly is almost surely meant, whatever its section.
  for (const auto& f : fields())
    if (dot != std::string_view::npos && f.leaf() == leaf) {
      const size_t d = edit_distance(unknown, f.key);
      if (d < best_d) best_d = d, best = f.key;
    }
  if (!best.empty()) return best;
  for (const auto& f : fields()) {
    const size_t d = edit_distance(unknown, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  for (const auto& s : sections()) {
    const size_t d = edit_distance(unknown, s);
    if (d < best_d) best_d = d, best = s;
  }
  return best;
}

std::string reference() {
  std::ostringstream out;
  out << "# Every configuration key with its default, type, allowed values and meaning.\n"
         "# Set keys in the TOML file or override them on the command line as section.key=value.\n";
  const Config defaults;
  std::string section;
  for (const auto& f : fields()) {
    if (f.section() != section) {
      section = f.section();
      out << "\n[" << section << "]\n";
    }
    out << f.leaf() << " = " << f.emit(defaults) << "  # " << f.type;
    if (!f.allowed.empty()) out << ", " << f.allowed;
    out << ": " << f.doc << "\n";
  }
  return out.str();
}

}  // namespace vit::config_schema
