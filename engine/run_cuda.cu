// The CUDA backend's training entry.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>

#include "engine/check.h"
#include "engine/comm_ce.h"
#include "engine/comm_nccl.h"
#include "engine/ops_cuda.h"
#include "engine/run.h"
#include "engine/trainer.h"

namespace vit {

int cuda_device_count() {
  int n = 0;
  // No driver / no device is an error code here, and it means "use the CPU", not a failure.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return 0;
  }
  return n;
}

int rank_device(int local_rank, int rank) {
  const int gpus = cuda_device_count();
  VIT_REQUIRE(gpus > 0, "no CUDA device visible to rank ", rank);
  return local_rank % gpus;
}

int run_training_cuda(const Config& cfg, const std::string& cfg_toml, int rank, int world, int local_rank, bool eval_only) {
  const int device = rank_device(local_rank, rank);
  CudaOps ops(device);
  const DistributedConfig& dc = cfg.distributed;
  const Strategy st = parse_strategy(dc.strategy);
  const int outer = std::max(1, dc.dp_outer);
  const int shard = dc.dp_shard > 0 ? dc.dp_shard : world / outer;
  VIT_REQUIRE(shard * outer == world, "distributed.dp_shard (", shard, ") x distributed.dp_outer (", outer,
              ") must equal the number of ranks (", world, "): adjust them or the mpirun -np count");
  CommStream comm_stream(ops.stream());  // outlives the comms below
  auto world_comm = NcclComm::world(comm_stream);
  std::unique_ptr<Comm> shard_comm;
  std::unique_ptr<NcclComm> outer_comm;
  if (st == Strategy::no_shard) {
    shard_comm = world_comm->split(rank, 0);  // each rank alone
    if (world > 1) outer_comm = world_comm->split(0, rank);
  } else {
    std::string note;
    shard_comm = shard_group_comm(*world_comm, rank / shard, rank, dc.transport, &note);
    if (!note.empty()) log0(rank, note);
    if (outer > 1) outer_comm = world_comm->split(rank % shard, rank);
  }
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  log0(rank, fmt("GPU backend: %s (%d SMs, %.0f GiB) per rank, NCCL world of %d; shard group: %s", prop.name,
                 prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, world, shard_comm->describe().c_str()));
  int rc = 0;
  {
    Trainer<CudaOps> trainer(cfg, cfg_toml, ops, {shard_comm.get(), outer_comm.get()}, rank, world, eval_only);
    log0(rank, trainer.memory_plan().table("memory plan (GPU, activations per rank):"));
    rc = eval_only ? trainer.run_eval() : trainer.run();
    ops.synchronize();
  }
  return rc;
}

}  // namespace vit
