// The reports of tools/ckpt_tool, as library functions so the CPU tests drive them. Each takes a
// checkpoint root (holding step_<N>/ directories), one step directory or one rank file, writes a
// human-readable report to `out` and returns the process exit code (0 = fine, 1 = a problem found).
#pragma once
#include <filesystem>
#include <ostream>

namespace vit::ckpt {

// Steps (committed or not), latest, metrics, and per rank its sections and sizes. Reads no payload.
int inspect_path(const std::filesystem::path& path, std::ostream& out);

// Every checksum of every committed step (or of the one step / file given). Uncommitted step dirs
// under a root are listed but are not failures (resume ignores them); an explicitly named uncommitted
// step dir, a root without any committed step, or any damaged file is.
int verify_path(const std::filesystem::path& path, std::ostream& out);

}  // namespace vit::ckpt
