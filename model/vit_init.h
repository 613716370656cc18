// timm's weight_init schemes ('' | jax | jax_nlhb | moco | skip) as one initialiser per parameter tensor.
// timm initialises in passes (module constructors, VisionTransformer.init_weights, named_apply children
// first, modules with their own init_weights last, fix_init after); the rules below give each tensor the
// value of the last pass that writes it, so the layout can draw every element independently (sharded init).
// "skip" runs no init pass: what remains is what the modules' constructors leave, i.e. PyTorch's defaults
// (nn.Linear / nn.Conv2d weight kaiming_uniform(a = sqrt(5)) and bias, both uniform(±1/sqrt(fan_in)); LayerNorm
// ones / zeros; LayerScale init_values), timm's zero cls / reg tokens and randn·0.02 pos_embed, and the map
// head's latent, which AttentionPoolLatent initialises in its constructor. fix_init still applies after.
#pragma once
#include <cstdint>
#include <string>

#include "engine/config.h"

namespace vit {

enum class InitKind {
  zeros,
  ones,
  constant,         // value a
  trunc_normal,     // mean 0, std a, truncated to [-2, 2] absolute (timm's trunc_normal_ defaults)
  trunc_normal_tf,  // mean 0, std a, truncated to [-2a, 2a] (timm's trunc_normal_tf_)
  normal,           // mean 0, std a
  uniform,          // [-a, a]
};

struct InitSpec {
  InitKind kind = InitKind::zeros;
  double a = 0;      // std, bound or constant value
  double scale = 1;  // multiplied after drawing (init_variance_rescale)
};

// The distributions timm's modes use, in the form above.
InitSpec xavier_uniform(int64_t fan_out, int64_t fan_in);  // bound sqrt(6 / (fan_in + fan_out))
InitSpec lecun_normal(int64_t fan_in);                     // trunc_normal_tf, resulting std sqrt(1 / fan_in)
InitSpec torch_default(int64_t fan_in);                    // nn.Linear / nn.Conv2d reset_parameters

// Per-tensor rules of one weight_init mode. Module names are timm's module paths ("blocks.3.mlp.fc1",
// "attn_pool.kv", "head"): timm's jax and moco rules test them by substring, and so do these.
class InitScheme {
 public:
  explicit InitScheme(const ModelConfig& m);

  InitSpec linear_weight(const std::string& module, int64_t out, int64_t in) const;
  InitSpec linear_bias(const std::string& module, int64_t in) const;
  InitSpec patch_weight(int64_t fan_in) const;  // patch_embed.proj (nn.Conv2d)
  InitSpec patch_bias(int64_t fan_in) const;
  InitSpec prefix_token() const;                // cls_token, reg_token
  InitSpec pos_embed() const;
  InitSpec latent(int64_t dim) const;           // attn_pool.latent

 private:
  std::string mode_;
  double head_bias_ = 0;  // jax_nlhb: -log(num_classes)
};

}  // namespace vit
