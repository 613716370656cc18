// The CUDA backend's training entry.
#include <cuda_runtime.h>

#include "engine/check.h"
#include "engine/run.h"

namespace vit {

int cuda_device_count() {
  int n = 0;
  // No driver / no device is an error code here, and it means "use the CPU", not a failure.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

int run_training_cuda(const Config&, const std::string&, int, int, int) {
  fail("the CUDA trainer is not built yet: use run.device=cpu");
}

}  // namespace vit
