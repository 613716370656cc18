// Collectives behind one interface, so the FSDP manager is written once: MPI on the CPU backend (CI proves
// the sharding logic), NCCL on the GPU backend (on a communication stream of its own, so collectives overlap
// the compute; no host sync). All counts are elements; reductions are sums (bf16 sums round every partial
// sum to bf16, as NCCL does).
//
// Ordering with the compute stream: every collective runs after all compute work issued before it, so its
// inputs are ready; compute work sees a collective's result only after wait(ticket) for a ticket taken after
// that collective. Collectives of all the comms sharing a stream run in issue order. Where collectives block
// (MPI on the CPU) tickets are 0 and wait() does nothing.
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
  using Ticket = uint64_t;
  // Marks every collective issued so far; compute issued after wait(t) runs after them.
  virtual Ticket ticket() { return 0; }
  virtual void wait(Ticket) {}
  // Blocks until every collective issued so far has completed (host-visible).
  virtual void synchronize() = 0;
  virtual std::string describe() const = 0;
};

}  // namespace vit
