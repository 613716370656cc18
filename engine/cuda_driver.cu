#include "engine/cuda_driver.h"

#include "engine/cuda_check.h"

namespace vit {

void* driver_entry_point(const char* name, const char* fix) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found{};
  CUDA_CHECK(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found));
  VIT_REQUIRE(found == cudaDriverEntryPointSuccess && fn != nullptr, "the CUDA driver has no ", name, ": ", fix);
  return fn;
}

}  // namespace vit
