// bf16 on the host as raw 16-bit patterns (the CPU backend's gradient wire format when
// distributed.grad_reduce_dtype = "bf16"): round to nearest even from float, widen back exactly.
#pragma once
#include <cstdint>
#include <cstring>

namespace vit {

inline uint16_t bf16_bits_from_float(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (uint16_t)((u >> 16) | 0x40u);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round half to even on the 16 dropped bits
  return (uint16_t)(u >> 16);
}

inline float float_from_bf16_bits(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace vit
