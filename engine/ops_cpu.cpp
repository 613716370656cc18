#include <cstdio>
#include <unistd.h>

#include "engine/ops_cpu.h"

namespace vit {

namespace {
double rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return (double)resident * (double)sysconf(_SC_PAGESIZE);
}
}  // namespace

template <>
double CpuOps<float>::memory_in_use() const { return rss_bytes(); }
template <>
double CpuOps<double>::memory_in_use() const { return rss_bytes(); }

}  // namespace vit
