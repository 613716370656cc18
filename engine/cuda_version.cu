// Anchors the CUDA library so it is never empty; reports the runtime version for the start-up banner.
#include <cuda_runtime.h>
namespace vit::gpu {
int cuda_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}
}  // namespace vit::gpu
