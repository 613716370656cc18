// The wgmma attention forward (kernels/attention_fwd_wg.cu) against the CPU reference, and first the layout
// facts it rests on (kernels/wgmma.cuh), each probed alone with one warpgroup so a wrong bit names itself:
//   - S = Q Kᵀ with A and B from 128B-swizzled shared memory (K-major descriptors, 32-byte k-steps, SBO 1024),
//     read back through the accumulator fragment layout, for N = 64 and 128;
//   - O = P V with A from registers (the fragment layout) and B = V [key][d] MN-major (imm-trans-b = 1,
//     2048-byte k-steps), for 64 and 128 keys.
// The forward runs every configuration over T = 1 .. 1025 (single keys, exact and ragged 64- and 128-key blocks,
// partial and whole 64-row query tiles, many blocks with a 1-key tail), B = 2, H = 3, d = 64, plus the
// ViT-B-like shape (B = 4, H = 12, T = 197) and peaked rows (inputs × 3: sharp softmax rows, so the online
// rescaling across blocks matters). Outputs are poisoned (NaN) first, with a poisoned guard past their ends
// that must stay untouched.
//
// Tolerances (relative Frobenius error over a whole tensor), as tests/gpu/test_attention.cu argues them:
//   out (bf16): 1e-2: P is rounded to bf16 before P V (2^-9 relative) and out to bf16 (another 2^-9).
//   lse (fp32): 1e-4: scores are exact products of bf16 inputs summed in fp32; the rest is fp32 summation
//   order and the SFU exp2 (2^-22).
//   Probes: 1e-3: fp32 sums of 64 or 128 exact bf16 products, which differ from the double reference only by
//   the tensor core's summation order and rounding (~1e-6); any layout error (a wrong row, column, k-step or
//   swizzle phase) mixes in unrelated products and gives an error of order 1.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_fwd_wg.h"
#include "kernels/wgmma.cuh"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;
using namespace vit::test;
namespace wg = vit::gpu::wg;

namespace {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define VIT_TEST_HAS_WGMMA 1
#endif

constexpr double kTolOut = 1e-2;
constexpr double kTolLse = 1e-4;
constexpr double kTolProbe = 1e-3;

// Copies a dense (rows, 64) bf16 matrix into a 128B-swizzled tile of `rows` rows (plain stores; the caller
// publishes them to the async proxy).
__device__ void store_swizzled(unsigned char* tile, const bf16* src, int rows) {
  for (int i = threadIdx.x; i < rows * 8; i += blockDim.x) {
    const int r = i / 8, c = i % 8;
    *reinterpret_cast<uint4*>(tile + wg::sw128_offset(r, c, rows)) =
        *reinterpret_cast<const uint4*>(src + r * 64 + c * 8);
  }
}

// This thread's accumulator element i (of N/2) -> (row, column) of the 64 × N result (wgmma.cuh item 1).
__device__ void frag_pos(int i, int& row, int& col) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  row = 16 * warp + lane / 4 + 8 * ((i >> 1) & 1);
  col = 8 * (i >> 2) + 2 * (lane % 4) + (i & 1);
}

// S (64 × N, fp32) = Q (64 × 64) · K (N × 64)ᵀ with both operands from swizzled shared memory.
template <int N>
__global__ void probe_qk(float* s_out, const bf16* q, const bf16* k) {
#if defined(VIT_TEST_HAS_WGMMA)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = wg::smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  unsigned char* sq = smem_raw + (base - raw);
  unsigned char* sk = sq + 64 * 128;
  store_swizzled(sq, q, 64);
  store_swizzled(sk, k, N);
  wg::fence_proxy_async();
  __syncthreads();
  float d[N / 2];  // every loop over it unrolled: an array in local memory would be stored before the wait
#pragma unroll
  for (int i = 0; i < N / 2; ++i) d[i] = 0.f;
  wg::fence_operand(d);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wg::Wgmma<N>::template ss<0, 0>(d, wg::desc_k_major(base, 64, kk), wg::desc_k_major(base + 64 * 128, N, kk),
                                    kk > 0 ? 1 : 0);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(d);
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    int r, c;
    frag_pos(i, r, c);
    s_out[r * N + c] = d[i];
  }
