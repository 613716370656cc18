#include "engine/checkpoint_dir.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "engine/check.h"

namespace vit::ckpt {

fs::path step_dir(const fs::path& root, int64_t step) { return root / ("step_" + std::to_string(step)); }

fs::path rank_path(const fs::path& root, int64_t step, int rank) {
  return step_dir(root, step) / ("rank_" + std::to_string(rank) + ".bin");
}

std::optional<int64_t> parse_step_dir_name(std::string_view name) {
  constexpr std::string_view prefix = "step_";
  if (name.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view digits = name.substr(prefix.size());
  // No sign, no leading zeros (step_007 would not be step_dir(7)), at most 18 digits (fits int64).
  if (digits.empty() || digits.size() > 18 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  int64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string unit_section(int unit, std::string_view kind) {
  return "unit." + std::to_string(unit) + "." + std::string(kind);
}

namespace {

std::string where(const fs::path& p) { return "checkpoint " + p.string() + ": "; }

toml::table parse_toml(const std::string& text, const fs::path& origin) {
  try {
    return toml::parse(text, origin.string());
  } catch (const toml::parse_error& e) {
    fail(where(origin), "not valid TOML (line ", e.source().begin.line, ": ", e.description(), ")");
  }
}

bool bare_key(std::string_view k) {
  return !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

struct Marker {
  int64_t step = 0;
  int world_size = 0;
  uint64_t layout_hash = 0;
};

Marker read_marker(const fs::path& root, int64_t step) {
  const fs::path p = step_dir(root, step) / kCommittedName;
  std::error_code ec;
  VIT_REQUIRE(fs::exists(p, ec), where(step_dir(root, step)), "not committed (no ", kCommittedName,
              " marker: the save did not finish)");
  const toml::table t = parse_toml(io::read_small_file(p, 4096), p);
  const std::optional<int64_t> s = t["step"].value<int64_t>();
  const std::optional<int64_t> w = t["world_size"].value<int64_t>();
  const std::optional<std::string> h = t["layout_hash"].value<std::string>();
  VIT_REQUIRE(s && w && h && *w >= 1 && *w <= kMaxWorldSize && h->size() == 18 && h->rfind("0x", 0) == 0, where(p),
              "malformed commit marker; delete ", step_dir(root, step).string(), " or resume from another step");
  VIT_REQUIRE(*s == step, where(p), "marker says step ", *s, " in directory of step ", step, "; delete ",
              step_dir(root, step).string(), " or resume from another step");
  Marker m;
  m.step = *s;
  m.world_size = static_cast<int>(*w);
  m.layout_hash = std::stoull(h->substr(2), nullptr, 16);
  return m;
}

// Opens rank_0 .. rank_{W-1} and checks that they agree with each other and with `step`. W and the
// layout hash come from the marker when there is one, else from rank 0's header.
std::vector<std::unique_ptr<CheckpointReader>> open_ranks(const fs::path& root, int64_t step,
                                                          std::optional<Marker> marker) {
  std::vector<std::unique_ptr<CheckpointReader>> ranks;
  const fs::path d = step_dir(root, step);
  auto open = [&](int r) {
    const fs::path p = rank_path(root, step, r);
    std::error_code ec;
    VIT_REQUIRE(fs::exists(p, ec), where(d), "rank file ", p.filename().string(),
                " is missing (a rank did not finish writing); delete ", d.string(), " or resume from another step");
    return std::make_unique<CheckpointReader>(p);
  };
  ranks.push_back(open(0));
  const int world = marker ? marker->world_size : ranks[0]->info().world_size;
  const uint64_t hash = marker ? marker->layout_hash : ranks[0]->info().layout_hash;
  for (int r = 1; r < world; ++r) ranks.push_back(open(r));
  for (int r = 0; r < world; ++r) {
    const FileInfo& i = ranks[r]->info();
    VIT_REQUIRE(i.rank == r && i.world_size == world && i.step == step && i.layout_hash == hash, ranks[r]->where(),
                "header says rank ", i.rank, " of ", i.world_size, ", step ", i.step, ", layout ", hex64(i.layout_hash),
                "; the step expects rank ", r, " of ", world, ", step ", step, ", layout ", hex64(hash),
                " (files from different saves mixed); delete ", d.string(), " or resume from another step");
  }
  return ranks;
}

std::optional<double> metric_of(const StepMeta& m, const MetricSpec& spec) {
  auto it = m.metrics.find(spec.key);
  if (it == m.metrics.end() || std::isnan(it->second)) return std::nullopt;
  return it->second;
}

// Steps ordered best first by metric (ties: newer first); steps without the metric are left out.
// Steps whose meta.toml cannot be read are left out too (resume validation reports them).
std::vector<int64_t> rank_by_metric(const fs::path& root, const std::vector<int64_t>& steps, const MetricSpec& spec) {
  std::vector<std::pair<double, int64_t>> scored;
  for (int64_t s : steps) {
    try {
      if (auto v = metric_of(read_meta(root, s), spec)) scored.emplace_back(spec.higher_is_better ? *v : -*v, s);
    } catch (const Error&) {
    }
  }
  std::sort(scored.begin(), scored.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second > b.second; });
  std::vector<int64_t> out;
  for (auto& [v, s] : scored) out.push_back(s);
  return out;
}

void remove_step_dir(const fs::path& root, int64_t step, std::vector<std::string>& warnings) {
  const fs::path d = step_dir(root, step);
  try {
    // Un-commit durably first: a crash during the recursive delete then leaves a dir resume ignores.
    const fs::path marker = d / kCommittedName;
    std::error_code ec;
    if (fs::exists(marker, ec)) {
      fs::remove(marker);
      io::sync_dir(d);
    }
    fs::remove_all(d);
    io::sync_dir(root);
  } catch (const std::exception& e) {
    warnings.push_back("could not delete " + d.string() + ": " + e.what());
  }
}

}  // namespace

void begin_step(const fs::path& root, int64_t step) {
  VIT_REQUIRE(step >= 0, where(root), "negative step ", step);
  const fs::path d = step_dir(root, step);
  try {
    fs::create_directories(root);
    if (fs::exists(d)) {
      const fs::path marker = d / kCommittedName;
      if (fs::exists(marker)) {
        fs::remove(marker);
        io::sync_dir(d);
      }
      for (const fs::directory_entry& e : fs::directory_iterator(d)) fs::remove_all(e.path());
    } else {
      fs::create_directory(d);
    }
  } catch (const fs::filesystem_error& e) {
    fail(where(d), "cannot prepare the step directory: ", e.code().message(),
         " (check training.checkpoint.path is writable)");
  }
  io::sync_dir(d);
  io::sync_dir(root);
}

void write_meta(const fs::path& root, int64_t step, std::string_view config_toml,
                const std::map<std::string, double>& metrics) {
  const fs::path p = step_dir(root, step) / kMetaName;
  const toml::table config = parse_toml(std::string(config_toml), p.string() + " (config text)");
  VIT_REQUIRE(!config.contains("checkpoint") && !config.contains("metrics"), where(p),
              "the config text defines a top-level 'checkpoint' or 'metrics' table, which meta.toml reserves");
  toml::table metrics_table;
  for (const auto& [k, v] : metrics) {
    VIT_REQUIRE(bare_key(k), where(p), "metric name '", k, "' must be letters, digits, '_' or '-'");
    metrics_table.insert(k, v);
  }
  toml::table tail;
  tail.insert("checkpoint", toml::table{{"step", step}});
  tail.insert("metrics", std::move(metrics_table));
  std::ostringstream text;
  text << config_toml;
  if (!config_toml.empty() && config_toml.back() != '\n') text << '\n';
  text << "\n# ---- written with the checkpoint ----\n" << tail << '\n';
  const std::string s = text.str();
  parse_toml(s, p);  // what we write must read back
  io::write_file_atomic(p, s);
}

StepMeta read_meta(const fs::path& root, int64_t step) {
  const fs::path p = step_dir(root, step) / kMetaName;
  std::error_code ec;
  VIT_REQUIRE(fs::exists(p, ec), where(step_dir(root, step)), "no ", kMetaName, "; delete ",
              step_dir(root, step).string(), " or resume from another step");
  toml::table t = parse_toml(io::read_small_file(p), p);
  StepMeta m;
  const std::optional<int64_t> s = t["checkpoint"]["step"].value<int64_t>();
  VIT_REQUIRE(s, where(p), "lacks [checkpoint] step; delete ", step_dir(root, step).string(),
              " or resume from another step");
  VIT_REQUIRE(*s == step, where(p), "says step ", *s, " in the directory of step ", step, "; delete ",
              step_dir(root, step).string(), " or resume from another step");
  m.step = *s;
  if (const toml::table* mt = t["metrics"].as_table()) {
    for (const auto& [k, v] : *mt) {
      const std::optional<double> x = v.value<double>();
      VIT_REQUIRE(x, where(p), "metric '", k.str(), "' is not a number");
      m.metrics[std::string(k.str())] = *x;
    }
  }
  t.erase("checkpoint");
  t.erase("metrics");
  std::ostringstream os;
  os << t;
  m.config_toml = os.str();
  return m;
}

void commit(const fs::path& root, int64_t step) {
  const fs::path d = step_dir(root, step);
  read_meta(root, step);
  const auto ranks = open_ranks(root, step, std::nullopt);
  std::ostringstream marker;
  marker << "# every rank's file was durable when this was written\n"
         << "step = " << step << "\nworld_size = " << ranks.size() << "\nlayout_hash = \""
         << hex64(ranks[0]->info().layout_hash) << "\"\n";
  io::write_file_atomic(d / kCommittedName, marker.str());
  io::write_file_atomic(root / kLatestName, std::to_string(step) + "\n");
}

std::vector<int64_t> list_committed(const fs::path& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return steps;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::optional<int64_t> s = parse_step_dir_name(e.path().filename().string());
    std::error_code ec2;
    if (s && e.is_directory(ec2) && fs::is_regular_file(e.path() / kCommittedName, ec2)) steps.push_back(*s);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

std::optional<int64_t> read_latest(const fs::path& root) {
  std::error_code ec;
  if (!fs::is_regular_file(root / kLatestName, ec)) return std::nullopt;
  try {
    std::string s = io::read_small_file(root / kLatestName, 64);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return parse_step_dir_name("step_" + s);
  } catch (const Error&) {
    return std::nullopt;
  }
}

MetricSpec parse_metric_spec(std::string_view spec) {
  VIT_REQUIRE(spec.size() >= 2 && (spec[0] == '+' || spec[0] == '-') && bare_key(spec.substr(1)),
              "metric spec '", spec, "' must be '+name' (highest is best) or '-name' (lowest is best), e.g. "
              "'+val_top1' or '-val_loss'");
  return {std::string(spec.substr(1)), spec[0] == '+'};
}

void validate_step(const fs::path& root, int64_t step, Verify verify) {
  const Marker m = read_marker(root, step);
  read_meta(root, step);
  const auto ranks = open_ranks(root, step, m);
  if (verify == Verify::full)
    for (const auto& r : ranks) r->verify();
}

ResumeChoice choose_resume(const fs::path& root, std::string_view metric_spec, Verify verify) {
  ResumeChoice c;
  const std::vector<int64_t> steps = list_committed(root);
  std::vector<int64_t> order;
  std::set<int64_t> tried;
  if (!metric_spec.empty()) {
    const MetricSpec spec = parse_metric_spec(metric_spec);
    order = rank_by_metric(root, steps, spec);
    if (order.empty() && !steps.empty())
      c.warnings.push_back("no committed checkpoint in " + root.string() + " records metric '" + spec.key +
                           "'; resuming from the newest valid one instead");
  }
  auto try_step = [&](int64_t s) {
    if (!tried.insert(s).second) return false;
    try {
      validate_step(root, s, verify);
      return true;
    } catch (const Error& e) {
      c.warnings.push_back("skipping step " + std::to_string(s) + ": " + e.what());
      return false;
    }
  };
  for (int64_t s : order)
    if (try_step(s)) {
      c.step = s;
      return c;
    }
  if (!order.empty() && !steps.empty())
    c.warnings.push_back("no checkpoint recording the metric is valid; resuming from the newest valid one instead");
  for (auto it = steps.rbegin(); it != steps.rend(); ++it)
    if (try_step(*it)) {
      c.step = *it;
      return c;
    }
  return c;
}

PruneResult prune(const fs::path& root, int keep_last, std::string_view keep_best_metric) {
  PruneResult r;
  const std::vector<int64_t> steps = list_committed(root);
  if (steps.empty()) return r;
  std::set<int64_t> keep{steps.back()};
  const size_t n_last = keep_last <= 0 ? steps.size() : std::min<size_t>(steps.size(), keep_last);
  keep.insert(steps.end() - n_last, steps.end());
  if (!keep_best_metric.empty()) {
    const std::vector<int64_t> best = rank_by_metric(root, steps, parse_metric_spec(keep_best_metric));
    if (!best.empty()) keep.insert(best.front());
  }
  for (int64_t s : steps)
    if (!keep.count(s)) {
      const size_t before = r.warnings.size();
      remove_step_dir(root, s, r.warnings);
      if (r.warnings.size() == before) r.deleted_steps.push_back(s);
    }
  // Uncommitted dirs older than the newest commit are leftovers of crashed saves.
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    const std::optional<int64_t> s = parse_step_dir_name(e.path().filename().string());
    std::error_code ec2;
    if (!s || *s >= steps.back() || !e.is_directory(ec2) || fs::exists(e.path() / kCommittedName, ec2)) continue;
    const size_t before = r.warnings.size();
    remove_step_dir(root, *s, r.warnings);
    if (r.warnings.size() == before) r.removed_stale.push_back(e.path());
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// StepReader

StepReader::StepReader(const fs::path& root, int64_t step) : dir_(step_dir(root, step)), step_(step) {
  ranks_ = open_ranks(root, step, read_marker(root, step));
}

std::pair<uint64_t, uint64_t> StepReader::range(int r, std::string_view unit) const {
  const CheckpointReader& f = rank(r);
  const std::string name = std::string(unit) + ".range";
  const std::vector<int64_t> v = f.read_vector<int64_t>(name);
  VIT_REQUIRE(v.size() == 2 && v[0] >= 0 && v[0] <= v[1], f.where(), "section '", name,
              "' is not an element range [begin, end); ", f.damaged_fix());
  return {static_cast<uint64_t>(v[0]), static_cast<uint64_t>(v[1])};
}

void StepReader::read_unit(std::string_view unit, std::string_view kind, uint64_t first, uint64_t count,
                           std::span<std::byte> out) const {
  const std::string name = std::string(unit) + "." + std::string(kind);
  struct Piece {
    uint64_t begin, end;
    int rank;
  };
  std::vector<Piece> pieces;
  const DType dtype = rank(0).section(name).dtype;
  for (int r = 0; r < world_size(); ++r) {
    const auto [b, e] = range(r, unit);
    const SectionInfo& s = rank(r).section(name);
    VIT_REQUIRE(s.dtype == dtype && s.count == e - b, rank(r).where(), "section '", name, "' holds ", s.count, " ",
                dtype_name(s.dtype), " elements but its range [", b, ", ", e, ") and rank 0's dtype ",
                dtype_name(dtype), " say otherwise; ", rank(r).damaged_fix());
    if (e > b) pieces.push_back({b, e, r});
  }
  const uint64_t es = dtype_size(dtype);
  VIT_REQUIRE(out.size() == count * es, where(dir_), "destination for ", count, " elements of '", name, "' holds ",
              out.size(), " bytes, expected ", count * es);
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
  // Greedy cover of [first, first + count): at each position take the piece reaching furthest.
  uint64_t pos = first;
  const uint64_t stop = first + count;
  size_t i = 0;
  const Piece* best = nullptr;
  while (pos < stop) {
    for (; i < pieces.size() && pieces[i].begin <= pos; ++i)
      if (!best || pieces[i].end > best->end) best = &pieces[i];
    VIT_REQUIRE(best && best->end > pos, where(dir_), "elements [", pos, ", ", stop, ") of '", name,
                "' are held by no rank (the checkpoint was cut from a different model layout: resume from a "
                "matching checkpoint or start fresh)");
    const uint64_t hi = std::min(best->end, stop);
    rank(best->rank).read_range(name, pos - best->begin, hi - pos, out.subspan((pos - first) * es, (hi - pos) * es));
    pos = hi;
  }
}

void StepReader::read_unit_f32(std::string_view unit, std::string_view kind, uint64_t first,
                               std::span<float> out) const {
  const std::string name = std::string(unit) + "." + std::string(kind);
  VIT_REQUIRE(rank(0).section(name).dtype == DType::f32, rank(0).where(), "section '", name, "' holds ",
              dtype_name(rank(0).section(name).dtype), ", expected f32");
  read_unit(unit, kind, first, out.size(), std::as_writable_bytes(out));
}

}  // namespace vit::ckpt
