// The one-host transports, copy engines over NVLink (engine/comm_ce.h) and host memory over PCIe
// (engine/comm_host.h), against NCCL and a host reference, on every GPU of one host:
//   mpirun -np N test_comm_transport       (run by tests/gpu/multi_gpu_equivalence.sh; N >= 2)
// Counts that grow (the staging is re-made) and are not multiples of anything (nor of the host transport's
// chunks, whose ring wraps inside the larger ones), fp32 and bf16, all-gathers in and out of place,
// reduce-scatters, all-reduces (host memory: fp32, fp64, bf16, bit-identical on every rank); outputs poisoned
// first; inputs written by a compute-stream kernel just before the collective (no host sync: the collective must
// wait for it); results read back by a compute-stream kernel after wait(ticket) (compute must wait for the
// collective); and a burst of collectives issued back to back before anything is checked (the flags' sequence
// numbers under pipelining).
#include <mpi.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/comm_ce.h"
#include "engine/comm_host.h"
#include "engine/comm_mpi.h"
#include "engine/comm_nccl.h"
#include "engine/cuda_buffer.h"
#include "engine/fsdp.h"  // dtype_of
#include "engine/rng.h"
#include "engine/run.h"
#include "kernels/types.h"

namespace {

using namespace vit;

// Input value i of rank r in case c: exact in bf16 (8 significant bits) so sums compare without rounding doubts.
__host__ __device__ float input_value(int c, int r, size_t i) {
  return (float)((int)(rng::bits((uint64_t)c, (uint64_t)r, i) % 255) - 127) / 64.f;
}
template <class T>
__global__ void fill_input(T* x, size_t n, int c, int r) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = (T)input_value(c, r, i);
}
template <class T>
__global__ void copy_out(const T* x, float* y, size_t n) {  // the compute stream reads the collective's output
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    y[i] = (float)x[i];
}

struct Checker {
  int failures = 0, cases = 0;
  int rank = 0;
  void expect(bool ok, const std::string& what) {
    ++cases;
    if (!ok) {
      ++failures;
      std::printf("FAIL rank %d: %s\n", rank, what.c_str());
    }
  }
};

// One collective of kind `k` ("ag", "ag_inplace", "rs", "ar": all-reduce in place) through `comm`, inputs filled on the compute stream,
// output poisoned, read back through the compute stream after wait(ticket). Returns the output as float.
template <class T>
std::vector<float> run_one(Comm& comm, cudaStream_t compute, const std::string& k, size_t count, int c) {
  const int n = comm.size(), me = comm.rank();
  const size_t out_n = k == "rs" || k == "ar" ? count : count * n, in_n = k == "rs" ? count * n : count;
  gpu::DeviceBuffer<T> out(out_n), in(in_n);
  gpu::DeviceBuffer<float> check(out_n);
  CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), compute));  // NaN in fp32 and bf16
  T* send = k == "ag_inplace" ? out.get() + count * me : k == "ar" ? out.get() : in.get();
  fill_input<<<256, 256, 0, compute>>>(send, in_n, c, me);
  CUDA_CHECK_LAUNCH();
  if (k == "rs") comm.reduce_scatter(out.get(), send, count, dtype_of<T>());
  else if (k == "ar") comm.allreduce(out.get(), count, dtype_of<T>());
  else comm.allgather(out.get(), send, count, dtype_of<T>());
  comm.wait(comm.ticket());
  copy_out<<<256, 256, 0, compute>>>(out.get(), check.get(), out_n);
  CUDA_CHECK_LAUNCH();
  std::vector<float> host(out_n);
  CUDA_CHECK(cudaMemcpyAsync(host.data(), check.get(), check.bytes(), cudaMemcpyDeviceToHost, compute));
  CUDA_CHECK(cudaStreamSynchronize(compute));
  return host;
}

