// Device helpers shared by the memory-bound CUDA kernels (layernorm, gelu, elementwise, embed, pool,
// patch_embed): 16-byte loads and stores of 8 bf16 as floats, warp sums, and launch sizing.
// Internal to kernels/*.cu.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda_check.h"
#include "kernels/types.h"

namespace vit::gpu::detail {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Multiprocessors of the current device: grids of persistent kernels are sized from it (queried per call:
// no cached global state; the query is a cheap host call and legal during stream capture).
inline int sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

// Blocks for one item per thread, in a 1-D grid (kernels loop with a grid stride, so a cap is safe).
inline unsigned grid_for(i64 items, int threads) {
  const i64 b = (items + threads - 1) / threads;
  return (unsigned)(b < 1 ? 1 : b > 0x7fffffff ? 0x7fffffff : b);
}

// bf16 → float is a 16-bit shift of the bits.
__device__ __forceinline__ float lo_f(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi_f(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

__device__ __forceinline__ void unpack8(const uint4& v, float* f) {
  f[0] = lo_f(v.x), f[1] = hi_f(v.x), f[2] = lo_f(v.y), f[3] = hi_f(v.y);
  f[4] = lo_f(v.z), f[5] = hi_f(v.z), f[6] = lo_f(v.w), f[7] = hi_f(v.w);
}
__device__ __forceinline__ uint32_t pack2(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);  // .x = a in the low half
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint4 pack8(const float* f) {
  return make_uint4(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]), pack2(f[6], f[7]));
}

// V consecutive bf16 as floats: V = 8 is one 16-byte access (p must be 16-byte aligned), V = 1 scalar.
template <int V>
__device__ __forceinline__ void load_bf16(const bf16* p, float* f) {
  if constexpr (V == 8) {
    unpack8(*reinterpret_cast<const uint4*>(p), f);
  } else {
    static_assert(V == 1);
    f[0] = __bfloat162float(*p);
  }
}
template <int V>
__device__ __forceinline__ void store_bf16(bf16* p, const float* f) {
  if constexpr (V == 8) {
    *reinterpret_cast<uint4*>(p) = pack8(f);
  } else {
    static_assert(V == 1);
    *p = __float2bfloat16(f[0]);
  }
}

// Butterfly sum: every lane ends with the same bits (each step adds the same two values, commutatively).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace vit::gpu::detail
