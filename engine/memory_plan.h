// Start-up memory plan: every buffer the step needs is sized from the config once, carved out of one
// arena, and printed as a table. Nothing is allocated inside the step loop.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace vit {

class MemoryPlan {
 public:
  struct Entry {
    std::string name;
    size_t bytes;
    size_t count;      // how many buffers of this size (e.g. one per block)
    bool per_sample;   // scales with the micro-batch (for "largest batch that fits")
  };
  // Reserves `count` buffers of `bytes` each; returns the offset of the first (256-byte aligned).
  size_t add(const std::string& name, size_t bytes, size_t count = 1, bool per_sample = true) {
    bytes = (bytes + 255) / 256 * 256;
    size_t off = total_;
    total_ += bytes * count;
    entries_.push_back({name, bytes, count, per_sample});
    return off;
  }
  size_t total() const { return total_; }
  size_t per_sample_total() const {
    size_t s = 0;
    for (const auto& e : entries_)
      if (e.per_sample) s += e.bytes * e.count;
    return s;
  }
  const std::vector<Entry>& entries() const { return entries_; }
  std::string table(const std::string& title) const {
    std::string out = title + "\n";
    char line[256];
    for (const auto& e : entries_) {
      std::snprintf(line, sizeof line, "  %-28s %4zu x %10.2f MiB = %10.2f MiB\n", e.name.c_str(), e.count,
                    e.bytes / 1048576.0, e.bytes * e.count / 1048576.0);
      out += line;
    }
    std::snprintf(line, sizeof line, "  %-28s %30.2f MiB\n", "total", total_ / 1048576.0);
    out += line;
    return out;
  }

 private:
  std::vector<Entry> entries_;
  size_t total_ = 0;
};

}  // namespace vit
