// Entry points of the two backends for the programs (vit_train): each builds its Ops and data-parallel
// comms and runs the Trainer. The CUDA one exists only in builds with the CUDA backend.
#pragma once
#include <string>

#include "engine/config.h"

namespace vit {

// eval_only: vit_eval (evaluate a checkpoint or model.init_from on the validation split).
int run_training_cpu(const Config& cfg, const std::string& cfg_toml, int rank, int world, int local_ranks,
                     bool eval_only = false);
#if defined(VIT_WITH_CUDA)
int run_training_cuda(const Config& cfg, const std::string& cfg_toml, int rank, int world, int local_rank,
                      bool eval_only = false);
// Number of usable CUDA devices; 0 (not an error) when there is no driver or no GPU.
int cuda_device_count();
// The GPU a rank uses: one per rank on its node (local rank modulo the visible devices); throws if there is none.
int rank_device(int local_rank, int rank);
#endif

}  // namespace vit
