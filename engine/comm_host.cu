#include "engine/comm_host.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "engine/check.h"

namespace vit {

namespace {

constexpr const char* kKey = "distributed.transport = \"host_memory\"";

}  // namespace

// The region every rank maps: one page of counters, then per ordered pair (from, to) a ring of kSlots chunks.
// ready[from][to] is written only by `from`, taken[to][from] only by `to`.
struct HostMemoryComm::Shared {
  static constexpr int kSlots = 4;
  static constexpr size_t kHeader = 4096;
  static constexpr size_t kBudget = size_t{64} << 20;  // /dev/shm is often small (64 MiB in a default container)
  char* host = nullptr;
  char* dev = nullptr;  // the same memory as the GPU addresses it
  size_t bytes = 0, chunk = 0;
  int n = 0;
  bool pinned = false;

  Shared(MPI_Comm g, int me, int n_) : n(n_) {
    const size_t pairs = (size_t)n * (size_t)(n - 1);
    chunk = std::clamp<size_t>(kBudget / (pairs * kSlots) & ~((size_t{64} << 10) - 1), size_t{64} << 10,
                               size_t{2} << 20);
    bytes = kHeader + pairs * kSlots * chunk;
    // Rank 0 makes the region (reserved with posix_fallocate: a full /dev/shm is an error here, not a SIGBUS
    // later), the others open it by name; the name is unlinked once everyone has it open.
    char name[64] = {};
    int err = 0, fd = -1;
    if (me == 0) {
      const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
      std::snprintf(name, sizeof name, "/vit_hostmem_%d_%llx", (int)getpid(), (unsigned long long)t);
      fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
      if (fd < 0) err = errno;
      else if (int rc = posix_fallocate(fd, 0, (off_t)bytes); rc != 0) err = rc;
    }
    MPI_CHECK(MPI_Bcast(name, sizeof name, MPI_CHAR, 0, g));
    MPI_CHECK(MPI_Bcast(&err, 1, MPI_INT, 0, g));
    if (err) {
      if (fd >= 0) close(fd), shm_unlink(name);
      fail(kKey, ": cannot make ", bytes >> 20, " MiB of shared memory in /dev/shm (", std::strerror(err),
           "): give the job a larger /dev/shm (docker run --shm-size) or use transport = \"copy_engine\"");
    }
    if (me != 0) fd = shm_open(name, O_RDWR, 0);
    std::string why;
    if (fd < 0) {
      why = std::string("shm_open: ") + std::strerror(errno);
    } else {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) why = std::string("mmap: ") + std::strerror(errno);
      else host = static_cast<char*>(p);
      close(fd);
    }
    if (host) {
      const cudaError_t e = cudaHostRegister(host, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable);
      if (e != cudaSuccess) {
        why = std::string("cudaHostRegister: ") + cudaGetErrorString(e);
        (void)cudaGetLastError();
      } else {
        pinned = true;
        void* d = nullptr;
        // Not CUDA_CHECK: a rank that threw here would leave the others waiting in the all-reduce below.
        if (const cudaError_t e2 = cudaHostGetDevicePointer(&d, host, 0); e2 != cudaSuccess)
          why = std::string("cudaHostGetDevicePointer: ") + cudaGetErrorString(e2), (void)cudaGetLastError();
        dev = static_cast<char*>(d);
      }
    }
    // Every rank has tried to open the region once this returns: the name can go.
    int ok = dev ? 1 : 0, all_ok = 0;
    MPI_CHECK(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, g));
    if (me == 0) shm_unlink(name);
    if (!all_ok) {
      release();
      fail(kKey, ": ", ok ? std::string("another rank") : "rank " + std::to_string(me), " cannot map and pin the ",
           "shared host buffer", ok ? "" : " (" + why + ")", ": check /dev/shm and the locked-memory limit ",
           "(ulimit -l), or use transport = \"copy_engine\"");
    }
  }
  void release() {
    if (pinned) cudaHostUnregister(host), pinned = false;
    if (host) munmap(host, bytes), host = nullptr;
  }
  ~Shared() { release(); }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  size_t pair(int from, int to) const { return (size_t)from * (size_t)(n - 1) + (size_t)(to < from ? to : to - 1); }
  char* slot(int from, int to, uint32_t c) const { return host + kHeader + (pair(from, to) * kSlots + c % kSlots) * chunk; }
  CUdeviceptr ready(int from, int to) const { return (CUdeviceptr)(dev + sizeof(uint32_t) * (from * kMaxLocalRanks + to)); }
  CUdeviceptr taken(int to, int from) const {
    return (CUdeviceptr)(dev + sizeof(uint32_t) * (kMaxLocalRanks * kMaxLocalRanks + to * kMaxLocalRanks + from));
  }
};

struct HostMemoryComm::Streams {
  cudaStream_t land = nullptr;
  cudaEvent_t start = nullptr, landed = nullptr;
  Streams() {
    cudaError_t e = cudaStreamCreateWithFlags(&land, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&start, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&landed, cudaEventDisableTiming);
    if (e != cudaSuccess) destroy();  // a throwing constructor gets no destructor
    CUDA_CHECK(e);
  }
  void destroy() {
    if (land) cudaStreamSynchronize(land), cudaStreamDestroy(land), land = nullptr;
    if (start) cudaEventDestroy(start), start = nullptr;
    if (landed) cudaEventDestroy(landed), landed = nullptr;
  }
  ~Streams() { destroy(); }
  Streams(const Streams&) = delete;
  Streams& operator=(const Streams&) = delete;
};

