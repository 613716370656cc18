// Copy-engine collectives for the GPUs of one host (distributed.transport = "copy_engine", and "auto", the
// default, beyond a 2-GPU job): all-gather and reduce-scatter move their bytes with the GPUs' copy engines over
// NVLink instead of NCCL's kernels. (A 2-GPU job goes through host memory by default: engine/comm_host.h.)
//
// Why: NCCL's kernels move data through the SMs, and a GEMM running beside them loses 5-9% of its speed, while
// copy-engine writes of 3.6x the bytes cost it 2% (tools/bench_overlap, docs/benchmarks.md run 92). The 2-GPU
// ZeRO-3 step spends three quarters of its extra time in GEMMs slowed that way (run 90).
//
// How: every rank owns a staging buffer and a flag array, both mapped into the other ranks by CUDA IPC. One
// collective, all on the communication stream (so it is ordered against compute exactly like NcclComm's):
//   1. tell every peer "my staging is free for collective #seq" (a stream write into the peer's flags)
//   2. wait until every peer said the same (a stream wait on my flags)
//   3. copy my piece for each peer into that peer's staging (copy engine), then raise its "done #seq" flag
//   4. wait for every peer's "done #seq", then finish locally: all-gather copies the staged pieces into place,
//      reduce-scatter sums every rank's piece in rank order (engine/comm_local.h: one small kernel, fp32 sums).
// The flag writes are ordered after the copies by the stream and fenced by the driver, so a peer that sees
// "done" sees the bytes. Nothing waits on the host. Every rank must issue the same collectives in the same
// order (as for NCCL); the staging grows, collectively, when a larger collective comes (the first step).
// All-reduce (the optimizer's norm, no_shard) goes to the wrapped NCCL communicator on the same stream.
// Include from CUDA code only.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "engine/comm_local.h"
#include "engine/comm_nccl.h"

namespace vit {

class CopyEngineComm final : public StreamComm {
 public:
  // `inner` and `group` hold the same ranks in the same order (ncclCommSplit / MPI_Comm_split with the same
  // color and key); the group is duplicated. Fails with a one-line error, on every rank of the group together,
  // when the ranks are not GPUs of one host that can map each other's memory; `inner` is taken only on success.
  CopyEngineComm(std::unique_ptr<NcclComm>&& inner, MPI_Comm group, CommStream& cs);
  ~CopyEngineComm() override;
  CopyEngineComm(const CopyEngineComm&) = delete;
  CopyEngineComm& operator=(const CopyEngineComm&) = delete;

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  void allgather(void* recv, const void* send, size_t count, DType t) override;
  void reduce_scatter(void* recv, const void* send, size_t count, DType t) override;
  void allreduce(void* buf, size_t count, DType t) override { inner_->allreduce(buf, count, t); }
  std::string describe() const override;

  struct Mapped;  // a buffer of this rank shared with the peers (CUDA IPC)

 private:
  // Steps 1-3 of a collective: `piece(q)` is what goes to peer q (bytes each), into my slot of q's staging.
  template <class Piece>
  void exchange(size_t bytes, Piece piece);
  void reserve(size_t bytes_per_peer);  // collective: every rank calls it with the same size
  char* staged(int from) const;         // where peer `from`'s piece lands in my staging

  std::unique_ptr<NcclComm> inner_;
  OwnedMpiComm group_;
  std::unique_ptr<Mapped> flags_, staging_;  // after group_: released (collectively) before it is freed
  size_t slot_bytes_ = 0;  // staging per peer
  uint32_t seq_ = 0;
  StreamFlags flag_ops_{"copy_engine"};
};

// The shard group's communicator (ncclCommSplit with color and key): NCCL's own for transport = "nccl" or a
// single rank; copy engines for "copy_engine" and host memory for "host_memory" (engine/comm_host.h; a one-line
// error where they cannot work); for "auto", host memory in a job of 2 GPUs, copy engines otherwise (and where host
// memory fails), else NCCL, the reason for a fallback in *note. Collective over MPI_COMM_WORLD.
std::unique_ptr<Comm> shard_group_comm(const NcclComm& world, int color, int key, const std::string& transport,
                                       std::string* note = nullptr);

}  // namespace vit
