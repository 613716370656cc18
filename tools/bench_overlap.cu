// What running beside communication costs the compute (issue 5: the 2-GPU step is ~5% slower than the same GPUs
// training alone, and the ops split in docs/benchmarks.md run 90 puts three quarters of that in the GEMMs). A
// victim kernel runs in a loop on the compute stream while an interferer runs without pause on another stream;
// each condition isolates one thing a collective brings:
//   quiet   nothing beside the victim
//   ag, rs  NCCL all-gather (bf16) / reduce-scatter (fp32) of one ViT-B block's parameters, both ranks
//   ce      the same bytes written into the peer GPU by the copy engine (cudaMemcpyAsync to a CUDA-IPC mapping):
//           NVLink traffic and peer writes into HBM without a single SM
//   spin    kSpinCtas CTAs (NCCL's default channel count) holding SMs and spinning: SM residency without traffic
// Victims: ViT-B's fc1 GEMM at batch 256 (cuBLASLt, the engine's plans) and a memory-bound copy kernel.
// Conditions run in a mirrored order (quiet ag rs ce spin spin ce rs ag quiet) so drift cancels.
//   mpirun -np 2 -x NCCL_NVLS_ENABLE=0 bench_overlap      (one rank: quiet and spin only)
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/comm_mpi.h"
#include "engine/comm_nccl.h"
#include "engine/cuda_buffer.h"
#include "engine/gemm.h"
#include "engine/run.h"
#include "tools/bench_util.h"

namespace {

using namespace vit;

constexpr int kSpinCtas = 24;
constexpr long kBlockParams = 7087872;  // one ViT-B block: 12 * 768^2 + 13 * 768
constexpr int kVictimReps = 600;

// Holds its SM for `ns` nanoseconds of wall time. The shared memory keeps a cuBLASLt CTA (200+ KiB) from
// sharing the SM, as NCCL's CTAs do.
__global__ void spin_kernel(long long ns) {
  extern __shared__ char smem[];
  long long start = 0, now = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
  if (now == 0) smem[threadIdx.x] = 1;  // never true: keeps the shared memory allocated
}

__global__ void copy_kernel(const float4* __restrict__ in, float4* __restrict__ out, long n) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) out[i] = in[i];
}

