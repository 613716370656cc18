// Collectives through pinned host memory (distributed.transport = "host_memory"): the copy engines move every
// piece over PCIe into a buffer shared by the ranks' processes and out of it into the peer, so the GPUs' NVLink
// stays idle.
//
// Why: at the power cap an awake NVLink costs the SMs ~2.5% of their clock whatever the bytes (2x H200, 700 W:
// docs/benchmarks.md runs 98 and 101), and the driver lets a link sleep only after 50 ms idle, longer than a
// training step, so any transport over NVLink pays it; the same copies from host memory cost nothing (run 101).
// A 2-GPU ZeRO-3 ViT-B step moves ~6 GB/s per GPU each way, a fraction of PCIe's bandwidth.
//
// How: a POSIX shared-memory region, pinned and mapped by every rank, holds for every ordered pair of ranks a
// ring of chunk slots and two counters: ready (the sender copied chunk c in) and taken (the receiver copied it
// out). A collective cuts each piece into chunks numbered alike on every rank. On the communication stream the
// sender waits for a free slot, copies a chunk up and raises ready; on a landing stream the receiver waits for
// ready, copies the chunk down into place and raises taken, so chunk c+1 goes up while chunk c comes down. The
// communication stream then waits for the landing and finishes on the GPU: reduce-scatters and all-reduces sum
// in rank order (every rank's all-reduce is bit-identical). Nothing waits on the host, and no NCCL call is made
// (its all-reduce would wake the links). Every rank must issue the same collectives in the same order.
// Include from CUDA code only.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "engine/comm_local.h"
#include "engine/comm_nccl.h"
#include "engine/cuda_buffer.h"

namespace vit {

class HostMemoryComm final : public StreamComm {
 public:
  // Collective over `group` (duplicated), whose ranks must be GPUs of one host; fails on every rank together,
  // with the fix, when the shared memory cannot be made or pinned.
  HostMemoryComm(MPI_Comm group, CommStream& cs);
  ~HostMemoryComm() override;
  HostMemoryComm(const HostMemoryComm&) = delete;
  HostMemoryComm& operator=(const HostMemoryComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allgather(void* recv, const void* send, size_t count, DType t) override;
  void reduce_scatter(void* recv, const void* send, size_t count, DType t) override;
  void allreduce(void* buf, size_t count, DType t) override;
  void synchronize() override;  // the landing stream too
  std::string describe() const override;

  struct Shared;  // the shared, pinned host region
  struct Streams;  // the landing stream and the events that join it to the communication stream

 private:
  // Every rank's piece(q) (bytes) to rank q, landing there at land(p) for the sender p; on return the
  // communication stream is past every landing on this rank.
  template <class Piece, class Land>
  void exchange(size_t bytes, Piece piece, Land land);
  void reserve(size_t bytes_per_peer);  // the device landing of reductions (local: grows without the peers)
  char* landing(int from) const;
  // recv[i] = sum over ranks r in rank order of (r == rank() ? own : landing(r))[i].
  void sum_landed(void* recv, const void* own, size_t count, DType t);

  OwnedMpiComm group_;
  int rank_ = 0, size_ = 1;
  std::unique_ptr<Shared> shm_;
  std::unique_ptr<Streams> st_;
  gpu::DeviceBuffer<char> landing_;  // (size - 1) slots of land_bytes_
  size_t land_bytes_ = 0;
  uint32_t chunk_seq_ = 0;   // chunks exchanged so far (the same on every rank)
  StreamFlags flag_ops_{"host_memory"};
};

}  // namespace vit
