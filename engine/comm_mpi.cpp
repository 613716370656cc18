#include "engine/comm_mpi.h"

#include <climits>

#include "engine/bf16_host.h"
#include "engine/check.h"

namespace vit {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

namespace {
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT;
    case DType::bf16: return MPI_UINT16_T;  // raw bf16 patterns; sums go through bf16_sum below
  }
  fail("unknown DType");
}

// MPI user op: inout[i] = bf16(float(in[i]) + float(inout[i])), every partial sum rounded to bf16 as NCCL's
// bf16 reductions do, so the CPU backend shows what a bf16 gradient reduction costs in accuracy.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = bf16_bits_from_float(float_from_bf16_bits(a[i]) + float_from_bf16_bits(b[i]));
}
int checked_count(size_t n) {
  VIT_REQUIRE(n <= (size_t)INT_MAX, "MPI message of ", n, " elements exceeds the MPI int count limit");
  return (int)n;
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int inited = 0;
  MPI_CHECK(MPI_Initialized(&inited));
  if (!inited) {
    int provided = 0;
    // Loader threads never call MPI; only the main thread does.
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_ = true;
  }
  // Errors come back as codes and are reported by MPI_CHECK with file:line instead of aborting silently.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  MPI_Comm local;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
  MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
  MPI_CHECK(MPI_Comm_free(&local));
}

MpiSession::~MpiSession() {
  if (owns_) MPI_Finalize();
}

MpiComm::MpiComm(MPI_Comm comm) {
  MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
  MPI_CHECK(MPI_Op_create(&bf16_sum, 1, &bf16_sum_));
}

MpiComm::~MpiComm() {
  if (bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

MPI_Op MpiComm::sum_op(DType t) const { return t == DType::bf16 ? bf16_sum_ : MPI_SUM; }

void MpiComm::allgather(void* recv, const void* send, size_t count, DType t) {
  const size_t bytes = count * dtype_size(t);
  const void* src = send == static_cast<char*>(recv) + rank_ * bytes ? MPI_IN_PLACE : send;
  MPI_CHECK(MPI_Allgather(src, checked_count(count), mpi_type(t), recv, checked_count(count), mpi_type(t), comm_));
}

void MpiComm::reduce_scatter(void* recv, const void* send, size_t count, DType t) {
  MPI_CHECK(MPI_Reduce_scatter_block(send, recv, checked_count(count), mpi_type(t), sum_op(t), comm_));
}

void MpiComm::allreduce(void* buf, size_t count, DType t) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, checked_count(count), mpi_type(t), sum_op(t), comm_));
}

std::string MpiComm::describe() const { return "MPI " + std::to_string(size_) + " ranks"; }

}  // namespace vit