// A CUDA IPC mapping of a peer's buffer, closed on destruction.
class PeerMapping {
 public:
  PeerMapping() = default;
  explicit PeerMapping(const cudaIpcMemHandle_t& h) {
    CUDA_CHECK(cudaIpcOpenMemHandle(&ptr_, h, cudaIpcMemLazyEnablePeerAccess));
  }
  ~PeerMapping() {
    if (ptr_) cudaIpcCloseMemHandle(ptr_);
  }
  PeerMapping(const PeerMapping&) = delete;
  PeerMapping& operator=(const PeerMapping&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

struct Result {
  double victim_us = 0, interferer_gbps = 0;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    MpiSession mpi(&argc, &argv);
    VIT_REQUIRE(argc == 1, "usage: mpirun -np 2 bench_overlap (no arguments)");
    const int dev = rank_device(mpi.local_rank(), mpi.rank());
    CUDA_CHECK(cudaSetDevice(dev));
    cudaStream_t compute = nullptr, side = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CommStream cs(compute);
    auto world = NcclComm::world(cs);
    const int R = world->size(), me = world->rank();
    const bool peers = R == 2;

    // Victims.
    gpu::GemmContext gemm;
    const long tokens = 256L * 197, dim = 768, hidden = 3072;
    gpu::DeviceBuffer<bf16> ga((size_t)(tokens * dim)), gb((size_t)(dim * hidden)), gd((size_t)(tokens * hidden));
    bench::fill_uniform(ga.get(), ga.size(), 1, 1.f);
    bench::fill_uniform(gb.get(), gb.size(), 2, 0.05f);
    gpu::GemmOp op;  // column-major D (hidden x tokens) = W (hidden x dim) * X (dim x tokens): the layer's fc1
    op.m = hidden, op.n = tokens, op.k = dim, op.lda = hidden, op.ldb = dim, op.ldd = hidden;
    gpu::GemmArgs args;
    args.a = gb.get(), args.b = ga.get(), args.d = gd.get();
    const long copy_vec = (256L << 20) / 16;  // 256 MiB each way
    gpu::DeviceBuffer<float4> cin((size_t)copy_vec), cout((size_t)copy_vec);
    CUDA_CHECK(cudaMemsetAsync(cin.get(), 1, cin.bytes(), compute));
    auto victim = [&](const std::string& v) {
      if (v == "gemm") gemm.matmul(op, args, compute);
      else {
        copy_kernel<<<132 * 8, 256, 0, compute>>>(cin.get(), cout.get(), copy_vec);
        CUDA_CHECK_LAUNCH();
      }
    };

    // Interferers' buffers: a block's bf16 parameters gathered, its fp32 gradient reduce-scattered.
    const size_t shard = (size_t)(kBlockParams + R - 1) / R;
    gpu::DeviceBuffer<bf16> ag_recv(shard * R);
    gpu::DeviceBuffer<float> rs_send(shard * R), rs_recv(shard);
    bench::fill_uniform(ag_recv.get(), ag_recv.size(), 3, 1.f);
    CUDA_CHECK(cudaMemsetAsync(rs_send.get(), 0, rs_send.bytes(), compute));
    const size_t ce_bytes = shard * R * sizeof(bf16);  // what an all-gather moves into each rank
    gpu::DeviceBuffer<char> ce_src(ce_bytes), ce_dst(ce_bytes);
    CUDA_CHECK(cudaMemsetAsync(ce_src.get(), 2, ce_bytes, compute));
    std::unique_ptr<PeerMapping> peer;  // the peer's ce_dst
    if (peers) {
      cudaIpcMemHandle_t mine{}, theirs{};
      CUDA_CHECK(cudaIpcGetMemHandle(&mine, ce_dst.get()));
      MPI_CHECK(MPI_Sendrecv(&mine, sizeof(mine), MPI_BYTE, 1 - me, 0, &theirs, sizeof(theirs), MPI_BYTE, 1 - me, 0,
                             MPI_COMM_WORLD, MPI_STATUS_IGNORE));
      peer = std::make_unique<PeerMapping>(theirs);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
    constexpr long long kSpinNs = 100000;
    constexpr int kSpinSmem = 48 << 10;
    // One interferer operation; returns the bytes it moves (into this GPU).
    auto interfere = [&](const std::string& c) -> double {
      if (c == "ag") {
        world->allgather(ag_recv.get(), ag_recv.get() + shard * me, shard, DType::bf16);
        return (double)shard * (R - 1) * sizeof(bf16);
      }
      if (c == "rs") {
        world->reduce_scatter(rs_recv.get(), rs_send.get(), shard, DType::f32);
        return (double)shard * (R - 1) * sizeof(float);
      }
      if (c == "ce") {
        CUDA_CHECK(cudaMemcpyAsync(peer->get(), ce_src.get(), ce_bytes, cudaMemcpyDeviceToDevice, side));
        return (double)ce_bytes;
      }
      spin_kernel<<<kSpinCtas, 128, kSpinSmem, side>>>(kSpinNs);
      CUDA_CHECK_LAUNCH();
      return 0;
    };
    auto stream_of = [&](const std::string& c) { return c == "ag" || c == "rs" ? cs.stream() : side; };

    bench::Event v0, v1, i0, i1;
    // Victim loop time, and the interferer's, each on its own stream.
    auto run = [&](const std::string& v, const std::string& c, int count) {
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      double bytes = 0;
      if (c != "quiet") {
        CUDA_CHECK(cudaEventRecord(i0.get(), stream_of(c)));
        for (int i = 0; i < count; ++i) bytes += interfere(c);
        CUDA_CHECK(cudaEventRecord(i1.get(), stream_of(c)));
      }
      CUDA_CHECK(cudaEventRecord(v0.get(), compute));
      for (int i = 0; i < kVictimReps; ++i) victim(v);
      CUDA_CHECK(cudaEventRecord(v1.get(), compute));
      CUDA_CHECK(cudaDeviceSynchronize());
      Result r;
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, v0.get(), v1.get()));
      r.victim_us = ms * 1e3 / kVictimReps;
      if (c != "quiet") {
        CUDA_CHECK(cudaEventElapsedTime(&ms, i0.get(), i1.get()));
        r.interferer_gbps = bytes / (ms * 1e-3) / 1e9;
      }
      return r;
    };
    // Interferer operations enough to outlast the victim loop by a third (the same count on every rank).
    auto count_for = [&](const std::string& v, const std::string& c) {
      const double loop_us = run(v, "quiet", 0).victim_us * kVictimReps;
      bench::Event a, b;
      for (int i = 0; i < 3; ++i) interfere(c);  // warm-up (NCCL connects on first use)
      CUDA_CHECK(cudaDeviceSynchronize());
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      CUDA_CHECK(cudaEventRecord(a.get(), stream_of(c)));
      for (int i = 0; i < 20; ++i) interfere(c);
      CUDA_CHECK(cudaEventRecord(b.get(), stream_of(c)));
      CUDA_CHECK(cudaDeviceSynchronize());
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, a.get(), b.get()));
      int n = (int)(1.33 * loop_us / (ms * 1e3 / 20)) + 4;
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
      return n;
    };

    std::vector<std::string> conds = {"quiet", "spin"};
    if (peers) conds = {"quiet", "ag", "rs", "ce", "spin"};
    std::map<std::pair<std::string, std::string>, std::vector<Result>> res;
    for (const std::string v : {"gemm", "copy"}) {
      for (int i = 0; i < 10; ++i) victim(v);  // plans built and tuned, clocks up
      std::map<std::string, int> counts;
      for (const auto& c : conds)
        if (c != "quiet") counts[c] = count_for(v, c);
      std::vector<std::string> order = conds;
      order.insert(order.end(), conds.rbegin(), conds.rend());
      for (int round = 0; round < 2; ++round)
        for (const auto& c : order) res[{v, c}].push_back(run(v, c, counts[c]));
    }
    for (int r = 0; r < R; ++r) {
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      if (r != me) continue;
      for (const std::string v : {"gemm", "copy"}) {
        double quiet = 0;
        for (const auto& x : res[{v, "quiet"}]) quiet += x.victim_us / res[{v, "quiet"}].size();
        for (const auto& c : conds) {
          const auto& xs = res[{v, c}];
          double us = 0, gb = 0;
          for (const auto& x : xs) us += x.victim_us / xs.size(), gb += x.interferer_gbps / xs.size();
          std::printf("OVERLAP rank=%d/%d victim=%s cond=%s victim_us=%.1f vs_quiet=%+.1f%% interferer_GBps=%.0f "
                      "(%zu runs of %d calls)\n",
                      me, R, v.c_str(), c.c_str(), us, 100 * (us / quiet - 1), gb, xs.size(), kVictimReps);
        }
      }
      std::fflush(stdout);
    }
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    world.reset();
    peer.reset();
    CUDA_CHECK(cudaStreamDestroy(side));
    CUDA_CHECK(cudaStreamDestroy(compute));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_overlap: %s\n", e.what());
    return 1;
  }
}