// What the collective must produce on this rank (sums of bf16-exact inputs over at most 8 ranks are exact).
// With `magnitudes`, the sums of the inputs' absolute values instead (a bound on every partial sum).
std::vector<float> expected(const std::string& k, size_t count, int c, int n, int me, bool magnitudes = false) {
  std::vector<float> e(k == "rs" || k == "ar" ? count : count * n);
  for (size_t i = 0; i < e.size(); ++i) {
    if (k == "rs" || k == "ar") {
      float s = 0;
      for (int r = 0; r < n; ++r) {
        const float x = input_value(c, r, (k == "rs" ? count * me : 0) + i);
        s += magnitudes ? std::fabs(x) : x;
      }
      e[i] = s;
    } else {
      e[i] = input_value(c, (int)(i / count), i % count);
    }
  }
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    MpiSession mpi(&argc, &argv);
    CUDA_CHECK(cudaSetDevice(rank_device(mpi.local_rank(), mpi.rank())));
    cudaStream_t compute = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
    int bad = 0;
    {
      CommStream cs(compute);
      auto world = NcclComm::world(cs);
      VIT_REQUIRE(world->size() >= 2, "test_comm_transport needs at least 2 ranks (mpirun -np 2)");
      std::unique_ptr<Comm> nccl = shard_group_comm(*world, 0, mpi.rank(), "nccl");
      Checker ck;
      ck.rank = mpi.rank();
      for (const std::string tr : {"copy_engine", "host_memory"}) {
        std::unique_ptr<Comm> comm = shard_group_comm(*world, 0, mpi.rank(), tr);
        const bool host = tr == "host_memory";
        ck.expect(host ? dynamic_cast<HostMemoryComm*>(comm.get()) != nullptr
                       : dynamic_cast<CopyEngineComm*>(comm.get()) != nullptr, "transport " + tr + " built its comm");
        const int n = comm->size(), me = comm->rank();
        int c = 0;
        for (size_t count : {size_t{1}, size_t{7}, size_t{4097}, size_t{1000003}, size_t{64}, size_t{3000017}}) {
          for (const std::string k : {"ag", "ag_inplace", "rs", "ar"}) {
            ++c;
            const auto e = expected(k, count, c, n, me);
            const auto f = run_one<float>(*comm, compute, k, count, c);
            const auto g = run_one<float>(*nccl, compute, k, count, c);
            const auto h = run_one<bf16>(*comm, compute, k, count, c);
            // Both transports sum bf16 pieces in fp32 and round once: within half a bf16 ulp (2^-8 relative) of the
            // exact sum. The copy engines' all-reduce is NCCL's, whose ring rounds every partial sum to bf16: on n
            // ranks n - 1 roundings, each within 2^-8 of a partial sum no larger than the sum of magnitudes.
            const bool nccl_ring = k == "ar" && !host && n > 2;
            const auto mag = nccl_ring ? expected(k, count, c, n, me, true) : e;
            size_t bad_f = 0, bad_g = 0, bad_h = 0, bad_d = 0;
            for (size_t i = 0; i < e.size(); ++i) {
              bad_f += std::memcmp(&f[i], &e[i], 4) != 0;
              bad_g += std::memcmp(&g[i], &f[i], 4) != 0;
              bad_h += !(std::fabs(h[i] - e[i]) <= std::ldexp(std::fabs(mag[i]), -8) * (nccl_ring ? n - 1 : 1));
            }
            const std::string what = tr + " " + k + " count " + std::to_string(count);
            ck.expect(bad_f == 0, what + " fp32: " + std::to_string(bad_f) + " elements differ from the exact result");
            ck.expect(bad_g == 0, what + " fp32: " + std::to_string(bad_g) + " elements differ from NCCL's");
            ck.expect(bad_h == 0, what + " bf16: " + std::to_string(bad_h) + " elements off by more than rounding");
            if (k == "ar" && host) {
              const auto d = run_one<double>(*comm, compute, k, count, c);
              for (size_t i = 0; i < e.size(); ++i) bad_d += d[i] != e[i];
              ck.expect(bad_d == 0, what + " fp64: " + std::to_string(bad_d) + " elements differ from the exact result");
              // Replicas must stay bit-identical: every rank's bf16 all-reduce (rounded) hashes the same.
              uint64_t hash = 1469598103934665603ull;
              for (float v : h) hash = (hash ^ std::bit_cast<uint32_t>(v)) * 1099511628211ull;
              uint64_t lo = 0, hi = 0;
              MPI_CHECK(MPI_Allreduce(&hash, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD));
              MPI_CHECK(MPI_Allreduce(&hash, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
              ck.expect(lo == hi, what + " bf16: the ranks' results differ");
            }
          }
        }
        // A burst: 40 collectives of alternating kinds and sizes issued without a host sync in between.
        constexpr int kBurst = 40;
        std::vector<gpu::DeviceBuffer<float>> outs, ins;
        std::vector<size_t> counts;
        for (int b = 0; b < kBurst; ++b) {
          const size_t count = 1000 + 7919 * (size_t)b * (host ? 20 : 1);  // host: up to ~6 MiB, several chunks
          counts.push_back(count);
          outs.emplace_back(b % 2 ? count : count * n);
          ins.emplace_back(b % 2 ? count * n : count);
          CUDA_CHECK(cudaMemsetAsync(outs.back().get(), 0xFF, outs.back().bytes(), compute));
          fill_input<<<256, 256, 0, compute>>>(ins.back().get(), ins.back().size(), 1000 + b, me);
          CUDA_CHECK_LAUNCH();
          if (b % 2) comm->reduce_scatter(outs.back().get(), ins.back().get(), count, DType::f32);
          else comm->allgather(outs.back().get(), ins.back().get(), count, DType::f32);
        }
        comm->wait(comm->ticket());
        CUDA_CHECK(cudaStreamSynchronize(compute));
        size_t wrong = 0;
        for (int b = 0; b < kBurst; ++b) {
          std::vector<float> got(outs[(size_t)b].size());
          CUDA_CHECK(cudaMemcpy(got.data(), outs[(size_t)b].get(), outs[(size_t)b].bytes(), cudaMemcpyDeviceToHost));
          const auto e = expected(b % 2 ? "rs" : "ag", counts[(size_t)b], 1000 + b, n, me);
          for (size_t i = 0; i < e.size(); ++i) wrong += std::memcmp(&got[i], &e[i], 4) != 0;
        }
        ck.expect(wrong == 0, tr + " burst of " + std::to_string(kBurst) + " collectives: " + std::to_string(wrong) +
                                  " elements wrong");
        comm->synchronize();
      }
      std::printf("TRANSPORT rank %d/%d: %d of %d checks pass (copy engines and host memory vs exact results and "
                  "NCCL)\n", nccl->rank(), nccl->size(), ck.cases - ck.failures, ck.cases);
      bad = ck.failures;
    }
    int any = 0;
    MPI_CHECK(MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD));
    CUDA_CHECK(cudaStreamDestroy(compute));
    return any ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_comm_transport: %s\n", e.what());
    return 1;
  }
}
