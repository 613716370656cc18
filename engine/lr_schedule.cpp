#include "engine/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "engine/check.h"

namespace vit {

double lr_at(const SchedulerConfig& s, double base_lr, int64_t step, int64_t total_steps) {
  if (s.warmup_steps > 0 && step < s.warmup_steps) return base_lr * (double)(step + 1) / (double)s.warmup_steps;
  const double floor = std::min(s.min_lr, base_lr);
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - s.warmup_steps);
  const double t = std::clamp((double)(step - s.warmup_steps) / (double)decay_steps, 0.0, 1.0);
  if (s.name == "constant") return base_lr;
  if (s.name == "linear") return floor + (base_lr - floor) * (1.0 - t);
  if (s.name == "cosine") return floor + 0.5 * (base_lr - floor) * (1.0 + std::cos(M_PI * t));
  fail("scheduler.name = \"", s.name, "\" is not one of cosine, linear, constant");
}

}  // namespace vit
