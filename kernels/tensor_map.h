// Tensor maps for the copy engine (cp.async.bulk.tensor, kernels/tma.cuh), made on the host: a row-major bf16
// matrix seen as boxes of 64 columns (128 bytes) × box_rows rows in the 128-byte swizzle. Rows past `rows` read as
// zeros. The encoder is a driver function reached through the runtime's entry-point query (no libcuda link); a
// TensorMapEncoder looks it up once, so a launch that needs several maps makes one encoder for all of them.
#pragma once
#include <cuda.h>

#include "kernels/types.h"

namespace vit::gpu {

class TensorMapEncoder {
 public:
  TensorMapEncoder();  // the driver's cuTensorMapEncodeTiled (refused with a message on drivers without it)
  // base: rows × cols bf16 elements, `ld` elements between rows (16-byte multiple), base 16-byte aligned. `what`
  // names the tensor in the error if the driver refuses the map.
  CUtensorMap bf16_2d(const bf16* base, i64 rows, i64 cols, i64 ld, int box_rows, const char* what) const;

 private:
  void* encode_ = nullptr;
};

}  // namespace vit::gpu
