// CUDA / cuBLASLt / NCCL call checking with file:line. Include only from .cu files (or host code that
// links the CUDA backend).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "engine/check.h"

#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    cudaError_t cuda_rc_ = (call);                                                                \
    if (cuda_rc_ != cudaSuccess)                                                                  \
      ::vit::fail(__FILE__, ":", __LINE__, ": ", #call, " failed: ", cudaGetErrorString(cuda_rc_)); \
  } while (0)

// After every kernel launch: catches bad launch configurations at the call site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                        \
  do {                                                                                            \
    cublasStatus_t cublas_rc_ = (call);                                                           \
    if (cublas_rc_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::vit::fail(__FILE__, ":", __LINE__, ": ", #call, " failed: ", cublasLtGetStatusName(cublas_rc_), \
                  " (", cublasLtGetStatusString(cublas_rc_), ")");                                \
  } while (0)

#define NCCL_CHECK(call)                                                                          \
  do {                                                                                            \
    ncclResult_t nccl_rc_ = (call);                                                               \
    if (nccl_rc_ != ncclSuccess)                                                                  \
      ::vit::fail(__FILE__, ":", __LINE__, ": ", #call, " failed: ", ncclGetErrorString(nccl_rc_)); \
  } while (0)