#else
  __trap();
#endif
}

// O (64 × 64, fp32) = P (64 × N, from registers) · V (N × 64, MN-major in swizzled shared memory).
template <int N>
__global__ void probe_pv(float* o_out, const bf16* p, const bf16* v) {
#if defined(VIT_TEST_HAS_WGMMA)
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = wg::smem_u32(smem_raw), base = (raw + 1023u) & ~1023u;
  store_swizzled(smem_raw + (base - raw), v, N);
  wg::fence_proxy_async();
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto pair = [&](int row, int col) {  // P[row][col], P[row][col + 1] as bf16x2, lower column low
    return *reinterpret_cast<const uint32_t*>(p + row * N + col);
  };
  uint32_t a[N / 16][4];
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
    const int r = 16 * warp + g, c = 16 * kk + 2 * t;
    a[kk][0] = pair(r, c);
    a[kk][1] = pair(r + 8, c);
    a[kk][2] = pair(r, c + 8);
    a[kk][3] = pair(r + 8, c + 8);
  }
  float d[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) d[i] = 0.f;
  wg::fence_operand(d);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) wg::Wgmma<64>::template rs<1>(d, a[kk], wg::desc_mn_major(base, N, kk), 1);
  wg::commit();
  wg::wait<0>();
  wg::fence_operand(d);
#pragma unroll
  for (int i = 0; i < 32; ++i) {
    int r, c;
    frag_pos(i, r, c);
    o_out[r * 64 + c] = d[i];
  }
#else
  __trap();
#endif
}

bool device_ok() {
  if (gpu::attn::wg_forward_supports(197, 64)) return true;
  WARN_MESSAGE(false, "no compute capability 9.0 device: the wgmma attention tests are skipped");
  return false;
}

// A (rows × cols) · B (n × cols)ᵀ in double.
std::vector<float> ref_abt(const std::vector<float>& a, const std::vector<float>& b, int rows, int n, int cols) {
  std::vector<float> r((size_t)rows * n);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int k = 0; k < cols; ++k) s += (double)a[(size_t)i * cols + k] * b[(size_t)j * cols + k];
      r[(size_t)i * n + j] = (float)s;
    }
  return r;
}

template <int N>
double run_probe_qk(uint64_t seed) {
  const auto q = bf_round(randn_f(64 * 64, seed)), k = bf_round(randn_f((size_t)N * 64, seed + 1));
  auto dq = to_device(to_bf(q));
  auto dk = to_device(to_bf(k));
  gpu::DeviceBuffer<float> ds((size_t)64 * N);
  ds.poison();
  const int smem = (64 + N) * 128 + 1024;
  CUDA_CHECK(cudaFuncSetAttribute(probe_qk<N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  probe_qk<N><<<1, 128, smem>>>(ds.get(), dq.get(), dk.get());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());
  return rel_err(ds.download(), ref_abt(q, k, 64, N, 64));
}

template <int N>
double run_probe_pv(uint64_t seed) {
  const auto p = bf_round(randn_f((size_t)64 * N, seed)), v = bf_round(randn_f((size_t)N * 64, seed + 1));
  std::vector<float> vt((size_t)64 * N);  // Vᵀ, so the reference is P · (Vᵀ)ᵀ
  for (int k = 0; k < N; ++k)
    for (int c = 0; c < 64; ++c) vt[(size_t)c * N + k] = v[(size_t)k * 64 + c];
  auto dp = to_device(to_bf(p));
  auto dv = to_device(to_bf(v));
  gpu::DeviceBuffer<float> dout(64 * 64);
  dout.poison();
  const int smem = N * 128 + 1024;
  CUDA_CHECK(cudaFuncSetAttribute(probe_pv<N>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  probe_pv<N><<<1, 128, smem>>>(dout.get(), dp.get(), dv.get());
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaDeviceSynchronize());
  return rel_err(dout.download(), ref_abt(p, vt, 64, 64, N));
}

struct Shape {
  int B, T, H;
};

// The CPU reference of one input, shared by the configurations.
struct Problem {
  Shape s;
  float scale;
  std::vector<float> qkv, out, lse;
  Problem(const Shape& sh, uint64_t seed, float in_scale) : s(sh), scale(0.125f) {
    const size_t n_qkv = (size_t)s.B * s.T * 3 * s.H * 64;
    qkv = bf_round(randn_f(n_qkv, seed, in_scale));
    out.resize((size_t)s.B * s.T * s.H * 64);
    lse.resize((size_t)s.B * s.H * s.T);
    ref::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, 64, (double)scale);
  }
};

constexpr size_t kGuard = 1024;  // poisoned elements past each output that must stay poisoned

bool guard_intact_bf(const std::vector<bf16>& v, size_t n) {
  for (size_t i = n; i < v.size(); ++i) {
    uint16_t bits;
    std::memcpy(&bits, &v[i], 2);
    if (bits != 0xFFFF) return false;
  }
  return true;
}
bool guard_intact_f(const std::vector<float>& v, size_t n) {
  for (size_t i = n; i < v.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, &v[i], 4);
    if (bits != 0xFFFFFFFFu) return false;
  }
  return true;
}

