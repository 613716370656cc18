#include "engine/comm_ce.h"

#include <exception>
#include <vector>

#include "engine/check.h"
#include "engine/comm_host.h"

namespace vit {

// A device buffer of this rank, zeroed, and every peer's buffer of the same role mapped here (CUDA IPC).
// Built and destroyed collectively over the group.
struct CopyEngineComm::Mapped {
  void* mine = nullptr;
  std::vector<void*> peer;  // peer[q]: rank q's buffer (nullptr at my own index)
  MPI_Comm group;

  Mapped(size_t bytes, MPI_Comm g, int me, int n) : peer((size_t)n, nullptr), group(g) {
    CUDA_CHECK(cudaMalloc(&mine, bytes));
    CUDA_CHECK(cudaMemset(mine, 0, bytes));
    CUDA_CHECK(cudaDeviceSynchronize());  // zeroed before any peer can write into it
    cudaIpcMemHandle_t h{};
    CUDA_CHECK(cudaIpcGetMemHandle(&h, mine));
    std::vector<cudaIpcMemHandle_t> all((size_t)n);
    MPI_CHECK(MPI_Allgather(&h, sizeof h, MPI_BYTE, all.data(), sizeof h, MPI_BYTE, group));
    int ok = 1, failed_peer = -1;
    cudaError_t why = cudaSuccess;
    for (int q = 0; q < n && ok; ++q) {
      if (q == me) continue;
      why = cudaIpcOpenMemHandle(&peer[(size_t)q], all[(size_t)q], cudaIpcMemLazyEnablePeerAccess);
      if (why != cudaSuccess) ok = 0, failed_peer = q, peer[(size_t)q] = nullptr, (void)cudaGetLastError();
    }
    // Every rank learns whether all could map all, so they all fail together (no rank left waiting).
    int all_ok = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, group));
    if (!all_ok) {
      release();
      fail("distributed.transport = \"copy_engine\": ",
           ok ? std::string("another rank") : "rank " + std::to_string(me),
           " cannot map a peer GPU's memory", ok ? "" : " (rank " + std::to_string(failed_peer) + ": " +
           cudaGetErrorString(why) + ")", ": the GPUs of a shard group must reach each other (NVLink or PCIe "
           "peer access); use transport = \"nccl\"");
    }
  }
  void release() {
    for (void*& p : peer)
      if (p) cudaIpcCloseMemHandle(p), p = nullptr;
    if (std::uncaught_exceptions() == 0) MPI_Barrier(group);
    if (mine) cudaFree(mine), mine = nullptr;
  }
  ~Mapped() { release(); }  // the peers stop using my buffer (their streams are synchronized) before it is freed
  Mapped(const Mapped&) = delete;
  Mapped& operator=(const Mapped&) = delete;
};

CopyEngineComm::CopyEngineComm(std::unique_ptr<NcclComm>&& inner, MPI_Comm group, CommStream& cs) : StreamComm(cs) {
  MPI_CHECK(MPI_Comm_dup(group, &group_.c));
  const int n = inner->size(), me = inner->rank();
  int mpi_n = 0, mpi_me = 0;
  MPI_CHECK(MPI_Comm_size(group_.c, &mpi_n));
  MPI_CHECK(MPI_Comm_rank(group_.c, &mpi_me));
  VIT_ASSERT(mpi_n == n && mpi_me == me, "copy-engine comm: MPI group ", mpi_me, "/", mpi_n, " vs NCCL ", me, "/", n);
  require_one_host(group_.c, n, "copy_engine");
  flags_ = std::make_unique<Mapped>(sizeof(uint32_t) * 2 * kMaxLocalRanks, group_.c, me, n);
  inner_ = std::move(inner);  // only now: a constructor that fails leaves the caller its NCCL comm
}

CopyEngineComm::~CopyEngineComm() {
  cudaStreamSynchronize(cs_.stream());
  staging_.reset();
  flags_.reset();
}

std::string CopyEngineComm::describe() const { return "copy engines, " + std::to_string(size()) + " GPUs of one host"; }

void CopyEngineComm::reserve(size_t bytes_per_peer) {
  if (bytes_per_peer <= slot_bytes_) return;
  // Every rank reaches this at the same collective. Synchronized, no copy into anyone's old staging is in flight.
  CUDA_CHECK(cudaDeviceSynchronize());
  staging_.reset();
  slot_bytes_ = (bytes_per_peer + (1u << 20) - 1) & ~size_t((1u << 20) - 1);
  staging_ = std::make_unique<Mapped>(slot_bytes_ * (size_t)(size() - 1), group_.c, rank(), size());
}

