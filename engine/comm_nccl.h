// NCCL implementation of Comm (GPU backend). Collectives are queued on the given stream: ordered with
// the compute that produced and consumes their buffers, no host synchronisation. Bootstrapped over MPI
// (rank 0's unique id broadcast); sub-groups come from ncclCommSplit. Include from CUDA code only.
#pragma once
#include <mpi.h>
#include <nccl.h>

#include <memory>

#include "engine/comm.h"
#include "engine/cuda_check.h"

namespace vit {

class NcclComm final : public Comm {
 public:
  // All ranks of MPI_COMM_WORLD, one GPU each.
  static std::unique_ptr<NcclComm> world(cudaStream_t stream);
  // Ranks with the same color form one communicator (ncclCommSplit); key orders them.
  std::unique_ptr<NcclComm> split(int color, int key) const;
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(void* recv, const void* send, size_t count, DType t) override;
  void reduce_scatter(void* recv, const void* send, size_t count, DType t) override;
  void allreduce(void* buf, size_t count, DType t) override;
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  std::string describe() const override;

 private:
  NcclComm(ncclComm_t c, cudaStream_t s);
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace vit
