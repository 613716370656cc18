// Hopper warpgroup MMA (wgmma.mma_async, sm_90a) building blocks: 128-byte-swizzled shared-memory tiles, their
// matrix descriptors, the wgmma instructions this project uses (m64nNk16, bf16 in, fp32 accumulate) and the
// fences of the wgmma protocol. Device code only; private to kernels/*.cu and their GPU tests.
//
// Every layout fact below was checked against the PTX ISA (9.7.15 "Asynchronous Warpgroup Level Matrix
// Multiply-Accumulate", read in the ptx.poole.ai mirror of the ISA) and CUTLASS's cute GMMA code
// (include/cute/arch/mma_sm90_desc.hpp: GmmaDescriptor; include/cute/atom/mma_traits_sm90_gmma.hpp:
// make_gmma_desc, the canonical layouts, CLayout_64xN / ALayout_64x16), read to understand, not copied.
//
// 1. Fragments (ISA 9.7.15.5.1.1.1, whose layouts are figures; read here as cute encodes them: CLayout_64xN =
//    ((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512)) over the column-major (m + 64·n) index). Thread t of the warpgroup: warp w = t/32 owns rows 16w..16w+15; lane =
//    4·g + q (g = lane/4, q = lane%4) holds, for the accumulator D of m64nNk16 (N/2 fp32 registers),
//        d[4j + 2r + c] = D(16w + g + 8r, 8j + 2q + c),   j < N/8, r, c in {0, 1}:
//    the mma.sync m16n8 C layout of attention_tiles.cuh repeated over the N/8 column blocks, warp w taking the
//    w-th 16-row slab. The register A operand (ALayout_64x16 = CLayout_64x16, 4 registers of bf16x2) is
//        a[0] = A(16w+g, 2q..2q+1)  a[1] = A(16w+g+8, 2q..)  a[2] = A(16w+g, 2q+8..)  a[3] = A(16w+g+8, 2q+8..)
//    (lower column in the low half), i.e. exactly the packing of accumulator columns 16k..16k+15:
//        a = {pack(d[8k], d[8k+1]), pack(d[8k+2], d[8k+3]), pack(d[8k+4], d[8k+5]), pack(d[8k+6], d[8k+7])},
//    so a score accumulator becomes the A operand of the next product without leaving registers.
// 2. Matrix descriptor (ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format"; cute GmmaDescriptor), 64 bits:
//        bits  0-13  start address >> 4 (shared-space byte address)   bits 16-29  leading byte offset >> 4
//        bits 32-45  stride byte offset >> 4                          bits 49-51  base offset
//        bits 62-63  swizzle: 0 none, 1 = 128B, 2 = 64B, 3 = 32B
//    Base offset is 0 when the swizzle pattern starts on a 1024-byte boundary (128B mode); every tile here is
//    1024-byte aligned, and the k-steps below move the start by 32..96 bytes, which leaves address bits 7-9
//    (the pattern row) at 0, so it stays 0.
// 3. 128B swizzle: a swizzle atom is 8 rows of 128 bytes (1024 bytes, ISA Table 38: 8x8 units of 16 bytes for
//    both K- and MN-major), and 16-byte chunk c of row r of an atom lives at chunk c ^ (r % 8): the hardware
//    XORs address bits 4-6 with bits 7-9 (cute Swizzle<3,4,3> on byte addresses). Data must be written to
//    shared memory already swizzled that way (sw128_offset below).
// 4. K-major operand (A or B with imm-trans = 0; cute canonical ((8,m),(T,2)):((8T,SBO),(1,T)) in 16-byte
//    units, T = 8 bf16): rows (M or N) are 128-byte lines of 64 k-elements; 8-row groups are SBO = 1024 bytes
//    apart (dense atoms); the k extent of one instruction (16 bf16 = 32 bytes) lies inside one line, so LBO
//    is unused for swizzled K-major layouts ("assumed 1": the field is set to 1). Step kk of 16 k-elements
//    starts 32·kk bytes further (hardware applies the swizzle to the computed address, which is why a 32-byte
//    advance inside a swizzled line is legal; cute's DescriptorIterator advances descriptors the same way).
// 5. MN-major operand (imm-trans = 1; cute canonical ((8,n),(8,k)):((1,LBO),(8,SBO)) in 16-byte units): each
//    128-byte line holds 64 consecutive n-elements of one k; lines of consecutive k are 128 bytes apart,
//    8-line (8-k) groups SBO = 1024 bytes apart, and the next 64 n-elements (a second atom column, only for
//    N > 64) LBO bytes away. A V tile stored [key][d] is exactly this for B of O += P·V (k = key, n = d), so
//    it is read with imm-trans-b = 1 (allowed for .bf16); step kk of 16 keys starts 16·128 = 2048 bytes on.
// 6. Proxies (ISA 9.7.15.4 "Async Proxy"): wgmma reads shared memory through the async proxy, so data written
//    by the generic proxy (st.shared; and non-bulk cp.async, for which the ISA names no async-proxy path) must
//    be published with fence.proxy.async by the writing threads before the barrier that precedes the wgmma;
//    a completed wgmma (observed with wait_group) carries an implicit async-to-generic fence, so its buffers may
//    be overwritten once every warpgroup has waited.
// 7. wgmma.fence (ISA 9.7.15.7.1) is required before the first wgmma and between any other register access
//    to an accumulator or A-fragment register and the wgmma that uses it; commit_group closes a group and
//    wait_group N waits until at most N groups are pending. The asm outputs are not ready until the wait, so
//    fence_operand() pins every accumulator register after the wait (and before the issue): without it the
//    compiler could move reads of the accumulators above wait_group (the operands look ready to it once the
//    wgmma asm "returns").
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace vit::gpu::wg {

#if defined(__CUDACC__)

// Byte offset of 16-byte chunk `chunk` of row r in a 128B-swizzled tile of `rows` rows: the tile is stored as
// column panels of 64 bf16 (128 bytes), panel p holding columns 64p..64p+63 of every row, each panel `rows`
// 128-byte lines (rows a multiple of 8, so every panel is whole atoms).
__host__ __device__ constexpr uint32_t sw128_offset(int r, int chunk, int rows) {
  return (uint32_t)((chunk >> 3) * rows * 128 + r * 128 + (((chunk & 7) ^ (r & 7)) << 4));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// The descriptor fields of item 2 (matrix-descriptor-encode(x) = (x & 0x3FFFF) >> 4), 128B swizzle.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t start, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  return (uint64_t)((start & 0x3FFFFu) >> 4) | (uint64_t)((lbo_bytes & 0x3FFFFu) >> 4) << 16 |
         (uint64_t)((sbo_bytes & 0x3FFFFu) >> 4) << 32 | (uint64_t)1 << 62;
}

// K-major operand (item 4): k-step kk (16 elements) of a swizzled tile of `rows` rows (M or N) at `tile`.
__device__ __forceinline__ uint64_t desc_k_major(uint32_t tile, int rows, int kk) {
  return sw128_desc(tile + (uint32_t)((kk >> 2) * rows * 128 + (kk & 3) * 32), 16, 1024);
}

// MN-major operand (item 5): k-step kk (16 rows of the tile) of a swizzled tile of `rows` rows (the k extent),
// whose 64-column panels (n) are rows·128 bytes apart.
__device__ __forceinline__ uint64_t desc_mn_major(uint32_t tile, int rows, int kk) {
  return sw128_desc(tile + (uint32_t)(kk * 16 * 128), (uint32_t)(rows * 128), 1024);
}

// ---- protocol (items 6, 7) ----
__device__ __forceinline__ void fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Generic-proxy shared-memory writes of this thread (landed cp.async, st.shared) -> visible to the async proxy.
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Pins registers in program order relative to the (volatile) wgmma asm statements around it.
template <int N>
__device__ __forceinline__ void fence_operand(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_operand(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// ---- the instructions ----
// Wgmma<N>::ss<kTransA, kTransB>(d, desc_a, desc_b, accumulate): d (64 x N) = A (64 x 16) · B (16 x N)
// + (accumulate ? d : 0), scale-a = scale-b = 1; Wgmma<N>::rs<kTransB>(d, a, desc_b, accumulate): the same with A
// in registers (item 1). One warpgroup executes it (.sync.aligned: all 128 threads, uniform control flow).
// The accumulator operands of the m64nNk16 instructions, N/2 fp32 registers a thread: the register list in
// the instruction text, and the matching "+f" operands (in the same order).
#define VIT_WGMMA_OPS8(d, i)                                                                                   \
  "+f"(d[(i) + 0]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3]), "+f"(d[(i) + 4]), "+f"(d[(i) + 5]), \
      "+f"(d[(i) + 6]), "+f"(d[(i) + 7])
#define VIT_WGMMA_D32(d) \
  VIT_WGMMA_OPS8(d, 0), VIT_WGMMA_OPS8(d, 8), VIT_WGMMA_OPS8(d, 16), VIT_WGMMA_OPS8(d, 24)
#define VIT_WGMMA_D64(d) \
  VIT_WGMMA_D32(d), VIT_WGMMA_OPS8(d, 32), VIT_WGMMA_OPS8(d, 40), VIT_WGMMA_OPS8(d, 48), VIT_WGMMA_OPS8(d, 56)
#define VIT_WGMMA_REGS32                                                                                     \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                    \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
#define VIT_WGMMA_REGS64                                                                                     \
  VIT_WGMMA_REGS32 ", "                                                                                      \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                          \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

template <int N>
struct Wgmma;

template <>
struct Wgmma<16> {
  // d (64 x 16, fp32) = A (64 x 16) * B (16 x 16) + (accumulate ? d : 0); A and B from shared-memory descriptors.
  template <int kTransA, int kTransB>
  static __device__ __forceinline__ void ss(float (&d)[8], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, "
        "%8, %9, p, 1, 1, %11, %12;\n}\n"
        : VIT_WGMMA_OPS8(d, 0)
        : "l"(da), "l"(db), "r"(accumulate), "n"(kTransA), "n"(kTransB)
        : "memory");
  }
};

template <>
struct Wgmma<32> {
  // d (64 x 32, fp32) = A (64 x 16) * B (16 x 32) + (accumulate ? d : 0); A and B from shared-memory descriptors.
  template <int kTransA, int kTransB>
  static __device__ __forceinline__ void ss(float (&d)[16], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "%16, %17, p, 1, 1, %19, %20;\n}\n"
        : VIT_WGMMA_OPS8(d, 0), VIT_WGMMA_OPS8(d, 8)
        : "l"(da), "l"(db), "r"(accumulate), "n"(kTransA), "n"(kTransB)
        : "memory");
  }
};

