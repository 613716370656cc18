// Types shared by the CPU reference kernels (vit::ref, templated on float/double) and their CUDA twins
// (vit::gpu: bf16 activations and gathered parameters, fp32 statistics, fp32 parameter gradients).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <cstdint>

namespace vit {
using bf16 = __nv_bfloat16;
using i64 = std::int64_t;
}  // namespace vit
