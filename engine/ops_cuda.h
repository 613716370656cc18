// The CUDA backend as the tape sees it: bf16 activations and gathered parameters, fp32 statistics,
// fp32 parameter gradients and master weights, everything ordered on one compute stream. Scratch and
// workspace memory is sized once by prepare() from the model's shapes: nothing is allocated per step.
// Include from CUDA translation units only.
#pragma once
#include <algorithm>
#include <cmath>
#include <memory>

#include "engine/check.h"
#include "engine/cuda_check.h"
#include "engine/gemm.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/broadcast.h"
#include "kernels/cross_attention.h"
#include "kernels/elementwise.h"
#include "kernels/embed.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/linear.h"
#include "kernels/linear_small.h"
#include "kernels/patch_drop.h"
#include "kernels/patch_embed.h"
#include "kernels/pool.h"
#include "kernels/qk_norm.h"
#include "kernels/reduce.h"
#include "kernels/softmax_xent.h"

namespace vit {

namespace gpu {
// Small helpers of the backend (engine/ops_cuda_kernels.cu).
void add_f32_inplace(float* dst, const float* src, i64 n, cudaStream_t stream);
void accumulate_loss(float* acc, const float* losses, int n, float scale, cudaStream_t stream);
}  // namespace gpu

struct CudaOps {
  using Act = bf16;
  using Param = bf16;
  using Grad = float;
  using Stat = float;
  using Master = float;
  using Wire = bf16;  // gradients on the wire when grad_reduce_dtype = "bf16"
  static constexpr bool is_gpu = true;
  static constexpr const char* name = "cuda";

