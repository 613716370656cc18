#include "engine/cuda_check.h"
#include "kernels/linear_small.h"

namespace vit::gpu {
namespace {

constexpr int kTile = 16;

// C (rows, cols) = Σ_k A(r, k) · B(k, c) with A and B given by strided accessors; one 16x16 tile per block.
// out[m, n] = Σ_k x[m, k] · w[n, k] + b[n]
__global__ void fwd_kernel(bf16* out, const bf16* x, const bf16* w, const bf16* b, i64 M, int K, int N) {
  __shared__ float xs[kTile][kTile + 1], ws[kTile][kTile + 1];
  const i64 m = (i64)blockIdx.y * kTile + threadIdx.y;
  const int n = blockIdx.x * kTile + threadIdx.x;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    const int kx = k0 + threadIdx.x, kw = k0 + threadIdx.y;
    xs[threadIdx.y][threadIdx.x] = (m < M && kx < K) ? __bfloat162float(x[m * K + kx]) : 0.f;
    const int nw = blockIdx.x * kTile + threadIdx.x;
    ws[threadIdx.y][threadIdx.x] = (nw < N && kw < K) ? __bfloat162float(w[(i64)nw * K + kw]) : 0.f;
    __syncthreads();
    for (int kk = 0; kk < kTile; ++kk) acc += xs[threadIdx.y][kk] * ws[kk][threadIdx.x];
    __syncthreads();
  }
  if (m < M && n < N) out[m * N + n] = __float2bfloat16(acc + (b ? __bfloat162float(b[n]) : 0.f));
}

// dx[m, k] (=|+=) Σ_n dout[m, n] · w[n, k]
__global__ void dx_kernel(bf16* dx, const bf16* dout, const bf16* w, i64 M, int K, int N, bool acc) {
  __shared__ float ds[kTile][kTile + 1], ws[kTile][kTile + 1];
  const i64 m = (i64)blockIdx.y * kTile + threadIdx.y;
  const int k = blockIdx.x * kTile + threadIdx.x;
  float s = 0.f;
  for (int n0 = 0; n0 < N; n0 += kTile) {
    const int nd = n0 + threadIdx.x, nw = n0 + threadIdx.y;
    ds[threadIdx.y][threadIdx.x] = (m < M && nd < N) ? __bfloat162float(dout[m * N + nd]) : 0.f;
    ws[threadIdx.y][threadIdx.x] = (nw < N && k < K) ? __bfloat162float(w[(i64)nw * K + k]) : 0.f;
    __syncthreads();
    for (int nn = 0; nn < kTile; ++nn) s += ds[threadIdx.y][nn] * ws[nn][threadIdx.x];
    __syncthreads();
  }
  if (m < M && k < K) {
    if (acc) s += __bfloat162float(dx[m * K + k]);
    dx[m * K + k] = __float2bfloat16(s);
  }
}

// dw[n, k] += Σ_m dout[m, n] · x[m, k]; one thread per (n, k), rows in a fixed order (deterministic).
__global__ void dw_kernel(float* dw, const bf16* dout, const bf16* x, i64 M, int K, int N) {
  __shared__ float ds[kTile][kTile + 1], xs[kTile][kTile + 1];
  const int n = blockIdx.y * kTile + threadIdx.y;
  const int k = blockIdx.x * kTile + threadIdx.x;
  float s = 0.f;
  for (i64 m0 = 0; m0 < M; m0 += kTile) {
    const i64 md = m0 + threadIdx.x, mx = m0 + threadIdx.y;
    const int nd = blockIdx.y * kTile + threadIdx.y;
    ds[threadIdx.y][threadIdx.x] = (md < M && nd < N) ? __bfloat162float(dout[md * N + nd]) : 0.f;
    xs[threadIdx.y][threadIdx.x] = (mx < M && k < K) ? __bfloat162float(x[mx * K + k]) : 0.f;
    __syncthreads();
    for (int mm = 0; mm < kTile; ++mm) s += ds[threadIdx.y][mm] * xs[mm][threadIdx.x];
    __syncthreads();
  }
  if (n < N && k < K) dw[(i64)n * K + k] += s;
}

__global__ void db_kernel(float* db, const bf16* dout, i64 M, int N) {
  const int n = blockIdx.x * blockDim.x + threadIdx.x;
  if (n >= N) return;
  float s = 0.f;
  for (i64 m = 0; m < M; ++m) s += __bfloat162float(dout[m * N + n]);
  db[n] += s;
}

}  // namespace

void small_linear_forward(bf16* out, const bf16* x, const bf16* weight, const bf16* bias, i64 M, int K, int N,
                          cudaStream_t stream) {
  dim3 block(kTile, kTile), grid((N + kTile - 1) / kTile, (unsigned)((M + kTile - 1) / kTile));
  fwd_kernel<<<grid, block, 0, stream>>>(out, x, weight, bias, M, K, N);
  CUDA_CHECK_LAUNCH();
}

void small_linear_backward(bf16* dx, float* dweight, float* dbias, const bf16* dout, const bf16* x, const bf16* weight,
                           i64 M, int K, int N, bool dx_accumulate, cudaStream_t stream) {
  dim3 block(kTile, kTile);
  if (dx) {
    dim3 grid((K + kTile - 1) / kTile, (unsigned)((M + kTile - 1) / kTile));
    dx_kernel<<<grid, block, 0, stream>>>(dx, dout, weight, M, K, N, dx_accumulate);
    CUDA_CHECK_LAUNCH();
  }
  if (dweight) {
    dim3 grid((K + kTile - 1) / kTile, (N + kTile - 1) / kTile);
    dw_kernel<<<grid, block, 0, stream>>>(dweight, dout, x, M, K, N);
    CUDA_CHECK_LAUNCH();
  }
  if (dbias) {
    db_kernel<<<(N + 127) / 128, 128, 0, stream>>>(dbias, dout, M, N);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace vit::gpu
