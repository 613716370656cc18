// NCCL implementation of Comm (GPU backend). Collectives are queued on a communication stream of their own
// (shared by all the comms split from one world, so they run in issue order on every rank); each one first
// waits for the compute issued before it (an event), and compute waits for a collective only through
// wait(ticket), so gathers and reduce-scatters overlap the layers around them. No host synchronisation.
// Bootstrapped over MPI (rank 0's unique id broadcast); sub-groups come from ncclCommSplit. Include from
// CUDA code only.
#pragma once
#include <mpi.h>
#include <nccl.h>

#include <array>
#include <memory>

#include "engine/comm.h"
#include "engine/cuda_check.h"

namespace vit {

// The communication stream and the events that order it against the compute stream.
class CommStream {
 public:
  explicit CommStream(cudaStream_t compute);
  ~CommStream();
  CommStream(const CommStream&) = delete;
  CommStream& operator=(const CommStream&) = delete;
  cudaStream_t stream() const { return comm_; }
  void after_compute();         // the comm stream waits for the compute issued so far
  Comm::Ticket ticket();        // an event after the collectives issued so far
  void wait(Comm::Ticket t);    // the compute stream waits for that event
  void synchronize() { CUDA_CHECK(cudaStreamSynchronize(comm_)); }

 private:
  // Tickets reuse a ring of events. Waiting on a ticket whose event was re-recorded since waits for a later
  // point of the same stream: still correct, only less overlap; 64 is far more than one step keeps in flight.
  static constexpr int kRing = 64;
  cudaStream_t compute_ = nullptr, comm_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;
  std::array<cudaEvent_t, kRing> ring_{};
  Comm::Ticket next_ = 1;  // 0 means "nothing to wait for"
};

// A comm whose collectives run on a CommStream (NCCL's and the one-host transports): its tickets are points on
// that stream.
class StreamComm : public Comm {
 public:
  explicit StreamComm(CommStream& cs) : cs_(cs) {}
  Ticket ticket() override { return cs_.ticket(); }
  void wait(Ticket t) override { cs_.wait(t); }
  void synchronize() override { cs_.synchronize(); }
  CommStream& comm_stream() const { return cs_; }

 protected:
  CommStream& cs_;
};

class NcclComm final : public StreamComm {
 public:
  // All ranks of MPI_COMM_WORLD, one GPU each; collectives go on `cs` (which must outlive the comm).
  static std::unique_ptr<NcclComm> world(CommStream& cs);
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
  std::string describe() const override;

 private:
  NcclComm(ncclComm_t c, CommStream& cs);
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace vit
