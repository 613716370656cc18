#include "model/vit_init.h"

#include <cmath>

#include "engine/check.h"

namespace vit {

namespace {
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
}  // namespace

InitSpec xavier_uniform(int64_t fan_out, int64_t fan_in) {
  return {InitKind::uniform, std::sqrt(6.0 / (double)(fan_in + fan_out))};
}

InitSpec lecun_normal(int64_t fan_in) {
  // timm's variance_scaling_(fan_in, truncated_normal): trunc_normal_tf_ on [-2, 2] standard units with the
  // std divided by that truncated normal's std (0.8796...), so the drawn values have std sqrt(1 / fan_in).
  return {InitKind::trunc_normal_tf, std::sqrt(1.0 / (double)fan_in) / 0.87962566103423978};
}

InitSpec torch_default(int64_t fan_in) {
  // kaiming_uniform_(a = sqrt(5)) gives bound gain·sqrt(3 / fan_in) with gain sqrt(2 / (1 + 5)): 1 / sqrt(fan_in),
  // the same bound PyTorch uses for the bias.
  return {InitKind::uniform, 1.0 / std::sqrt((double)fan_in)};
}

InitScheme::InitScheme(const ModelConfig& m) : mode_(m.weight_init) {
  VIT_REQUIRE(mode_.empty() || mode_ == "jax" || mode_ == "jax_nlhb" || mode_ == "moco" || mode_ == "skip",
              "model.weight_init \"", mode_, "\" is not one of \"\", jax, jax_nlhb, moco, skip");
  if (mode_ == "jax_nlhb" && m.num_classes > 0) head_bias_ = -std::log((double)m.num_classes);
}

// The modes, as timm's get_init_weights_vit picks them: 'jax' in mode -> init_weights_vit_jax, 'moco' in mode
// -> init_weights_vit_moco, else init_weights_vit_timm; 'skip' runs none (PyTorch's module defaults stay).
InitSpec InitScheme::linear_weight(const std::string& module, int64_t out, int64_t in) const {
  if (mode_ == "skip") return torch_default(in);
  if (starts_with(mode_, "jax")) return starts_with(module, "head") ? InitSpec{InitKind::zeros} : xavier_uniform(out, in);
  if (mode_ == "moco") {
    // moco-v3 treats q, k and v as three (out/3, in) matrices.
    if (contains(module, "qkv")) return {InitKind::uniform, std::sqrt(6.0 / (double)(out / 3 + in))};
    return xavier_uniform(out, in);
  }
  return {InitKind::trunc_normal, 0.02};
}

InitSpec InitScheme::linear_bias(const std::string& module, int64_t in) const {
  if (mode_ == "skip") return torch_default(in);
  if (starts_with(mode_, "jax")) {
    if (starts_with(module, "head")) return head_bias_ != 0 ? InitSpec{InitKind::constant, head_bias_} : InitSpec{};
    if (contains(module, "mlp")) return {InitKind::normal, 1e-6};
  }
  return {InitKind::zeros};
}

// The patch conv is touched only by the jax rule (timm's other rules handle nn.Linear only).
InitSpec InitScheme::patch_weight(int64_t fan_in) const {
  return starts_with(mode_, "jax") ? lecun_normal(fan_in) : torch_default(fan_in);
}

InitSpec InitScheme::patch_bias(int64_t fan_in) const {
  return starts_with(mode_, "jax") ? InitSpec{InitKind::zeros} : torch_default(fan_in);
}

// VisionTransformer.init_weights sets the tokens and pos_embed in every mode but skip; skip leaves the
// constructor's torch.zeros tokens and randn·0.02 (untruncated) pos_embed.
InitSpec InitScheme::prefix_token() const {
  return mode_ == "skip" ? InitSpec{InitKind::zeros} : InitSpec{InitKind::normal, 1e-6};
}

InitSpec InitScheme::pos_embed() const {
  return mode_ == "skip" ? InitSpec{InitKind::normal, 0.02} : InitSpec{InitKind::trunc_normal, 0.02};
}

// AttentionPoolLatent.init_weights runs in its constructor (so under skip too) and again from named_apply,
// after its Linear children: the latent is trunc_normal_tf_(latent_dim^-0.5) in every mode.
InitSpec InitScheme::latent(int64_t dim) const { return {InitKind::trunc_normal_tf, std::pow((double)dim, -0.5)}; }

}  // namespace vit
