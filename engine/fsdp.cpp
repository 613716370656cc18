#include "engine/fsdp.h"

namespace vit {

Strategy parse_strategy(const std::string& s) {
  if (s == "no_shard") return Strategy::no_shard;
  if (s == "optim") return Strategy::optim;
  if (s == "optim_grads") return Strategy::optim_grads;
  if (s == "optim_grads_params") return Strategy::optim_grads_params;
  fail("distributed.strategy = \"", s, "\" is not one of no_shard, optim, optim_grads, optim_grads_params");
}

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::no_shard: return "no_shard";
    case Strategy::optim: return "optim";
    case Strategy::optim_grads: return "optim_grads";
    case Strategy::optim_grads_params: return "optim_grads_params";
  }
  return "?";
}

}  // namespace vit