char* CopyEngineComm::staged(int from) const {
  return static_cast<char*>(staging_->mine) + slot_bytes_ * (size_t)(from < rank() ? from : from - 1);
}

template <class Piece>
void CopyEngineComm::exchange(size_t bytes, Piece piece) {
  reserve(bytes);
  cs_.after_compute();
  const uint32_t s = ++seq_;
  const int n = size(), me = rank();
  cudaStream_t st = cs_.stream();
  auto flag = [&](void* base, int kind, int who) {  // kind 0: staging free, 1: piece delivered
    return (CUdeviceptr)(static_cast<uint32_t*>(base) + kind * kMaxLocalRanks + who);
  };
  for (int q = 0; q < n; ++q)
    if (q != me) flag_ops_.write(st, flag(flags_->peer[(size_t)q], 0, me), s);
  for (int q = 0; q < n; ++q)
    if (q != me) flag_ops_.wait_geq(st, flag(flags_->mine, 0, q), s);
  for (int q = 0; q < n; ++q) {
    if (q == me) continue;
    char* dst = static_cast<char*>(staging_->peer[(size_t)q]) + slot_bytes_ * (size_t)(me < q ? me : me - 1);
    CUDA_CHECK(cudaMemcpyAsync(dst, piece(q), bytes, cudaMemcpyDeviceToDevice, st));
    flag_ops_.write(st, flag(flags_->peer[(size_t)q], 1, me), s);  // fenced after the copy's bytes
  }
  for (int q = 0; q < n; ++q)
    if (q != me) flag_ops_.wait_geq(st, flag(flags_->mine, 1, q), s);
}

void CopyEngineComm::allgather(void* recv, const void* send, size_t count, DType t) {
  if (count == 0) return;  // the same on every rank
  const size_t bytes = count * dtype_size(t);
  char* out = static_cast<char*>(recv);
  exchange(bytes, [&](int) { return send; });
  cudaStream_t st = cs_.stream();
  for (int q = 0; q < size(); ++q) {
    if (q == rank()) {
      if (out + bytes * (size_t)q != send)
        CUDA_CHECK(cudaMemcpyAsync(out + bytes * (size_t)q, send, bytes, cudaMemcpyDeviceToDevice, st));
    } else {
      CUDA_CHECK(cudaMemcpyAsync(out + bytes * (size_t)q, staged(q), bytes, cudaMemcpyDeviceToDevice, st));
    }
  }
}

void CopyEngineComm::reduce_scatter(void* recv, const void* send, size_t count, DType t) {
  if (count == 0) return;
  const size_t bytes = count * dtype_size(t);
  const char* in = static_cast<const char*>(send);
  exchange(bytes, [&](int q) { return in + bytes * (size_t)q; });
  const void* pieces[kMaxLocalRanks];
  for (int q = 0; q < size(); ++q) pieces[q] = q == rank() ? in + bytes * (size_t)rank() : staged(q);
  sum_in_order(cs_.stream(), recv, pieces, size(), count, t);
}

std::unique_ptr<Comm> shard_group_comm(const NcclComm& world, int color, int key, const std::string& transport,
                                       std::string* note) {
  std::unique_ptr<NcclComm> nccl = world.split(color, key);  // collective over the world: every rank, always
  if (transport == "nccl" || nccl->size() == 1) return nccl;
  OwnedMpiComm g;
  MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, color, key, &g.c));
  // The constructors' checks fail on every rank of the group together, so "auto" falls back together (no
  // world-wide collective from here on, since other groups may have succeeded).
  std::string why;
  // Host memory where asked for, and for "auto" in a job of 2 GPUs: there it leaves NVLink asleep and was
  // measured faster at the power cap (docs/benchmarks.md, runs 103-104). (With outer groups their NCCL collectives
  // wake the links anyway.) The group's NCCL communicator goes (destroyed alike on the group's ranks): none of its
  // collectives may run, they would wake the links.
  if (transport == "host_memory" || (transport == "auto" && nccl->size() == 2 && world.size() == 2)) {
    try {
      return std::make_unique<HostMemoryComm>(g.c, world.comm_stream());
    } catch (const Error& e) {
      if (transport != "auto") throw;
      why = std::string("host memory not usable (") + e.what() + "); ";
    }
  }
  try {
    std::unique_ptr<Comm> ce = std::make_unique<CopyEngineComm>(std::move(nccl), g.c, world.comm_stream());
    if (note && !why.empty()) *note = why + "copy engines instead";
    return ce;
  } catch (const Error& e) {
    if (transport != "auto" || !nccl) throw;  // a failed constructor leaves the NCCL comm untouched
    if (note) *note = why + "copy engines not usable, NCCL instead: " + e.what();
    return nccl;
  }
}

}  // namespace vit