  explicit CudaOps(int device) : device_(device) {
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
    for (int k = 0; k < 2; ++k) {
      CUDA_CHECK(cudaEventCreateWithFlags(&uploaded_[k], cudaEventDisableTiming));
      CUDA_CHECK(cudaEventCreateWithFlags(&consumed_[k], cudaEventDisableTiming));
    }
    gemm_ = std::make_unique<gpu::GemmContext>(false);
  }
  ~CudaOps() {
    if (scratch_) cudaFree(scratch_);
    if (workspace_) cudaFree(workspace_);
    gemm_.reset();
    for (int k = 0; k < 2; ++k) {
      if (uploaded_[k]) cudaEventDestroy(uploaded_[k]);
      if (consumed_[k]) cudaEventDestroy(consumed_[k]);
    }
    if (copy_stream_) cudaStreamDestroy(copy_stream_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  CudaOps(const CudaOps&) = delete;
  CudaOps& operator=(const CudaOps&) = delete;

  cudaStream_t stream() const { return stream_; }
  gpu::GemmContext& gemm() { return *gemm_; }
  void synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- memory ----
  void* alloc(size_t bytes, const char* what) {
    void* p = nullptr;
    cudaError_t rc = cudaMalloc(&p, std::max<size_t>(bytes, 256));
    if (rc == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("out of GPU memory allocating ", bytes >> 20, " MiB for ", what, " (", free_b >> 20, " MiB free of ",
           total_b >> 20, " MiB): lower training.micro_batch_size or use a sharding strategy");
    }
    CUDA_CHECK(rc);
    allocated_ += bytes;
    return p;
  }
  void release(void* p) {
    if (p) cudaFree(p);
  }
  void* alloc_host(size_t bytes) {
    void* p = nullptr;
    CUDA_CHECK(cudaMallocHost(&p, std::max<size_t>(bytes, 64)));
    return p;
  }
  void free_host(void* p) {
    if (p) cudaFreeHost(p);
  }
  size_t free_memory() const {
    size_t f = 0, t = 0;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    return f;
  }
  // Bytes this process allocated through the backend (all up front: this is also the peak).
  double memory_in_use() const { return (double)allocated_; }
  void zero(void* p, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_)); }
  void copy(void* dst, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void upload(void* dst, const void* host, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    synchronize();
  }
  // Input batches: host (pinned loader memory) -> device buffer `slot` (0 or 1, alternating) on the copy
  // stream, so the copy of the next micro-batch overlaps the compute of the current one. The copy waits until
  // the compute stream has consumed the slot's previous batch (mark_consumed); compute waits for the copy.
  void upload_async(void* dst, const void* host, size_t bytes, int slot) {
    CUDA_CHECK(cudaStreamWaitEvent(copy_stream_, consumed_[slot], 0));
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, copy_stream_));
    CUDA_CHECK(cudaEventRecord(uploaded_[slot], copy_stream_));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, uploaded_[slot], 0));
    last_slot_ = slot;
  }
  // The compute stream is done reading slot's device buffers (after the forward that used them).
  void mark_consumed(int slot) { CUDA_CHECK(cudaEventRecord(consumed_[slot], stream_)); }
  // Before the loader may recycle pinned memory that the last upload_async reads.
  void wait_uploads() { CUDA_CHECK(cudaEventSynchronize(uploaded_[last_slot_])); }
  void copy2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t rows) {
    CUDA_CHECK(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, rows, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero2d(void* dst, size_t pitch, size_t width, size_t rows) {
    CUDA_CHECK(cudaMemset2DAsync(dst, pitch, 0, width, rows, stream_));
  }
  void download(void* host, const void* src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }

  // Workspace and scratch for the model's shapes (called once by the model's constructor).
  void prepare(int B, int T, int D, int hidden, int heads, int hd) {
    const i64 rows = (i64)B * T;
    i64 floats = gpu::sum_squares_scratch_floats();
    for (int C : {D, hidden, hd}) {
      floats = std::max(floats, gpu::layernorm_backward_scratch_floats(rows, C));
      floats = std::max(floats, gpu::layernorm_backward_scratch_floats((i64)B, C));
      floats = std::max(floats, gpu::layer_scale_backward_scratch_floats(rows, C));
    }
    floats = std::max(floats, gpu::layernorm_backward_scratch_floats(rows * heads, hd));
    floats = std::max(floats, gpu::qk_norm_backward_scratch_floats(rows, heads, hd));
    floats = std::max(floats, gpu::gelu_backward_bias_scratch_floats(rows, hidden));
    if (floats > scratch_floats_) {
      if (scratch_) cudaFree(scratch_);
      scratch_ = static_cast<float*>(alloc(floats * sizeof(float), "kernel scratch"));
      scratch_floats_ = floats;
    }
    const i64 ws = gpu::attention_backward_workspace_bytes(B, T, heads, hd);
    if (ws > workspace_bytes_) {
      if (workspace_) cudaFree(workspace_);
      workspace_ = alloc(ws, "attention workspace");
      workspace_bytes_ = ws;
    }
  }

  // ---- model ops ----
  void patchify(Act* out, const float* img, int B, int C, int H, int W, int p) {
    gpu::patchify(out, img, B, C, H, W, p, stream_);
  }
  void linear_forward(Act* out, const Act* x, const Param* w, const Param* b, i64 M, int K, int N,
                      const Act* residual = nullptr) {
    if (K % 8 || N % 8) {
      gpu::small_linear_forward(out, x, w, b, M, K, N, stream_);
      if (residual) gpu::add(out, out, residual, M * N, stream_);
      return;
    }
    gpu::linear_forward(*gemm_, out, x, w, b, M, K, N, stream_, nullptr, false, residual);
  }
  void linear_backward(Act* dx, Grad* dw, Grad* db, const Act* dout, const Act* x, const Param* w, i64 M, int K, int N,
                       bool acc) {
    if (K % 8 || N % 8) return gpu::small_linear_backward(dx, dw, db, dout, x, w, M, K, N, acc, stream_);
    gpu::linear_backward(*gemm_, dx, dw, db, dout, x, w, M, K, N, acc, stream_);
  }
  void embed_forward(Act* x, const Act* pt, const Param* cls, const Param* reg, const Param* pos, const EmbedShape& s) {
    gpu::embed_forward(x, pt, cls, reg, pos, s, stream_);
  }
  void embed_backward(Act* dpt, Grad* dcls, Grad* dreg, Grad* dpos, const Act* dx, const EmbedShape& s) {
    gpu::embed_backward(dpt, dcls, dreg, dpos, dx, s, stream_);
  }
  void layernorm_forward(Act* out, Stat* mean, Stat* rstd, const Act* x, const Param* w, const Param* b, i64 rows, int C,
                         double eps) {
    gpu::layernorm_forward(out, mean, rstd, x, w, b, rows, C, (float)eps, stream_);
  }
  void layernorm_backward(Act* dx, Grad* dw, Grad* db, const Act* dout, const Act* x, const Param* w, const Stat* mean,
                          const Stat* rstd, i64 rows, int C, bool acc, Grad* dsum = nullptr) {
    VIT_ASSERT(gpu::layernorm_backward_scratch_floats(rows, C) <= scratch_floats_, "scratch not prepared");
    gpu::layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, rows, C, acc, scratch_, stream_, dsum);
  }
  void attention_forward(Act* out, Stat* lse, const Act* qkv, int B, int Tn, int H, int d, double scale,
                         const AttnDropout& drop) {
    gpu::attention_forward(out, lse, qkv, B, Tn, H, d, (float)scale, stream_, drop);
  }
  void attention_backward(Act* dqkv, const Act* dout, const Act* qkv, const Act* out, const Stat* lse, int B, int Tn,
                          int H, int d, double scale, const AttnDropout& drop,
                          Grad* dbias = nullptr) {
    VIT_ASSERT(gpu::attention_backward_workspace_bytes(B, Tn, H, d) <= workspace_bytes_, "workspace not prepared");
    gpu::attention_backward(dqkv, dout, qkv, out, lse, B, Tn, H, d, (float)scale, workspace_, stream_, drop, dbias);
  }
  void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site) {
    gpu::patch_keep_indices(idx, B, Np, keep, seed, site, stream_);
  }
  void patch_drop_forward(Act* out, const Act* x, const int* idx, int B, int prefix, int Np, int keep, int D) {
    gpu::patch_drop_forward(out, x, idx, B, prefix, Np, keep, D, stream_);
  }
  void patch_drop_backward(Act* dx, const Act* dout, const int* idx, int B, int prefix, int Np, int keep, int D) {
    gpu::patch_drop_backward(dx, dout, idx, B, prefix, Np, keep, D, stream_);
  }
  void qk_norm_forward(Act* out, Stat* mean, Stat* rstd, const Act* qkv, const Param* qw, const Param* qb,
                       const Param* kw, const Param* kb, i64 BT, int H, int hd) {
    gpu::qk_norm_forward(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd, 1e-6f, stream_);
  }
  void qk_norm_backward(Act* dqkv, Grad* dqw, Grad* dqb, Grad* dkw, Grad* dkb, const Act* dout, const Act* qkv,
                        const Param* qw, const Param* kw, const Stat* mean, const Stat* rstd, i64 BT, int H, int hd) {
    VIT_ASSERT(gpu::qk_norm_backward_scratch_floats(BT, H, hd) <= scratch_floats_, "scratch not prepared");
    gpu::qk_norm_backward(dqkv, dqw, dqb, dkw, dkb, dout, qkv, qw, kw, mean, rstd, BT, H, hd, scratch_, stream_);
  }
  void broadcast_rows_forward(Act* out, const Param* src, int B, int L, int C) {
    gpu::broadcast_rows_forward(out, src, B, L, C, stream_);
  }
  void broadcast_rows_backward(Grad* dsrc, const Act* dout, int B, int L, int C) {
    gpu::broadcast_rows_backward(dsrc, dout, B, L, C, stream_);
  }
  void cross_attention_forward(Act* out, Stat* lse, const Act* q, const Act* kv, int B, int L, int Tn, int H, int d,
                               double scale) {
    gpu::cross_attention_forward(out, lse, q, kv, B, L, Tn, H, d, (float)scale, stream_);
  }
  void cross_attention_backward(Act* dq, Act* dkv, const Act* dout, const Act* q, const Act* kv, const Act* out,
                                const Stat* lse, int B, int L, int Tn, int H, int d, double scale) {
    gpu::cross_attention_backward(dq, dkv, dout, q, kv, out, lse, B, L, Tn, H, d, (float)scale, stream_);
  }
  void gelu_forward(Act* out, const Act* x, i64 n, bool tanh) { gpu::gelu_forward(out, x, n, tanh, stream_); }
  void gelu_backward(Act* dx, const Act* dout, const Act* x, i64 n, bool tanh) {
    gpu::gelu_backward(dx, dout, x, n, tanh, stream_);
  }
  void gelu_backward_bias(Act* dx, Grad* db, const Act* dout, const Act* x, i64 rows, int cols, bool tanh) {
    VIT_ASSERT(gpu::gelu_backward_bias_scratch_floats(rows, cols) <= scratch_floats_, "scratch not prepared");
    gpu::gelu_backward_bias(dx, db, dout, x, rows, cols, tanh, scratch_, stream_);
  }
  void add(Act* out, const Act* a, const Act* b, i64 n) { gpu::add(out, a, b, n, stream_); }
  void layer_scale_forward(Act* out, const Act* x, const Param* g, i64 rows, int C) {
    gpu::layer_scale_forward(out, x, g, rows, C, stream_);
  }
  void layer_scale_backward(Act* dx, Grad* dg, const Act* dout, const Act* x, const Param* g, i64 rows, int C) {
    gpu::layer_scale_backward(dx, dg, dout, x, g, rows, C, scratch_, stream_);
  }
  void dropout_forward(Act* out, const Act* x, i64 n, float p, uint64_t seed, uint64_t site) {
    gpu::dropout_forward(out, x, n, p, seed, site, stream_);
  }
  void dropout_backward(Act* dx, const Act* dout, i64 n, float p, uint64_t seed, uint64_t site) {
    gpu::dropout_backward(dx, dout, n, p, seed, site, stream_);
  }
  void drop_path_forward(Act* out, const Act* x, int B, i64 per, float p, uint64_t seed, uint64_t site) {
    gpu::drop_path_forward(out, x, B, per, p, seed, site, stream_);
  }
  void drop_path_backward(Act* dx, const Act* dout, int B, i64 per, float p, uint64_t seed, uint64_t site) {
    gpu::drop_path_backward(dx, dout, B, per, p, seed, site, stream_);
  }
  void pool_forward(Act* out, const Act* x, int B, int Tn, int D, PoolMode m, int np) {
    gpu::pool_forward(out, x, B, Tn, D, m, np, stream_);
  }
  void pool_backward(Act* dx, const Act* dout, int B, int Tn, int D, PoolMode m, int np) {
    gpu::pool_backward(dx, dout, B, Tn, D, m, np, stream_);
  }
  void softmax_xent(Stat* losses, Act* dlogits, const Act* logits, const int* labels, int B, int K, double smoothing,
                    double dscale) {
    gpu::softmax_xent(losses, dlogits, logits, labels, B, K, (float)smoothing, (float)dscale, stream_);
  }

  // ---- optimizer side (scalars live in device memory: no host sync inside a step) ----
  void add_inplace(Grad* dst, const Grad* src, i64 n) { gpu::add_f32_inplace(dst, src, n, stream_); }
  void grad_to_wire(Wire* dst, const Grad* src, i64 n) { gpu::cast_f32_to_bf16(dst, src, n, stream_); }
  void wire_to_grad(Grad* dst, const Wire* src, i64 n, bool add) {
    if (add) gpu::add_bf16_to_f32(dst, src, n, stream_);
    else gpu::cast_bf16_to_f32(dst, src, n, stream_);
  }
  void sum_squares(Stat* acc, const Grad* x, i64 n) { gpu::sum_squares(acc, x, n, scratch_, stream_); }
  void clip_scale(Stat* scale, Stat* norm, const Stat* sumsq, double max_norm) {
    gpu::clip_scale(scale, norm, sumsq, (float)max_norm, stream_);
  }
  void adamw(Master* p, Param* p_low, const Grad* g, Master* m, Master* v, const DecayRuns& runs, const AdamWParams& ap,
             const Stat* scale) {
    gpu::adamw_step(p, p_low, g, m, v, runs, ap, scale, stream_);
  }
  void master_to_param(Param* dst, const Master* src, i64 n) { gpu::cast_f32_to_bf16(dst, src, n, stream_); }
  void accumulate_loss(Stat* acc, const Stat* losses, int n, double scale) {
    gpu::accumulate_loss(acc, losses, n, (float)scale, stream_);
  }
  Stat read_scalar(const Stat* s) {
    Stat v = 0;
    download(&v, s, sizeof v);
    return v;
  }

 private:
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaStream_t copy_stream_ = nullptr;
  cudaEvent_t uploaded_[2] = {nullptr, nullptr}, consumed_[2] = {nullptr, nullptr};
  int last_slot_ = 0;
  std::unique_ptr<gpu::GemmContext> gemm_;
  float* scratch_ = nullptr;
  i64 scratch_floats_ = 0;
  void* workspace_ = nullptr;
  i64 workspace_bytes_ = 0;
  size_t allocated_ = 0;
};

}  // namespace vit
