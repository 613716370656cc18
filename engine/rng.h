// Counter-based random numbers: every value is a pure function of (seed, stream, index), so any slice
// of a tensor can be initialised alone (sharded init), dropout masks are regenerated in backward instead
// of stored, and results do not depend on thread or rank counts. Usable from host and device code.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define VIT_HD __host__ __device__ __forceinline__
#else
#define VIT_HD inline
#endif

namespace vit::rng {

// splitmix64 finaliser: a bijective 64-bit mix with good avalanche.
VIT_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 64 random bits for (seed, stream, index). Streams separate users (a parameter, a dropout site).
VIT_HD uint64_t bits(uint64_t seed, uint64_t stream, uint64_t index) {
  return mix64(mix64(seed * 0x9e3779b97f4a7c15ULL + stream) ^ (index * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
}

// Uniform in [0, 1) with 24 random bits (exact in float).
VIT_HD float uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return (float)(bits(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

// Uniform in (0, 1) with 53 bits, for the host-side initialisers that work in double.
VIT_HD double uniform_open_d(uint64_t r) { return ((double)(r >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

// Standard normal by Box-Muller from one 64-bit draw's two halves... using two draws for full precision.
VIT_HD double normal(uint64_t seed, uint64_t stream, uint64_t index) {
  double u1 = uniform_open_d(bits(seed, stream, 2 * index));
  double u2 = uniform_open_d(bits(seed, stream, 2 * index + 1));
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Truncated normal on [lo, hi] (in units of the result, as torch.nn.init.trunc_normal_): redraws with
// fresh counters until inside, a bounded number of times (for the usual bounds the first draw wins).
VIT_HD double trunc_normal(uint64_t seed, uint64_t stream, uint64_t index, double mean, double std, double lo, double hi) {
  for (uint64_t k = 0; k < 64; ++k) {
    double x = mean + std * normal(seed, stream, index + (k << 48));
    if (x >= lo && x <= hi) return x;
  }
  return mean < lo ? lo : (mean > hi ? hi : mean);
}

// Stable 64-bit hash of a name (FNV-1a), to turn parameter names into RNG streams.
inline uint64_t hash_name(const char* s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; ++s) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
  return h;
}

}  // namespace vit::rng
