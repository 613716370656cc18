// Elementwise ops of the transformer block: residual add, layer scale, dropout, drop path, casts.
// Dropout masks come from the counter RNG (engine/rng.h) keyed by (seed, site, element), so backward
// regenerates them instead of storing them, and they do not depend on launch shape.
#pragma once
#include "kernels/types.h"

namespace vit::ref {
// out = a + b (out may alias a or b).
template <class T>
void add(T* out, const T* a, const T* b, i64 n);
// Layer scale (timm LayerScale): out[r, c] = x[r, c] · gamma[c]; backward dx (=), dgamma (+=).
template <class T>
void layer_scale_forward(T* out, const T* x, const T* gamma, i64 rows, int C);
template <class T>
void layer_scale_backward(T* dx, T* dgamma, const T* dout, const T* x, const T* gamma, i64 rows, int C);
// Dropout: out = x · keep / (1 - p), keep = uniform(seed, site, i) >= p. Backward: dx = dout · keep / (1 - p).
template <class T>
void dropout_forward(T* out, const T* x, i64 n, float p, uint64_t seed, uint64_t site);
template <class T>
void dropout_backward(T* dx, const T* dout, i64 n, float p, uint64_t seed, uint64_t site);
// Drop path (stochastic depth) on a residual branch: sample b of B, each `per_sample` elements, is kept
// with probability 1 - p and scaled by 1 / (1 - p); keep = uniform(seed, site, b) >= p.
template <class T>
void drop_path_forward(T* out, const T* x, int B, i64 per_sample, float p, uint64_t seed, uint64_t site);
template <class T>
void drop_path_backward(T* dx, const T* dout, int B, i64 per_sample, float p, uint64_t seed, uint64_t site);
}  // namespace vit::ref

namespace vit::gpu {
void add(bf16* out, const bf16* a, const bf16* b, i64 n, cudaStream_t stream);
void layer_scale_forward(bf16* out, const bf16* x, const bf16* gamma, i64 rows, int C, cudaStream_t stream);
// scratch: layer_scale_backward_scratch_floats(rows, C) floats (deterministic two-stage dgamma).
i64 layer_scale_backward_scratch_floats(i64 rows, int C);
void layer_scale_backward(bf16* dx, float* dgamma, const bf16* dout, const bf16* x, const bf16* gamma, i64 rows, int C,
                          float* scratch, cudaStream_t stream);
void dropout_forward(bf16* out, const bf16* x, i64 n, float p, uint64_t seed, uint64_t site, cudaStream_t stream);
void dropout_backward(bf16* dx, const bf16* dout, i64 n, float p, uint64_t seed, uint64_t site, cudaStream_t stream);
void drop_path_forward(bf16* out, const bf16* x, int B, i64 per_sample, float p, uint64_t seed, uint64_t site,
                       cudaStream_t stream);
void drop_path_backward(bf16* dx, const bf16* dout, int B, i64 per_sample, float p, uint64_t seed, uint64_t site,
                        cudaStream_t stream);
void cast_f32_to_bf16(bf16* out, const float* x, i64 n, cudaStream_t stream);
void cast_bf16_to_f32(float* out, const bf16* x, i64 n, cudaStream_t stream);
void add_bf16_to_f32(float* out, const bf16* x, i64 n, cudaStream_t stream);  // out += x
}  // namespace vit::gpu
