// MPI implementation of Comm (CPU backend) plus the process-wide MPI session (RAII init/finalize).
#pragma once
#include <mpi.h>

#include <memory>

#include "engine/comm.h"

namespace vit {

// MPI_Init / MPI_Finalize for the process. One per program, created first in main.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
  bool owns_ = false;
};

class MpiComm final : public Comm {
 public:
  // Takes a duplicate of `comm`, freed on destruction.
  explicit MpiComm(MPI_Comm comm);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(void* recv, const void* send, size_t count, DType t) override;
  void reduce_scatter(void* recv, const void* send, size_t count, DType t) override;
  void allreduce(void* buf, size_t count, DType t) override;
  void synchronize() override {}
  std::string describe() const override;
  MPI_Comm handle() const { return comm_; }

 private:
  MPI_Op sum_op(DType t) const;
  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Op bf16_sum_ = MPI_OP_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace vit