template <>
struct Wgmma<64> {
  // d (64 x 64, fp32) = A (64 x 16) * B (16 x 64) + (accumulate ? d : 0); A and B from shared-memory descriptors.
  template <int kTransA, int kTransB>
  static __device__ __forceinline__ void ss(float (&d)[32], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{"
        VIT_WGMMA_REGS32
        "}, "
        "%32, %33, p, 1, 1, %35, %36;\n}\n"
        : VIT_WGMMA_D32(d)
        : "l"(da), "l"(db), "r"(accumulate), "n"(kTransA), "n"(kTransB)
        : "memory");
  }
  // The same with A from registers (the A fragment of item 1).
  template <int kTransB>
  static __device__ __forceinline__ void rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{"
        VIT_WGMMA_REGS32
        "}, "
        "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : VIT_WGMMA_D32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(kTransB)
        : "memory");
  }
};

template <>
struct Wgmma<128> {
  // d (64 x 128, fp32) = A (64 x 16) * B (16 x 128) + (accumulate ? d : 0); A and B from shared-memory descriptors.
  template <int kTransA, int kTransB>
  static __device__ __forceinline__ void ss(float (&d)[64], uint64_t da, uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        VIT_WGMMA_REGS64
        "}, "
        "%64, %65, p, 1, 1, %67, %68;\n}\n"
        : VIT_WGMMA_D64(d)
        : "l"(da), "l"(db), "r"(accumulate), "n"(kTransA), "n"(kTransB)
        : "memory");
  }
  // The same with A from registers (the A fragment of item 1).
  template <int kTransB>
  static __device__ __forceinline__ void rs(float (&d)[64], const uint32_t (&a)[4], uint64_t db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{"
        VIT_WGMMA_REGS64
        "}, "
        "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
        : VIT_WGMMA_D64(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(kTransB)
        : "memory");
  }
};

#endif  // __CUDACC__

#undef VIT_WGMMA_REGS64
#undef VIT_WGMMA_REGS32
#undef VIT_WGMMA_D64
#undef VIT_WGMMA_D32
#undef VIT_WGMMA_OPS8

}  // namespace vit::gpu::wg
