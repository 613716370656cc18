// What the one-host GPU transports (copy engines over NVLink, engine/comm_ce.h; host memory over PCIe,
// engine/comm_host.h) share: an owned MPI communicator, the check that a group's ranks are on one host, the
// stream-ordered flags their handshakes use, and the sum that finishes their reductions. Include from CUDA code only.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <mpi.h>

#include <cstdint>
#include <string>

#include "engine/check.h"
#include "engine/comm.h"

namespace vit {

constexpr int kMaxLocalRanks = 8;  // GPUs of one host

// An MPI communicator owned (freed on destruction, also when a constructor fails part way).
struct OwnedMpiComm {
  MPI_Comm c = MPI_COMM_NULL;
  OwnedMpiComm() = default;
  OwnedMpiComm(const OwnedMpiComm&) = delete;
  OwnedMpiComm& operator=(const OwnedMpiComm&) = delete;
  ~OwnedMpiComm() {
    if (c != MPI_COMM_NULL) MPI_Comm_free(&c);
  }
};

// Fails (on every rank of `group` together) unless its n ranks share one host; `transport` names the setting.
inline void require_one_host(MPI_Comm group, int n, const std::string& transport) {
  int me = 0;
  MPI_CHECK(MPI_Comm_rank(group, &me));
  MPI_Comm local = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(group, MPI_COMM_TYPE_SHARED, me, MPI_INFO_NULL, &local));
  int local_n = 0;
  MPI_CHECK(MPI_Comm_size(local, &local_n));
  MPI_CHECK(MPI_Comm_free(&local));
  VIT_REQUIRE(local_n == n && n <= kMaxLocalRanks, "distributed.transport = \"", transport, "\" needs every rank of ",
              "a shard group on one host (at most ", kMaxLocalRanks, " GPUs); this group of ", n, " ranks has ",
              local_n, " on this host: use transport = \"nccl\" or a dp_shard of the GPUs per host");
}

// The driver's stream memory operations, looked up once (no libcuda link): a stream raises a flag, or waits until
// one reaches a value (a cyclic >=). The flag may be a peer GPU's memory or mapped host memory.
class StreamFlags {
 public:
  // Fails naming distributed.transport = `transport` where the driver lacks them.
  explicit StreamFlags(const std::string& transport);
  void write(cudaStream_t s, CUdeviceptr flag, uint32_t value) const;  // fenced after the stream's earlier work
  void wait_geq(cudaStream_t s, CUdeviceptr flag, uint32_t value) const;

 private:
  using Op = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
  Op write_ = nullptr, wait_ = nullptr;
};

// out[i] = in[0][i] + in[1][i] + ... + in[n-1][i] on `s`, in that order (fp32 sums for bf16): every rank that sums
// the same pieces in rank order gets the same bits. `out` may be one of the inputs. f32, f64, bf16, i32; n <= 8.
void sum_in_order(cudaStream_t s, void* out, const void* const* in, int n, size_t count, DType t);

}  // namespace vit
