#include "engine/checkpoint_inspect.h"

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <optional>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/checkpoint_dir.h"

namespace vit::ckpt {

namespace {

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b < 1024) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  else if (b < (1u << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else if (b < (1u << 30)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / 1048576.0);
  else std::snprintf(buf, sizeof buf, "%.2f GiB", b / 1073741824.0);
  return buf;
}

std::string hex(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// rank_<r>.bin files of a directory, by rank.
std::vector<std::pair<int, fs::path>> rank_files(const fs::path& dir) {
  std::vector<std::pair<int, fs::path>> v;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() < 10 || n.rfind("rank_", 0) != 0 || n.substr(n.size() - 4) != ".bin") continue;
    const std::string digits = n.substr(5, n.size() - 9);
    if (digits.empty() || digits.size() > 7 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    v.emplace_back(std::stoi(digits), e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> all_step_dirs(const fs::path& root) {
  std::vector<int64_t> v;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(root, ec)) {
    std::error_code ec2;
    if (auto s = parse_step_dir_name(e.path().filename().string()); s && e.is_directory(ec2)) v.push_back(*s);
  }
  std::sort(v.begin(), v.end());
  return v;
}

bool is_committed(const fs::path& root, int64_t step) {
  std::error_code ec;
  return fs::is_regular_file(step_dir(root, step) / kCommittedName, ec);
}

int inspect_file(const fs::path& p, std::ostream& out, const std::string& indent) {
  try {
    const CheckpointReader r(p);
    const FileInfo& i = r.info();
    out << indent << p.filename().string() << ": rank " << i.rank << " of " << i.world_size << ", step " << i.step
        << ", layout " << hex(i.layout_hash) << ", " << r.sections().size() << " sections, "
        << human_bytes(r.file_bytes()) << "\n";
    for (const SectionInfo& s : r.sections())
      out << indent << "  " << std::left << std::setw(28) << s.name << " " << std::setw(5) << dtype_name(s.dtype)
          << std::right << std::setw(14) << s.count << " elements  " << human_bytes(s.bytes) << "\n";
    return 0;
  } catch (const Error& e) {
    out << indent << "error: " << e.what() << "\n";
    return 1;
  }
}

int inspect_step(const fs::path& root, int64_t step, std::ostream& out) {
  int rc = 0;
  const bool committed = is_committed(root, step);
  out << "step " << step << ": " << (committed ? "committed" : "NOT committed (ignored by resume)") << "\n";
  try {
    const StepMeta m = read_meta(root, step);
    out << "  metrics:";
    if (m.metrics.empty()) out << " (none)";
    for (const auto& [k, v] : m.metrics) out << " " << k << "=" << v;
    out << "\n";
  } catch (const Error& e) {
    out << "  meta: " << e.what() << "\n";
    if (committed) rc = 1;
  }
  const auto files = rank_files(step_dir(root, step));
  if (files.empty()) out << "  no rank files\n";
  for (const auto& [r, p] : files) rc |= inspect_file(p, out, "  ");
  return committed ? rc : 0;  // problems in a dir resume ignores are shown, not failures
}

int verify_step(const fs::path& root, int64_t step, std::ostream& out) {
  try {
    validate_step(root, step, Verify::full);
    uint64_t bytes = 0;
    const auto files = rank_files(step_dir(root, step));
    for (const auto& f : files) bytes += fs::file_size(f.second);
    out << "step " << step << ": OK (" << files.size() << " rank files, " << human_bytes(bytes)
        << ", every checksum verified)\n";
    return 0;
  } catch (const std::exception& e) {
    out << "step " << step << ": FAILED: " << e.what() << "\n";
    return 1;
  }
}

// A directory is a step dir if its name says so, else a root (`dir` is normalized).
std::optional<int64_t> step_of_dir(const fs::path& dir) { return parse_step_dir_name(dir.filename().string()); }

fs::path normalized(const fs::path& p) {
  fs::path n = p.lexically_normal();
  if (n.filename().empty()) n = n.parent_path();  // trailing slash
  return n;
}

}  // namespace

int inspect_path(const fs::path& path, std::ostream& out) {
  std::error_code ec;
  const fs::path p = normalized(path);
  if (fs::is_regular_file(p, ec)) return inspect_file(p, out, "");
  if (!fs::is_directory(p, ec)) {
    out << "error: " << p.string() << " does not exist\n";
    return 1;
  }
  if (auto step = step_of_dir(p)) return inspect_step(p.parent_path(), *step, out);
  const std::vector<int64_t> steps = all_step_dirs(p);
  out << "checkpoint root " << p.string() << ": " << steps.size() << " step directories, "
      << list_committed(p).size() << " committed";
  if (auto latest = read_latest(p)) out << ", latest = " << *latest;
  out << "\n";
  if (steps.empty()) {
    out << "error: no step_<N> directories in " << p.string() << "\n";
    return 1;
  }
  int rc = 0;
  for (int64_t s : steps) rc |= inspect_step(p, s, out);
  return rc;
}

int verify_path(const fs::path& path, std::ostream& out) {
  std::error_code ec;
  const fs::path p = normalized(path);
  if (fs::is_regular_file(p, ec)) {
    try {
      const CheckpointReader r(p);
      r.verify();
      out << p.string() << ": OK (" << r.sections().size() << " sections, " << human_bytes(r.file_bytes())
          << ", every checksum verified)\n";
      return 0;
    } catch (const Error& e) {
      out << p.string() << ": FAILED: " << e.what() << "\n";
      return 1;
    }
  }
  if (!fs::is_directory(p, ec)) {
    out << "error: " << p.string() << " does not exist\n";
    return 1;
  }
  if (auto step = step_of_dir(p)) return verify_step(p.parent_path(), *step, out);
  const std::vector<int64_t> committed = list_committed(p);
  int rc = 0;
  for (int64_t s : all_step_dirs(p)) {
    if (is_committed(p, s)) rc |= verify_step(p, s, out);
    else out << "step " << s << ": not committed (an unfinished save: resume ignores it; prune removes it once a newer step is committed)\n";
  }
  if (committed.empty()) {
    out << "error: no committed checkpoint in " << p.string() << "\n";
    return 1;
  }
  return rc;
}

}  // namespace vit::ckpt
