// The checkpoint directory protocol (crash-safe at every point):
//
//   root/step_<N>/rank_<r>.bin   one CheckpointWriter file per rank (written to .tmp, fsync'd, renamed)
//   root/step_<N>/meta.toml      rank 0: resolved config, [checkpoint] step, [metrics] key = value
//   root/step_<N>/COMMITTED      rank 0, only after every rank's file is durable (caller's barrier)
//   root/latest                  text: the newest committed step, replaced atomically after the marker
//
// Save, as the trainer drives it:
//   rank 0: begin_step(root, N)                      -> barrier
//   every rank: CheckpointWriter(rank_path(root, N, r), ...).write()   -> barrier
//   rank 0: write_meta(...); commit(root, N); prune(...)
// A step without COMMITTED does not exist as far as resume is concerned, so a crash before the marker
// leaves the previous checkpoint in charge; a crash after it leaves a complete step. Resume also
// validates the files (a disk can still lose or damage them later) and falls back to older steps.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/checkpoint_file.h"

namespace vit::ckpt {

inline constexpr const char* kCommittedName = "COMMITTED";
inline constexpr const char* kMetaName = "meta.toml";
inline constexpr const char* kLatestName = "latest";

fs::path step_dir(const fs::path& root, int64_t step);
fs::path rank_path(const fs::path& root, int64_t step, int rank);
// The step number of a "step_<N>" directory name, or nullopt for any other name.
std::optional<int64_t> parse_step_dir_name(std::string_view name);

// Section names shared by the FSDP manager, resume and export: "unit.<i>.<kind>".
std::string unit_section(int unit, std::string_view kind);

// Rank 0, before any rank writes step N: makes root/step_<N>/ exist and empty. An existing directory
// for the same step (committed by an earlier run that went further, or a crashed attempt) is first
// un-committed (marker removed and made durable), then emptied.
void begin_step(const fs::path& root, int64_t step);

// Rank 0, after every rank wrote its file: meta.toml = the resolved config text (TOML, which must not
// define the tables [checkpoint] or [metrics]) followed by [checkpoint] step = N and [metrics].
// Metric names must be bare TOML keys (letters, digits, '_' and '-'). Written atomically.
void write_meta(const fs::path& root, int64_t step, std::string_view config_toml,
                const std::map<std::string, double>& metrics);

struct StepMeta {
  int64_t step = 0;
  std::map<std::string, double> metrics;
  std::string config_toml;  // the config tables, re-serialized
};
StepMeta read_meta(const fs::path& root, int64_t step);

// Rank 0, after the barrier that follows every rank's write: checks that meta.toml and every rank file
// are present with coherent headers, writes COMMITTED atomically, then replaces root/latest.
void commit(const fs::path& root, int64_t step);

// Committed steps in increasing order (directories without a marker are ignored).
std::vector<int64_t> list_committed(const fs::path& root);
// root/latest, if present and well-formed (informational: resume trusts the markers, not this file).
std::optional<int64_t> read_latest(const fs::path& root);

// "+key" (highest is best) or "-key" (lowest is best).
struct MetricSpec {
  std::string key;
  bool higher_is_better = true;
};
MetricSpec parse_metric_spec(std::string_view spec);

enum class Verify {
  headers,  // open every rank file (header, tables and their checksum): cheap
  full,     // plus every payload checksum: reads the whole step
};

// Throws vit::Error naming the first problem: marker, meta.toml, a missing or damaged rank file,
// ranks disagreeing on world size / step / layout hash.
void validate_step(const fs::path& root, int64_t step, Verify verify);

struct ResumeChoice {
  std::optional<int64_t> step;         // nullopt: nothing usable, start fresh
  std::vector<std::string> warnings;   // one line per skipped step (the caller logs them)
};
// The newest committed step that validates ("" spec), or the best by metric ("+val_top1", "-val_loss"),
// ties going to the newer step. Steps that fail validation are skipped with a warning; steps whose
// meta.toml lacks the metric are not candidates, and if none has it the newest valid step is chosen
// with a warning.
ResumeChoice choose_resume(const fs::path& root, std::string_view metric_spec, Verify verify = Verify::full);

struct PruneResult {
  std::vector<int64_t> deleted_steps;
  std::vector<fs::path> removed_stale;   // uncommitted step dirs older than the newest commit
  std::vector<std::string> warnings;     // deletions that failed (pruning never throws for those)
};
// Keeps the newest `keep_last` committed steps (keep_last <= 0 keeps all), the best by
// `keep_best_metric` (if not empty) and always the newest; deletes the other committed steps (marker
// first, so a crash mid-delete leaves an uncommitted dir, never a committed partial one) and removes
// uncommitted step dirs older than the newest commit. Newer uncommitted dirs may be in progress: kept.
PruneResult prune(const fs::path& root, int keep_last, std::string_view keep_best_metric);

// All rank files of one committed step, opened and cross-checked (world size, step, layout hash).
// Reads a unit's elements no matter how the writing run sharded it: each rank's section
// "<unit>.<kind>" holds the elements [begin, end) given by its i64[2] section "<unit>.range".
class StepReader {
 public:
  StepReader(const fs::path& root, int64_t step);
  int64_t step() const { return step_; }
  int world_size() const { return static_cast<int>(ranks_.size()); }
  uint64_t layout_hash() const { return ranks_[0]->info().layout_hash; }
  const CheckpointReader& rank(int r) const { return *ranks_.at(static_cast<size_t>(r)); }
  const fs::path& dir() const { return dir_; }

  // The [begin, end) element range rank r holds of `unit` ("unit.3").
  std::pair<uint64_t, uint64_t> range(int r, std::string_view unit) const;
  // Elements [first, first + count) of "<unit>.<kind>" gathered from whichever ranks hold them
  // (replicas allowed); `out` holds count elements of the section's dtype.
  void read_unit(std::string_view unit, std::string_view kind, uint64_t first, uint64_t count,
                 std::span<std::byte> out) const;
  void read_unit_f32(std::string_view unit, std::string_view kind, uint64_t first, std::span<float> out) const;

 private:
  fs::path dir_;
  int64_t step_;
  std::vector<std::unique_ptr<CheckpointReader>> ranks_;
};

}  // namespace vit::ckpt