HostMemoryComm::HostMemoryComm(MPI_Comm group, CommStream& cs) : StreamComm(cs) {
  MPI_CHECK(MPI_Comm_dup(group, &group_.c));
  MPI_CHECK(MPI_Comm_size(group_.c, &size_));
  MPI_CHECK(MPI_Comm_rank(group_.c, &rank_));
  require_one_host(group_.c, size_, "host_memory");
  shm_ = std::make_unique<Shared>(group_.c, rank_, size_);
  st_ = std::make_unique<Streams>();
}

HostMemoryComm::~HostMemoryComm() {
  // The region stays mapped in the peers' processes: only this rank's streams must be done with it.
  cudaStreamSynchronize(cs_.stream());
  st_.reset();
  shm_.reset();
}

void HostMemoryComm::synchronize() {
  StreamComm::synchronize();
  CUDA_CHECK(cudaStreamSynchronize(st_->land));
}

std::string HostMemoryComm::describe() const {
  return "host memory (copy engines over PCIe, NVLink idle), " + std::to_string(size()) + " GPUs of one host";
}

void HostMemoryComm::reserve(size_t bytes_per_peer) {
  if (bytes_per_peer <= land_bytes_) return;
  synchronize();  // nothing in flight lands in the old buffer (the first steps only)
  land_bytes_ = (bytes_per_peer + (1u << 20) - 1) & ~size_t((1u << 20) - 1);
  landing_ = gpu::DeviceBuffer<char>();
  landing_ = gpu::DeviceBuffer<char>(land_bytes_ * (size_t)(size() - 1));
}

char* HostMemoryComm::landing(int from) const {
  return landing_.get() + land_bytes_ * (size_t)(from < rank() ? from : from - 1);
}

template <class Piece, class Land>
void HostMemoryComm::exchange(size_t bytes, Piece piece, Land land) {
  cs_.after_compute();
  cudaStream_t up = cs_.stream(), down = st_->land;
  // The landing may overwrite its destinations only once the communication stream got here (the compute
  // before this collective and the collectives before it are done with them).
  CUDA_CHECK(cudaEventRecord(st_->start, up));
  CUDA_CHECK(cudaStreamWaitEvent(down, st_->start, 0));
  const Shared& m = *shm_;
  const int n = size(), me = rank();
  for (size_t off = 0; off < bytes; off += m.chunk) {
    const size_t len = std::min(m.chunk, bytes - off);
    const uint32_t c = ++chunk_seq_;
    for (int q = 0; q < n; ++q) {  // up: into my slot for q, once q took the chunk that used it last
      if (q == me) continue;
      if (c > (uint32_t)Shared::kSlots) flag_ops_.wait_geq(up, m.taken(q, me), c - Shared::kSlots);
      CUDA_CHECK(cudaMemcpyAsync(m.slot(me, q, c), static_cast<const char*>(piece(q)) + off, len,
                                 cudaMemcpyDeviceToHost, up));
      flag_ops_.write(up, m.ready(me, q), c);  // fenced after the copy's bytes
    }
    for (int p = 0; p < n; ++p) {  // down: p's chunk for me, then the slot is p's again
      if (p == me) continue;
      flag_ops_.wait_geq(down, m.ready(p, me), c);
      CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(land(p)) + off, m.slot(p, me, c), len, cudaMemcpyHostToDevice,
                                 down));
      flag_ops_.write(down, m.taken(me, p), c);
    }
  }
  CUDA_CHECK(cudaEventRecord(st_->landed, down));
  CUDA_CHECK(cudaStreamWaitEvent(up, st_->landed, 0));
}

void HostMemoryComm::sum_landed(void* recv, const void* own, size_t count, DType t) {
  const void* pieces[kMaxLocalRanks];
  for (int r = 0; r < size(); ++r) pieces[r] = r == rank() ? own : landing(r);
  sum_in_order(cs_.stream(), recv, pieces, size(), count, t);
}

void HostMemoryComm::allgather(void* recv, const void* send, size_t count, DType t) {
  if (count == 0) return;  // the same on every rank
  const size_t bytes = count * dtype_size(t);
  char* out = static_cast<char*>(recv);
  exchange(bytes, [&](int) { return send; }, [&](int from) { return out + bytes * (size_t)from; });
  if (out + bytes * (size_t)rank() != send)
    CUDA_CHECK(cudaMemcpyAsync(out + bytes * (size_t)rank(), send, bytes, cudaMemcpyDeviceToDevice, cs_.stream()));
}

void HostMemoryComm::reduce_scatter(void* recv, const void* send, size_t count, DType t) {
  if (count == 0) return;
  const size_t bytes = count * dtype_size(t);
  reserve(bytes);
  const char* in = static_cast<const char*>(send);
  exchange(bytes, [&](int q) { return in + bytes * (size_t)q; }, [&](int from) { return landing(from); });
  sum_landed(recv, in + bytes * (size_t)rank(), count, t);
}

void HostMemoryComm::allreduce(void* buf, size_t count, DType t) {
  if (count == 0) return;
  const size_t bytes = count * dtype_size(t);
  reserve(bytes);
  exchange(bytes, [&](int) { return buf; }, [&](int from) { return landing(from); });
  sum_landed(buf, buf, count, t);
}

}  // namespace vit
