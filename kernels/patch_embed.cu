// CUDA patchify (see patch_embed.h): a gather from the fp32 image into bf16 patch rows. One thread per
// 8 consecutive kx of one (c, ky) line when p % 8 == 0 and the image rows keep 16-byte alignment (two
// float4 loads, one 16-byte store), else one thread per element. Writes are coalesced along the row.
#include "kernels/cuda_vec.cuh"
#include "kernels/patch_embed.h"

namespace vit::gpu {
namespace {
using namespace detail;

constexpr int kThreads = 256;

template <int V>
__global__ void __launch_bounds__(kThreads)
    patchify_kernel(bf16* __restrict__ patches, const float* __restrict__ img, int B, int C, int H, int W, int p) {
  const int Hp = H / p, Wp = W / p, pp = p * p, K = C * pp;
  const i64 n = (i64)B * Hp * Wp * K;
  const i64 tid = (i64)blockIdx.x * blockDim.x + threadIdx.x, stride = (i64)gridDim.x * blockDim.x;
  for (i64 it = tid; it < n / V; it += stride) {
    const i64 o = it * V;
    const i64 row = o / K;
    const int k = (int)(o % K);
    const int c = k / pp, ky = k % pp / p, kx = k % p;
    const int wp = (int)(row % Wp), hp = (int)(row / Wp % Hp);
    const i64 b = row / ((i64)Hp * Wp);
    const float* src = img + ((b * C + c) * H + (i64)hp * p + ky) * W + (i64)wp * p + kx;
    float v[V];
    if constexpr (V == 8) {
      const float4 a = reinterpret_cast<const float4*>(src)[0], q = reinterpret_cast<const float4*>(src)[1];
      v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = q.x, v[5] = q.y, v[6] = q.z, v[7] = q.w;
    } else {
      v[0] = *src;
    }
    store_bf16<V>(patches + o, v);
  }
}

}  // namespace

void patchify(bf16* patches, const float* img, int B, int C, int H, int W, int p, cudaStream_t stream) {
  VIT_ASSERT(p > 0 && H % p == 0 && W % p == 0, "patchify: image ", H, "x", W, " is not a multiple of patch ", p);
  const i64 n = (i64)B * C * H * W;
  if (n <= 0) return;
  // Vector path: kx runs of 8 start at multiples of 8 floats within an image row (W % 8 keeps row starts
  // aligned) and 8 bf16 within a patch row (K = C·p² is then a multiple of 8).
  if (p % 8 == 0 && W % 8 == 0 && aligned16(patches) && aligned16(img))
    patchify_kernel<8><<<grid_for(n / 8, kThreads), kThreads, 0, stream>>>(patches, img, B, C, H, W, p);
  else
    patchify_kernel<1><<<grid_for(n, kThreads), kThreads, 0, stream>>>(patches, img, B, C, H, W, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit::gpu
