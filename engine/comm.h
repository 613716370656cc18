// Collectives behind one interface, so the FSDP manager is written once: MPI on the CPU backend (CI proves
// the sharding logic), NCCL on the GPU backend (ordered on a communication stream, no host sync).
// All counts are elements; reductions are sums.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace vit {

enum class DType { f32, f64, bf16, i32 };
size_t dtype_size(DType t);

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // recv (size() * count) <- every rank's send (count), in rank order. send may alias recv + rank()*count.
  virtual void allgather(void* recv, const void* send, size_t count, DType t) = 0;
  // recv (count) <- sum over ranks of send[rank() * count, +count). send holds size() * count.
  virtual void reduce_scatter(void* recv, const void* send, size_t count, DType t) = 0;
  virtual void allreduce(void* buf, size_t count, DType t) = 0;
  // Blocks until every collective issued so far has completed (host-visible).
  virtual void synchronize() = 0;
  virtual std::string describe() const = 0;
};

}  // namespace vit
