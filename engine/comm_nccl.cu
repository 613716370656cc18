#include "engine/comm_nccl.h"

#include <string>

namespace vit {
namespace {
ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
    case DType::i32: return ncclInt32;
  }
  return ncclFloat32;
}
}  // namespace

CommStream::CommStream(cudaStream_t compute) : compute_(compute) {
  CUDA_CHECK(cudaStreamCreateWithFlags(&comm_, cudaStreamNonBlocking));
  CUDA_CHECK(cudaEventCreateWithFlags(&compute_done_, cudaEventDisableTiming));
  for (cudaEvent_t& e : ring_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}

CommStream::~CommStream() {
  cudaStreamSynchronize(comm_);  // nothing may still read buffers freed after us
  for (cudaEvent_t e : ring_) cudaEventDestroy(e);
  cudaEventDestroy(compute_done_);
  cudaStreamDestroy(comm_);
}

void CommStream::after_compute() {
  CUDA_CHECK(cudaEventRecord(compute_done_, compute_));
  CUDA_CHECK(cudaStreamWaitEvent(comm_, compute_done_, 0));
}

Comm::Ticket CommStream::ticket() {
  const Comm::Ticket t = next_++;
  CUDA_CHECK(cudaEventRecord(ring_[t % kRing], comm_));
  return t;
}

void CommStream::wait(Comm::Ticket t) {
  if (t == 0) return;
  CUDA_CHECK(cudaStreamWaitEvent(compute_, ring_[t % kRing], 0));
}

NcclComm::NcclComm(ncclComm_t c, CommStream& cs) : StreamComm(cs), comm_(c) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
}

std::unique_ptr<NcclComm> NcclComm::world(CommStream& cs) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  ncclUniqueId id;
  if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
  ncclComm_t c = nullptr;
  NCCL_CHECK(ncclCommInitRank(&c, size, id, rank));
  return std::unique_ptr<NcclComm>(new NcclComm(c, cs));
}

std::unique_ptr<NcclComm> NcclComm::split(int color, int key) const {
  ncclComm_t c = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &c, nullptr));
  return std::unique_ptr<NcclComm>(new NcclComm(c, cs_));
}

NcclComm::~NcclComm() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclComm::allgather(void* recv, const void* send, size_t count, DType t) {
  cs_.after_compute();
  NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(t), comm_, cs_.stream()));
}

void NcclComm::reduce_scatter(void* recv, const void* send, size_t count, DType t) {
  cs_.after_compute();
  NCCL_CHECK(ncclReduceScatter(send, recv, count, nccl_type(t), ncclSum, comm_, cs_.stream()));
}

void NcclComm::allreduce(void* buf, size_t count, DType t) {
  cs_.after_compute();
  NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(t), ncclSum, comm_, cs_.stream()));
}

std::string NcclComm::describe() const { return "NCCL " + std::to_string(size_) + " ranks"; }

}  // namespace vit