// Runs configuration cfg on the problem and checks out, lse and the guards.
void check_cfg(int cfg, const Problem& pb, const char* what) {
  const Shape& s = pb.s;
  const size_t n_out = pb.out.size(), n_lse = pb.lse.size();
  auto d_qkv = to_device(to_bf(pb.qkv));
  gpu::DeviceBuffer<bf16> d_out(n_out + kGuard);
  gpu::DeviceBuffer<float> d_lse(n_lse + kGuard);
  d_out.poison();
  d_lse.poison();
  gpu::attn::wg_forward_cfg(cfg, d_out.get(), d_lse.get(), d_qkv.get(), s.B, s.T, s.H, 64, pb.scale, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = d_out.download();
  const auto lse = d_lse.download();
  const double e_out = rel_err(to_f(std::vector<bf16>(out.begin(), out.begin() + n_out)), pb.out);
  const double e_lse = rel_err(std::vector<float>(lse.begin(), lse.begin() + n_lse), pb.lse);
  INFO(what, " ", gpu::attn::wg_config_name(cfg), " B=", s.B, " T=", s.T, " H=", s.H, "  out ", e_out, " lse ", e_lse);
  CHECK(e_out < kTolOut);
  CHECK(e_lse < kTolLse);
  CHECK(guard_intact_bf(out, n_out));
  CHECK(guard_intact_f(lse, n_lse));
}

// Sets VIT_ATTN_WG_CFG for its lifetime and restores the old value after.
class WgConfigScope {
 public:
  explicit WgConfigScope(const std::string& value) {
    const char* old = std::getenv(kName);
    had_ = old != nullptr;
    if (had_) saved_ = old;
    setenv(kName, value.c_str(), 1);
  }
  ~WgConfigScope() {
    if (had_)
      setenv(kName, saved_.c_str(), 1);
    else
      unsetenv(kName);
  }
  WgConfigScope(const WgConfigScope&) = delete;
  WgConfigScope& operator=(const WgConfigScope&) = delete;

 private:
  static constexpr const char* kName = "VIT_ATTN_WG_CFG";
  bool had_ = false;
  std::string saved_;
};

}  // namespace

TEST_CASE("attention wg: wgmma S = Q K^T from 128B-swizzled shared memory (K-major descriptors)") {
  if (!device_ok()) return;
  const double e64 = run_probe_qk<64>(31), e128 = run_probe_qk<128>(37);
  INFO("m64n64k16: ", e64, "  m64n128k16: ", e128);
  CHECK(e64 < kTolProbe);
  CHECK(e128 < kTolProbe);
}

