// Config loading: toml++ parses the file, every entry and every key=value override goes through the
// schema (engine/config_schema.h), then the cross-field checks run on the resolved config.
#include "engine/config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>
#include <system_error>
#include <toml++/toml.h>

#include "engine/check.h"
#include "engine/config_schema.h"

namespace vit {
namespace {

namespace cs = config_schema;

// ---- toml++ -> schema values ------------------------------------------------------------------------

std::string node_text(const toml::node& n) {
  std::ostringstream s;
  n.visit([&](const auto& x) { s << x; });
  return s.str();
}

cs::Value to_value(const toml::node& n) {
  if (const auto* b = n.as_boolean()) return {b->get()};
  if (const auto* i = n.as_integer()) return {i->get()};
  if (const auto* d = n.as_floating_point()) return {d->get()};
  if (const auto* s = n.as_string()) return {s->get()};
  if (const auto* a = n.as_array()) {
    std::vector<cs::Value> out;
    for (const auto& e : *a) out.push_back(to_value(e));
    return {std::move(out)};
  }
  const char* kind = n.is_table() ? "table" : n.is_date() ? "date" : n.is_time() ? "time" : "date-time";
  return {cs::Value::Other{kind, node_text(n)}};
}

// "configs/x.toml:12:5" (or just the origin when toml++ has no position).
std::string where(const std::string& origin, const toml::source_region& src) {
  if (src.begin.line == 0) return origin;
  return origin + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
}

// ---- who set what (for messages about several keys) -------------------------------------------------

class Sources {
 public:
  explicit Sources(std::string origin) : origin_(std::move(origin)) {}
  void record(const std::string& key, std::string where) { set_[key] = {next_++, std::move(where)}; }
  // Where the most recent of `keys` was set; the file when all are defaults.
  std::string where(std::initializer_list<const char*> keys) const {
    const std::pair<int, std::string>* last = nullptr;
    for (const char* k : keys)
      if (auto it = set_.find(k); it != set_.end() && (!last || it->second.first > last->first)) last = &it->second;
    return last ? last->second : origin_;
  }

 private:
  std::string origin_;
  std::map<std::string, std::pair<int, std::string>> set_;
  int next_ = 0;
};

// ---- applying one value -----------------------------------------------------------------------------

[[noreturn]] void fail_unknown(const std::string& where, const std::string& key, bool in_override) {
  if (cs::is_section(key)) {
    // A section given a value (model = 3, or an override model=3).
    std::string first;
    for (const auto& f : cs::fields())
      if (f.section() == key) { first = f.leaf(); break; }
    if (in_override) fail(where, ": '", key, "' is a section, not a key: set one of its keys, e.g. ", key, ".", first, "=...");
    fail(where, ": '", key, "' is a section, not a key: set its keys, e.g. [", key, "] ", first, " = ...");
  }
  fail(where, ": unknown key '", key, "' (did you mean '", cs::closest_name(key), "'?)");
}

void apply(Config& c, const cs::Field& f, const cs::Value& v, const std::string& where) {
  if (auto problem = f.set(c, v)) {
    const char* sep = problem->front() == '[' ? "" : " ";  // "optimizer.betas[1] = ..." vs "model.depth = ..."
    fail(where, ": ", f.key, sep, *problem);
  }
}

// ---- the file ---------------------------------------------------------------------------------------

struct Entry {
  std::string key;
  const toml::node* node;
  toml::source_region at;  // the key's position (the value's when toml++ has none for the key)
};

// Flattens the table into dotted keys. Known sections and non-empty unknown tables are walked (so
// [modle] depth = 3 is reported as 'modle.depth', did you mean 'model.depth'); anything else is a leaf.
void collect(const toml::table& t, const std::string& prefix, std::vector<Entry>& out) {
  for (const auto& [k, n] : t) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const auto* sub = n.as_table();
    if (sub && !cs::find_field(key) && (cs::is_section(key) || !sub->empty())) {
      collect(*sub, key, out);
    } else {
      out.push_back({key, &n, k.source().begin.line ? k.source() : n.source()});
    }
  }
}

void apply_file(Config& c, const std::string& text, const std::string& origin, Sources& sources) {
  toml::table root;
  try {
    root = toml::parse(std::string_view(text), std::string_view(origin));
  } catch (const toml::parse_error& e) {
    fail(where(origin, e.source()), ": malformed TOML: ", e.description());
  }
  std::vector<Entry> entries;
  collect(root, "", entries);
  // toml++ tables are sorted by key: report problems in file order instead.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    const auto& x = a.at.begin;
    const auto& y = b.at.begin;
    return std::tie(x.line, x.column) < std::tie(y.line, y.column);
  });
  for (const auto& e : entries) {
    const std::string at = where(origin, e.at);
    const cs::Field* f = cs::find_field(e.key);
    if (!f) {
      if (const auto* t = e.node->as_table(); t && t->empty() && !cs::is_section(e.key))
        fail(at, ": unknown section '", e.key, "' (did you mean '", cs::closest_name(e.key), "'?)");
      fail_unknown(at, e.key, false);
    }
    apply(c, *f, to_value(*e.node), at);
    sources.record(e.key, at);
  }
}

