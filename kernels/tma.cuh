// Copies by the tensor memory accelerator (sm_90) and the mbarriers they complete on: one thread moves a whole
// tile with cp.async.bulk.tensor, in the 128-byte swizzle the tensor map asks for (CU_TENSOR_MAP_SWIZZLE_128B on a
// 1024-byte-aligned destination, the layout kernels/wgmma.cuh describes), and the mbarrier's phase completes once
// the byte count announced by expect_tx has landed. The copies are async-proxy writes, which wgmma may read once
// the phase completes (no fence.proxy.async). Device code only; private to the wgmma attention kernels.
#pragma once
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>

#include <cstdint>

namespace vit::gpu::tma {

#if defined(__CUDACC__)

// An mbarrier expecting `count` arrivals per phase (1: the thread that calls expect_tx, for copies).
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count = 1) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// One arrival (release: this thread's earlier memory accesses happen before the phase completes).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// After the initialising thread's mbar_init calls: makes them visible to the copy engine.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
// Arrives on bar and announces `bytes` more to land in the current phase.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Spins until the phase of parity `parity` of bar has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done)
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
}
// Box (x = column, y = row) of the 2-D tensor map into shared memory at dst, completing on bar.
__device__ __forceinline__ void load_2d(uint32_t dst, const CUtensorMap* map, int x, int y, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(bar)
      : "memory");
}

#endif  // __CUDACC__

}  // namespace vit::gpu::tma
