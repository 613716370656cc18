// TensorMapEncoder (tensor_map.h).
#include "kernels/tensor_map.h"

#include "engine/cuda_check.h"
#include "engine/cuda_driver.h"

namespace vit::gpu {
namespace {
using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                            const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                            CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
}  // namespace

TensorMapEncoder::TensorMapEncoder() {
  encode_ = driver_entry_point("cuTensorMapEncodeTiled", "the attention kernels need a CUDA 12 or newer driver");
}

CUtensorMap TensorMapEncoder::bf16_2d(const bf16* base, i64 rows, i64 cols, i64 ld, int box_rows,
                                      const char* what) const {
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)ld * sizeof(bf16)};
  const cuuint32_t elem[2] = {1, 1};
  const cuuint32_t box[2] = {64, (cuuint32_t)box_rows};
  CUtensorMap map{};
  const CUresult r = reinterpret_cast<Encode>(encode_)(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16*>(base), dims, strides, box, elem,
      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  VIT_REQUIRE(r == CUDA_SUCCESS, "cuTensorMapEncodeTiled failed (", (int)r, ") for ", what, ": ", rows, " rows of ",
              cols, " bf16, pitch ", ld, ", boxes of ", box_rows, " rows");
  return map;
}

}  // namespace vit::gpu