// ---- overrides --------------------------------------------------------------------------------------

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(" \t") - b + 1));
}

bool starts_structured(const std::string& raw) {
  return !raw.empty() && (raw[0] == '[' || raw[0] == '{' || raw[0] == '"' || raw[0] == '\'');
}

// The value of key=value as TOML; a bare word (run.device=cpu) is a string.
cs::Value parse_override_value(const std::string& raw, const cs::Field& f, const std::string& at) {
  toml::table t;
  try {
    const std::string doc = "v = " + raw;
    t = toml::parse(std::string_view(doc), std::string_view("override"));
  } catch (const toml::parse_error& e) {
    if (starts_structured(raw)) {
      fail(at, ": cannot parse the value ", raw, " as TOML: ", e.description(),
           raw[0] == '[' && std::any_of(raw.begin(), raw.end(), [](unsigned char ch) { return std::isalpha(ch); })
               ? " (strings inside arrays need quotes: key='[\"a\", \"b\"]')"
               : "");
    }
    return {raw};
  }
  const toml::node* n = t.get("v");
  if (t.size() != 1 || !n) fail(at, ": the value must be a single TOML value, e.g. ", f.key, "=", f.emit(Config{}));
  cs::Value v = to_value(*n);
  // run.name=42 or output_dir=2024-01-01 mean the text as written.
  if (f.string_like && !std::holds_alternative<std::string>(v.v) && !starts_structured(raw)) return {raw};
  return v;
}

void apply_override(Config& c, const std::string& ov, Sources& sources) {
  const std::string at = "override '" + ov + "'";
  const auto eq = ov.find('=');
  if (eq == std::string::npos) {
    const cs::Field* f = cs::find_field(trim(ov));
    fail(at, " needs the form key=value (e.g. ", f ? f->key + "=" + f->emit(Config{}) : std::string("model.depth=12"), ")");
  }
  const std::string key = trim(std::string_view(ov).substr(0, eq));
  if (key.empty()) fail(at, " has no key before '=': write key=value (e.g. model.depth=12)");
  const cs::Field* f = cs::find_field(key);
  if (!f) fail_unknown(at, key, true);
  apply(c, *f, parse_override_value(trim(std::string_view(ov).substr(eq + 1)), *f, at), at);
  sources.record(key, at);
}

// ---- cross-field checks -----------------------------------------------------------------------------

// The divisor of n nearest to want (a num_heads that works).
int nearest_divisor(int n, int want) {
  int best = 1;
  for (int d = 1; d <= n; ++d)
    if (n % d == 0 && std::abs(d - want) < std::abs(best - want)) best = d;
  return best;
}

std::string size_text(const std::array<int, 2>& s) {
  if (s[0] == s[1]) return std::to_string(s[0]);
  std::string out = "[";  // appended piecewise: GCC 12 warns (-Wrestrict, falsely) on "[" + to_string(...)
  out += std::to_string(s[0]);
  out += ", ";
  out += std::to_string(s[1]);
  return out + "]";
}

