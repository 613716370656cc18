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

NcclComm::NcclComm(ncclComm_t c, cudaStream_t s) : comm_(c), stream_(s) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
}

std::unique_ptr<NcclComm> NcclComm::world(cudaStream_t stream) {
  int rank = 0, size = 1;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  ncclUniqueId id;
  if (rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
  ncclComm_t c = nullptr;
  NCCL_CHECK(ncclCommInitRank(&c, size, id, rank));
  return std::unique_ptr<NcclComm>(new NcclComm(c, stream));
}

std::unique_ptr<NcclComm> NcclComm::split(int color, int key) const {
  ncclComm_t c = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &c, nullptr));
  return std::unique_ptr<NcclComm>(new NcclComm(c, stream_));
}

NcclComm::~NcclComm() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclComm::allgather(void* recv, const void* send, size_t count, DType t) {
  NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(t), comm_, stream_));
}

void NcclComm::reduce_scatter(void* recv, const void* send, size_t count, DType t) {
  NCCL_CHECK(ncclReduceScatter(send, recv, count, nccl_type(t), ncclSum, comm_, stream_));
}

void NcclComm::allreduce(void* buf, size_t count, DType t) {
  NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(t), ncclSum, comm_, stream_));
}

std::string NcclComm::describe() const { return "NCCL " + std::to_string(size_) + " ranks"; }

}  // namespace vit
