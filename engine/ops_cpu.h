// The CPU backend as the tape sees it: every op forwards to its vit::ref kernel. T = float for training,
// double for the gradient checks. Activations, parameters, gradients and statistics are all T.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "engine/bf16_host.h"
#include "engine/check.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/broadcast.h"
#include "kernels/cross_attention.h"
#include "kernels/elementwise.h"
#include "kernels/embed.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/patch_drop.h"
#include "kernels/patch_embed.h"
#include "kernels/pool.h"
#include "kernels/qk_norm.h"
#include "kernels/reduce.h"
#include "kernels/softmax_xent.h"

namespace vit {

template <class T>
struct CpuOps {
  using Act = T;
  using Param = T;
  using Grad = T;
  using Stat = T;
  using Master = T;  // optimizer precision: the parameters themselves on the CPU
  using Wire = uint16_t;  // bf16 bit patterns: gradients on the wire when grad_reduce_dtype = "bf16"
  static constexpr bool is_gpu = false;
  static constexpr const char* name = "cpu";

  // Host memory, 64-byte aligned (vector loads; matches the GPU's alignment rules).
  void* alloc(size_t bytes, const char* what) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    VIT_REQUIRE(p || bytes == 0, "out of host memory allocating ", bytes >> 20, " MiB for ", what,
                ": lower training.micro_batch_size");
    return p;
  }
  void release(void* p) { std::free(p); }
  void zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  void upload(void* dst, const void* host, size_t bytes) { std::memcpy(dst, host, bytes); }
  // `rows` rows of `width` bytes between pitched buffers (token slices).
  void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  }
  void zero2d(void* dst, size_t pitch, size_t width, size_t rows) {
    for (size_t r = 0; r < rows; ++r) std::memset(static_cast<char*>(dst) + r * pitch, 0, width);
  }
  void upload_async(void* dst, const void* host, size_t bytes, int) { std::memcpy(dst, host, bytes); }
  void mark_consumed(int) {}
  void wait_uploads() {}
  void prepare(int, int, int, int, int, int) {}
  size_t free_memory() const { return SIZE_MAX; }
  // Loader ring memory (pinned on the GPU backend).
  void* alloc_host(size_t bytes) { return alloc(bytes, "loader batches"); }
  void free_host(void* p) { std::free(p); }
  // Resident set size of the process (what "memory" means on the CPU backend).
  double memory_in_use() const;
  void download(void* host, const void* src, size_t bytes) { std::memcpy(host, src, bytes); }

  void patchify(Act* out, const float* img, int B, int C, int H, int W, int p) { ref::patchify<T>(out, img, B, C, H, W, p); }
  void linear_forward(Act* out, const Act* x, const Param* w, const Param* b, i64 M, int K, int N,
                      const Act* residual = nullptr) {
    ref::linear_forward<T>(out, x, w, b, M, K, N, residual);
  }
  void linear_backward(Act* dx, Grad* dw, Grad* db, const Act* dout, const Act* x, const Param* w, i64 M, int K, int N,
                       bool acc) {
    ref::linear_backward<T>(dx, dw, db, dout, x, w, M, K, N, acc);
  }
  void embed_forward(Act* x, const Act* pt, const Param* cls, const Param* reg, const Param* pos, const EmbedShape& s) {
    ref::embed_forward<T>(x, pt, cls, reg, pos, s);
  }
  void embed_backward(Act* dpt, Grad* dcls, Grad* dreg, Grad* dpos, const Act* dx, const EmbedShape& s) {
    ref::embed_backward<T>(dpt, dcls, dreg, dpos, dx, s);
  }
  void layernorm_forward(Act* out, Stat* mean, Stat* rstd, const Act* x, const Param* w, const Param* b, i64 rows, int C,
                         double eps) {
    ref::layernorm_forward<T>(out, mean, rstd, x, w, b, rows, C, eps);
  }
  void layernorm_backward(Act* dx, Grad* dw, Grad* db, const Act* dout, const Act* x, const Param* w, const Stat* mean,
                          const Stat* rstd, i64 rows, int C, bool acc, Grad* dsum = nullptr) {
    ref::layernorm_backward<T>(dx, dw, db, dout, x, w, mean, rstd, rows, C, acc, dsum);
  }
  void attention_forward(Act* out, Stat* lse, const Act* qkv, int B, int Tn, int H, int d, double scale,
                         const AttnDropout& drop) {
    ref::attention_forward<T>(out, lse, qkv, B, Tn, H, d, scale, drop);
  }
  void attention_backward(Act* dqkv, const Act* dout, const Act* qkv, const Act* out, const Stat* lse, int B, int Tn, int H,
                          int d, double scale, const AttnDropout& drop,
                          Grad* dbias = nullptr) {
    ref::attention_backward<T>(dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, drop);
    if (dbias) ref::qkv_bias_grad<T>(dbias, dqkv, B, Tn, H, d);
  }
  void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site) {
    ref::patch_keep_indices(idx, B, Np, keep, seed, site);
  }
  void patch_drop_forward(Act* out, const Act* x, const int* idx, int B, int prefix, int Np, int keep, int D) {
    ref::patch_drop_forward<T>(out, x, idx, B, prefix, Np, keep, D);
  }
  void patch_drop_backward(Act* dx, const Act* dout, const int* idx, int B, int prefix, int Np, int keep, int D) {
    ref::patch_drop_backward<T>(dx, dout, idx, B, prefix, Np, keep, D);
  }
  void qk_norm_forward(Act* out, Stat* mean, Stat* rstd, const Act* qkv, const Param* qw, const Param* qb,
                       const Param* kw, const Param* kb, i64 BT, int H, int hd) {
    ref::qk_norm_forward<T>(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, 1e-6);
  }
  void qk_norm_backward(Act* dqkv, Grad* dqw, Grad* dqb, Grad* dkw, Grad* dkb, const Act* dout, const Act* qkv,
                        const Param* qw, const Param* kw, const Stat* mean, const Stat* rstd, i64 BT, int H, int hd) {
    ref::qk_norm_backward<T>(dqkv, dqw, dqb, dkw, dkb, dout, qkv, qw, kw, mean, rstd, BT, H, hd);
  }
  void broadcast_rows_forward(Act* out, const Param* src, int B, int L, int C) {
    ref::broadcast_rows_forward<T>(out, src, B, L, C);
  }
  void broadcast_rows_backward(Grad* dsrc, const Act* dout, int B, int L, int C) {
    ref::broadcast_rows_backward<T>(dsrc, dout, B, L, C);
  }
  void cross_attention_forward(Act* out, Stat* lse, const Act* q, const Act* kv, int B, int L, int Tn, int H, int d,
                               double scale) {
    ref::cross_attention_forward<T>(out, lse, q, kv, B, L, Tn, H, d, scale);
  }
  void cross_attention_backward(Act* dq, Act* dkv, const Act* dout, const Act* q, const Act* kv, const Act* out,
                                const Stat* lse, int B, int L, int Tn, int H, int d, double scale) {
    ref::cross_attention_backward<T>(dq, dkv, dout, q, kv, out, lse, B, L, Tn, H, d, scale);
  }
  void gelu_forward(Act* out, const Act* x, i64 n, bool tanh) { ref::gelu_forward<T>(out, x, n, tanh); }
  void gelu_backward(Act* dx, const Act* dout, const Act* x, i64 n, bool tanh) { ref::gelu_backward<T>(dx, dout, x, n, tanh); }
  void gelu_backward_bias(Act* dx, Grad* db, const Act* dout, const Act* x, i64 rows, int cols, bool tanh) {
    ref::gelu_backward_bias<T>(dx, db, dout, x, rows, cols, tanh);
  }
  void add(Act* out, const Act* a, const Act* b, i64 n) { ref::add<T>(out, a, b, n); }
  void layer_scale_forward(Act* out, const Act* x, const Param* g, i64 rows, int C) {
    ref::layer_scale_forward<T>(out, x, g, rows, C);
  }
  void layer_scale_backward(Act* dx, Grad* dg, const Act* dout, const Act* x, const Param* g, i64 rows, int C) {
    ref::layer_scale_backward<T>(dx, dg, dout, x, g, rows, C);
  }
  void dropout_forward(Act* out, const Act* x, i64 n, float p, uint64_t seed, uint64_t site) {
    ref::dropout_forward<T>(out, x, n, p, seed, site);
  }
  void dropout_backward(Act* dx, const Act* dout, i64 n, float p, uint64_t seed, uint64_t site) {
    ref::dropout_backward<T>(dx, dout, n, p, seed, site);
  }
  void drop_path_forward(Act* out, const Act* x, int B, i64 per, float p, uint64_t seed, uint64_t site) {
    ref::drop_path_forward<T>(out, x, B, per, p, seed, site);
  }
  void drop_path_backward(Act* dx, const Act* dout, int B, i64 per, float p, uint64_t seed, uint64_t site) {
    ref::drop_path_backward<T>(dx, dout, B, per, p, seed, site);
  }
  void pool_forward(Act* out, const Act* x, int B, int Tn, int D, PoolMode m, int np) {
    ref::pool_forward<T>(out, x, B, Tn, D, m, np);
  }
  void pool_backward(Act* dx, const Act* dout, int B, int Tn, int D, PoolMode m, int np) {
    ref::pool_backward<T>(dx, dout, B, Tn, D, m, np);
  }
  // losses: (B) per-sample losses; dlogits may be null.
  void softmax_xent(Stat* losses, Act* dlogits, const Act* logits, const int* labels, int B, int K, double smoothing,
                    double dscale) {
    ref::softmax_xent<T>(losses, dlogits, logits, labels, B, K, smoothing, dscale);
  }
  // ---- optimizer side (scalars live in host memory here) ----
  void add_inplace(Grad* dst, const Grad* src, i64 n) { ref::add<T>(dst, dst, src, n); }
  void grad_to_wire(Wire* dst, const Grad* src, i64 n) {
    for (i64 i = 0; i < n; ++i) dst[i] = bf16_bits_from_float((float)src[i]);
  }
  // dst = src (add = false) or dst += src, widened exactly.
  void wire_to_grad(Grad* dst, const Wire* src, i64 n, bool add) {
    for (i64 i = 0; i < n; ++i) dst[i] = (add ? dst[i] : T(0)) + (T)float_from_bf16_bits(src[i]);
  }
  void sum_squares(Stat* acc, const Grad* x, i64 n) { acc[0] += (Stat)ref::sum_squares<T>(x, n); }
  void clip_scale(Stat* scale, Stat* norm, const Stat* sumsq, double max_norm) {
    norm[0] = (Stat)std::sqrt((double)sumsq[0]);
    scale[0] = (Stat)ref::clip_scale((double)norm[0], max_norm);
  }
  // p_low is the parameter copy in the gathered dtype; on the CPU it is the master itself.
  // AdamW over runs.size() elements, weight decay only in the runs that have it.
  void adamw(Master* p, Param* p_low, const Grad* g, Master* m, Master* v, const DecayRuns& runs, const AdamWParams& ap,
             const Stat* scale) {
    i64 b = 0;
    for (int r = 0; r < runs.count; ++r) {
      AdamWParams a = ap;
      if (!runs.decay[r]) a.weight_decay = 0;
      ref::adamw_step<T>(p + b, g + b, m + b, v + b, runs.end[r] - b, a, (double)scale[0]);
      b = runs.end[r];
    }
    if (p_low && p_low != p) std::memcpy(p_low, p, sizeof(T) * runs.size());
  }
  void master_to_param(Param* dst, const Master* src, i64 n) {
    if (dst != src) std::memcpy(dst, src, sizeof(T) * n);
  }
  void accumulate_loss(Stat* acc, const Stat* losses, int n, double scale) {
    double t = 0;
    for (int i = 0; i < n; ++i) t += (double)losses[i];
    acc[0] += (Stat)(t * scale);
  }
  Stat read_scalar(const Stat* s) { return s[0]; }
  void write_scalar(Stat* s, Stat v) { s[0] = v; }

  // correct[0] += top-1 hits, correct[1] += top-5 hits (host memory here).
  void topk_correct(int* correct, const Act* logits, const int* labels, int B, int K) {
    correct[0] += ref::topk_correct<T>(logits, labels, B, K, 1);
    correct[1] += ref::topk_correct<T>(logits, labels, B, K, 5);
  }
};

}  // namespace vit
