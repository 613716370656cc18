// Learning-rate schedule: linear warm-up from 0, then cosine, linear or constant decay to min_lr
// (the floor), as timm's CosineLRScheduler / torch's LambdaLR recipes do it per optimizer step.
#pragma once
#include <cstdint>

#include "engine/config.h"

namespace vit {

// lr for 0-based optimizer step `step` of `total_steps`.
double lr_at(const SchedulerConfig& s, double base_lr, int64_t step, int64_t total_steps);

}  // namespace vit
