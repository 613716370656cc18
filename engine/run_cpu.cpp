// The CPU backend's training entry: MPI collectives for FSDP, OpenMP threads shared among local ranks.
#include <mpi.h>
#include <omp.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "engine/comm_mpi.h"
#include "engine/ops_cpu.h"
#include "engine/run.h"
#include "engine/trainer.h"

namespace vit {

int run_training_cpu(const Config& cfg, const std::string& cfg_toml, int rank, int world, int local_ranks, bool eval_only) {
  // Ranks on one machine share its cores.
  const int cores = (int)std::max(1u, std::thread::hardware_concurrency());
  omp_set_num_threads(std::max(1, cores / std::max(1, local_ranks)));

  const DistributedConfig& dc = cfg.distributed;
  const Strategy st = parse_strategy(dc.strategy);
  const int outer = std::max(1, dc.dp_outer);
  const int shard = dc.dp_shard > 0 ? dc.dp_shard : world / outer;
  VIT_REQUIRE(shard * outer == world, "distributed.dp_shard (", shard, ") x distributed.dp_outer (", outer,
              ") must equal the number of ranks (", world, "): adjust them or the mpirun -np count");
  MPI_Comm shard_c = MPI_COMM_NULL, outer_c = MPI_COMM_NULL;
  std::unique_ptr<MpiComm> shard_comm, outer_comm;
  if (st == Strategy::no_shard) {
    // Every rank a full replica: the shard group is the rank alone, all ranks are replicas.
    shard_comm = std::make_unique<MpiComm>(MPI_COMM_SELF);
    if (world > 1) outer_comm = std::make_unique<MpiComm>(MPI_COMM_WORLD);
  } else {
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, rank / shard, rank, &shard_c));
    shard_comm = std::make_unique<MpiComm>(shard_c);
    if (outer > 1) {
      MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, rank % shard, rank, &outer_c));
      outer_comm = std::make_unique<MpiComm>(outer_c);
    }
  }
  int rc = 0;
  {
    CpuOps<float> ops;
    Trainer<CpuOps<float>> trainer(cfg, cfg_toml, ops, {shard_comm.get(), outer_comm.get()}, rank, world, eval_only);
    log0(rank, trainer.memory_plan().table("memory plan (CPU backend, activations per rank):"));
    rc = eval_only ? trainer.run_eval() : trainer.run();
  }
  shard_comm.reset();
  outer_comm.reset();
  if (shard_c != MPI_COMM_NULL) MPI_Comm_free(&shard_c);
  if (outer_c != MPI_COMM_NULL) MPI_Comm_free(&outer_c);
  return rc;
}

}  // namespace vit
