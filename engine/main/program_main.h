// The body shared by the programs vit_train and vit_eval (engine/main/*.cpp).
#pragma once
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/cli_args.h"
#include "engine/comm_mpi.h"
#include "engine/config.h"
#include "engine/run.h"
#include "engine/trainer.h"

namespace vit::program {

namespace detail {

// Every rank must run the same resolved config: compare hashes before any work.
inline void check_same_config(uint64_t hash, int rank, int world) {
  std::vector<unsigned long long> all(world);
  unsigned long long mine = hash;
  MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UNSIGNED_LONG_LONG, all.data(), 1, MPI_UNSIGNED_LONG_LONG, MPI_COMM_WORLD));
  for (int r = 0; r < world; ++r)
    VIT_REQUIRE(all[r] == all[0], "rank ", r, " resolved a different config than rank 0 (hash ", all[r], " vs ", all[0],
                "): every rank must get the same config file, overrides and environment");
  (void)rank;
}

inline std::string pick_device(const std::string& want, int rank) {
  int gpus = 0;
#if defined(VIT_WITH_CUDA)
  gpus = cuda_device_count();
#endif
  if (want == "cpu") return "cpu";
  if (want == "cuda") {
    VIT_REQUIRE(gpus > 0, "run.device = \"cuda\" but no usable CUDA GPU was found",
#if defined(VIT_WITH_CUDA)
                "",
#else
                " (this build has no CUDA backend: rebuild on a machine with nvcc)",
#endif
                ": use run.device=cpu or run.device=auto");
    return "cuda";
  }
  if (gpus > 0) return "cuda";
  log0(rank, "no CUDA GPU found: running on the CPU backend");
  return "cpu";
}

}  // namespace detail

// The whole program: MPI session, arguments, config (same on every rank), device choice, backend run.
inline int main(int argc, char** argv, const char* name, bool eval_only) {
  int world = 1;
  try {
    MpiSession mpi(&argc, &argv);
    world = mpi.size();
    const int rank = mpi.rank();
    CliArgs args = parse_cli_args(argc, argv);
    if (args.help) {
      if (rank == 0) std::printf("%s", cli_usage(name).c_str());
      return 0;
    }
    Config cfg = load_config(args.config_path, args.overrides);
    const std::string toml = to_toml(cfg);
    detail::check_same_config(config_hash(cfg), rank, world);
    if (args.print_config) {
      if (rank == 0) std::printf("%s", toml.c_str());
      return 0;
    }
    install_stop_handlers();
#if defined(VIT_WITH_CUDA)
    const char* backends = "cpu+cuda backends";
#else
    const char* backends = "cpu backend only";
#endif
    log0(rank, std::string(name) + " (" + backends + "), " + std::to_string(world) + " rank(s), config " +
                   args.config_path + "\n---- resolved config ----\n" + toml + "-------------------------");
    const std::string device = detail::pick_device(cfg.run.device, rank);
    // Ranks per machine (for CPU threads and the GPU each rank takes).
    int local = 1;
    {
      MPI_Comm node;
      MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
      MPI_CHECK(MPI_Comm_size(node, &local));
      MPI_CHECK(MPI_Comm_free(&node));
    }
#if defined(VIT_WITH_CUDA)
    if (device == "cuda") return run_training_cuda(cfg, toml, rank, world, mpi.local_rank(), eval_only);
#endif
    return run_training_cpu(cfg, toml, rank, world, local, eval_only);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    std::fflush(stderr);
    // Other ranks may be waiting in a collective: take the whole job down rather than hang.
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized && world > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

}  // namespace vit::program