TEST_CASE("attention wg: wgmma O = P V with P in registers and V MN-major (imm-trans-b)") {
  if (!device_ok()) return;
  const double e64 = run_probe_pv<64>(41), e128 = run_probe_pv<128>(43);
  INFO("64 keys: ", e64, "  128 keys: ", e128);
  CHECK(e64 < kTolProbe);
  CHECK(e128 < kTolProbe);
}

TEST_CASE("attention wg: forward, every configuration, matches the CPU reference over T") {
  if (!device_ok()) return;
  for (int T : {1, 7, 16, 63, 64, 65, 128, 129, 197, 255, 256, 257, 577, 1025}) {
    const Problem pb({2, T, 3}, 5000 + T, 1.f);
    for (int cfg = 0; cfg < gpu::attn::kWgConfigCount; ++cfg) check_cfg(cfg, pb, "sweep");
  }
}

TEST_CASE("attention wg: forward at the ViT-B-like shape and with peaked rows") {
  if (!device_ok()) return;
  const Problem vitb({4, 197, 12}, 6100, 1.f);
  for (int cfg = 0; cfg < gpu::attn::kWgConfigCount; ++cfg) check_cfg(cfg, vitb, "ViT-B-like");
  for (int T : {65, 197, 577}) {
    const Problem pb({2, T, 3}, 6200 + T, 3.f);
    for (int cfg = 0; cfg < gpu::attn::kWgConfigCount; ++cfg) check_cfg(cfg, pb, "peaked");
  }
}

TEST_CASE("attention wg: the default entry point, VIT_ATTN_WG_CFG, occupancy and the shapes it takes") {
  CHECK_FALSE(gpu::attn::wg_forward_supports(197, 128));
  CHECK_FALSE(gpu::attn::wg_forward_supports(0, 64));
  {
    const WgConfigScope scope("7");
    CHECK_THROWS_AS(gpu::attn::wg_config(197, 64), vit::Error);
  }
  {
    const WgConfigScope scope("x");
    CHECK_THROWS_AS(gpu::attn::wg_config(197, 64), vit::Error);
  }
  for (int cfg = 0; cfg < gpu::attn::kWgConfigCount; ++cfg) {
    const WgConfigScope scope(std::to_string(cfg));
    CHECK(gpu::attn::wg_config(197, 64) == cfg);
  }
  if (!device_ok()) return;
  // Each configuration reaches the CTAs per SM it was sized for (registers under its __launch_bounds__, shared
  // memory within the SM's).
  for (int cfg = 0; cfg < gpu::attn::kWgConfigCount; ++cfg) {
    INFO(gpu::attn::wg_config_name(cfg), ": ", gpu::attn::wg_ctas_per_sm(cfg), " CTAs per SM");
    CHECK(gpu::attn::wg_ctas_per_sm(cfg) >= gpu::attn::wg_traits(cfg).min_blocks);
  }
  // wg_forward (configuration from the environment) is the same kernel as wg_forward_cfg: identical bits.
  const Problem pb({2, 197, 3}, 6400, 1.f);
  auto d_qkv = to_device(to_bf(pb.qkv));
  gpu::DeviceBuffer<bf16> a(pb.out.size()), b(pb.out.size());
  gpu::DeviceBuffer<float> la(pb.lse.size()), lb(pb.lse.size());
  const WgConfigScope scope("1");
  gpu::attn::wg_forward(a.get(), la.get(), d_qkv.get(), 2, 197, 3, 64, pb.scale, 0);
  gpu::attn::wg_forward_cfg(1, b.get(), lb.get(), d_qkv.get(), 2, 197, 3, 64, pb.scale, 0);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto oa = a.download(), ob = b.download();
  CHECK(std::memcmp(oa.data(), ob.data(), oa.size() * sizeof(bf16)) == 0);
  CHECK(rel_err(to_f(oa), pb.out) < kTolOut);
  CHECK_THROWS_AS(gpu::attn::wg_forward_cfg(0, a.get(), la.get(), d_qkv.get(), 1, 5, 1, 128, 0.1f, 0), vit::Error);
}