// Only what the model, trainer or data loader cannot run with; model checks match timm's own asserts
// (embed_dim % num_heads, a class token for token pooling) plus the patch grid tiling the image.
// dp_shard * dp_outer is checked against the world size at start-up, not here.
void check_consistency(const Config& c, const Sources& src) {
  const auto& m = c.model;
  if (m.embed_dim % m.num_heads != 0)
    fail(src.where({"model.embed_dim", "model.num_heads"}), ": model.embed_dim = ", m.embed_dim,
         " is not divisible by model.num_heads = ", m.num_heads, " (e.g. model.num_heads = ",
         nearest_divisor(m.embed_dim, m.num_heads), ")");
  if (m.img_size[0] % m.patch_size != 0 || m.img_size[1] % m.patch_size != 0) {
    std::array<int, 2> fit{};  // each side rounded down to whole patches (at least one)
    for (int k = 0; k < 2; ++k) fit[k] = std::max(m.patch_size, m.img_size[k] / m.patch_size * m.patch_size);
    fail(src.where({"model.img_size", "model.patch_size"}), ": model.img_size = ", size_text(m.img_size),
         " is not divisible by model.patch_size = ", m.patch_size, " (the patches must tile the image; e.g. ",
         "model.img_size = ", size_text(fit), ")");
  }
  if (m.global_pool == "token" && !m.class_token)
    fail(src.where({"model.global_pool", "model.class_token"}),
         ": model.global_pool = \"token\" needs model.class_token = true (or use global_pool = \"avg\" or \"map\")");

  const auto& t = c.training;
  if (t.steps == 0 && t.epochs == 0)
    fail(src.where({"training.steps", "training.epochs"}),
         ": training.steps and training.epochs are both 0: set one (e.g. training.steps = 1000)");
  if (t.steps > 0 && t.epochs > 0)
    fail(src.where({"training.steps", "training.epochs"}), ": training.steps = ", t.steps, " and training.epochs = ",
         t.epochs, " are both set: set training.steps = 0 to train by epochs, or training.epochs = 0");
  if (t.steps > 0 && c.scheduler.warmup_steps > t.steps)
    fail(src.where({"scheduler.warmup_steps", "training.steps"}), ": scheduler.warmup_steps = ",
         c.scheduler.warmup_steps, " exceeds training.steps = ", t.steps, " (the peak lr would never be reached)");
  if (c.scheduler.min_lr > c.optimizer.lr)
    fail(src.where({"scheduler.min_lr", "optimizer.lr"}), ": scheduler.min_lr = ", cs::format_double(c.scheduler.min_lr),
         " exceeds optimizer.lr = ", cs::format_double(c.optimizer.lr));

  if (c.data.format != "synthetic" && c.data.train_path.empty())
    fail(src.where({"data.format", "data.train_path"}), ": data.format = \"", c.data.format,
         "\" needs data.train_path (the training images), or use data.format = \"synthetic\"");
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------

Config parse_config(const std::string& toml_text, const std::string& origin, const std::vector<std::string>& overrides) {
  Config c;
  Sources sources(origin);
  apply_file(c, toml_text, origin, sources);
  for (const auto& ov : overrides) apply_override(c, ov, sources);
  check_consistency(c, sources);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail("cannot open config '", path, "': ", std::make_error_code(std::errc::is_a_directory).message());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open config '", path, "': ", std::generic_category().message(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read config '", path, "': ", std::generic_category().message(errno));
  return parse_config(text.str(), path, overrides);
}

std::string to_toml(const Config& c) {
  std::string out, section;
  for (const auto& f : cs::fields()) {
    if (f.section() != section) {
      section = f.section();
      out += (out.empty() ? "[" : "\n[") + section + "]\n";
    }
    out += f.leaf() + " = " + f.emit(c) + "\n";
  }
  return out;
}

uint64_t config_hash(const Config& c) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char ch : to_toml(c)) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace vit
