// CUDA driver functions without linking libcuda (CI machines have no driver): looked up through the runtime,
// plus a check macro with file:line for their CUresult. Include from CUDA code only.
#pragma once
#include <cuda.h>

#include "engine/check.h"

namespace vit {

// The driver's `name` at its CUDA 12.0 ABI; fails with a one-line error naming it and `fix` where the driver has
// none. Cast the result to the function's type.
void* driver_entry_point(const char* name, const char* fix);

}  // namespace vit

#define CU_CHECK(call)                                                                                       \
  do {                                                                                                       \
    const CUresult cu_rc_ = (call);                                                                          \
    if (cu_rc_ != CUDA_SUCCESS) ::vit::fail(__FILE__, ":", __LINE__, ": ", #call, " failed (CUresult ", (int)cu_rc_, ")"); \
  } while (0)
