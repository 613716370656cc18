#include "model/vit_layout.h"

#include <algorithm>
#include <cmath>

#include "engine/check.h"
#include "engine/rng.h"

namespace vit {

ModelDims model_dims(const ModelConfig& m) {
  ModelDims d{};
  d.C = m.in_chans;
  d.H = m.img_size[0];
  d.W = m.img_size[1];
  d.p = m.patch_size;
  VIT_REQUIRE(d.H % d.p == 0 && d.W % d.p == 0, "model.img_size ", d.H, "x", d.W, " is not divisible by model.patch_size ",
              d.p, ": choose an image size that is a multiple of the patch size");
  d.Hp = d.H / d.p;
  d.Wp = d.W / d.p;
  d.Np = d.Hp * d.Wp;
  d.D = m.embed_dim;
  d.depth = m.depth;
  d.heads = m.num_heads;
  VIT_REQUIRE(d.D % d.heads == 0, "model.embed_dim ", d.D, " is not divisible by model.num_heads ", d.heads);
  d.hd = d.D / d.heads;
  d.hidden = (int)std::lround(d.D * m.mlp_ratio);
  d.K = m.num_classes;
  d.cls = m.class_token;
  d.prefix = (m.class_token ? 1 : 0) + m.reg_tokens;
  d.T = d.prefix + d.Np;
  d.Tpos = m.pos_embed == "none" ? 0 : (m.no_embed_class ? d.Np : d.T);
  return d;
}

void ParamLayout::begin_unit(const std::string& name) {
  UnitSpec u;
  u.name = name;
  u.first_param = (int)params_.size();
  units_.push_back(u);
}

void ParamLayout::add(const std::string& name, std::vector<int64_t> shape, InitSpec init, bool decay) {
  ParamSpec p;
  p.name = name;
  p.numel = 1;
  for (int64_t s : shape) p.numel *= s;
  p.shape = std::move(shape);
  p.unit = (int)units_.size() - 1;
  UnitSpec& u = units_.back();
  p.offset = u.numel;
  // Keep every parameter 16-byte aligned inside its unit in bf16 and fp32 (8 elements): vector loads
  // and cuBLASLt need aligned bases.
  u.numel += (p.numel + 7) / 8 * 8;
  u.num_params++;
  p.decay = decay;
  p.init = init;
  params_.push_back(std::move(p));
}

ParamLayout::ParamLayout(const ModelConfig& m) : dims_(model_dims(m)) {
  const ModelDims& d = dims_;
  const int64_t D = d.D;
  const InitScheme init(m);  // model.weight_init: which value each tensor starts from
  const InitSpec zeros{InitKind::zeros}, ones{InitKind::ones};
  // LayerNorm weight/bias: ones/zeros in every mode (no timm init rule touches them).
  auto norm = [&](const std::string& n, int64_t dim) {
    add(n + ".weight", {dim}, ones, false);
    add(n + ".bias", {dim}, zeros, false);
  };
  // An nn.Linear `module` (timm path) with an (out, in) weight; `scale` is fix_init's rescale of the weight.
  auto linear = [&](const std::string& module, int64_t out, int64_t in, bool bias, double scale = 1) {
    InitSpec w = init.linear_weight(module, out, in);
    w.scale = scale;
    add(module + ".weight", {out, in}, w, true);
    if (bias) add(module + ".bias", {out}, init.linear_bias(module, in), false);
  };

  begin_unit("embed");
  if (m.class_token) add("cls_token", {1, 1, D}, init.prefix_token(), false);
  if (m.reg_tokens > 0) add("reg_token", {1, m.reg_tokens, D}, init.prefix_token(), false);
  if (d.Tpos > 0) add("pos_embed", {1, d.Tpos, D}, init.pos_embed(), false);
  const int64_t conv_fan_in = (int64_t)d.C * d.p * d.p;
  add("patch_embed.proj.weight", {D, d.C, d.p, d.p}, init.patch_weight(conv_fan_in), true);
  // timm builds the patch embedding without a bias when pre_norm is on (bias = not pre_norm).
  if (!m.pre_norm) add("patch_embed.proj.bias", {D}, init.patch_bias(conv_fan_in), false);
  if (m.pre_norm) norm("norm_pre", D);

  for (int l = 0; l < d.depth; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    // timm's fix_init_weight (init_variance_rescale), applied after any weight_init mode (skip included):
    // proj and fc2 weights divided by sqrt(2 * layer_id).
    const double out_scale = m.init_variance_rescale ? 1.0 / std::sqrt(2.0 * (l + 1)) : 1.0;
    begin_unit("blocks." + std::to_string(l));
    norm(b + "norm1", D);
    linear(b + "attn.qkv", 3 * D, D, m.qkv_bias);
    if (m.qk_norm) {
      norm(b + "attn.q_norm", d.hd);
      norm(b + "attn.k_norm", d.hd);
    }
    if (m.scale_attn_norm) norm(b + "attn.norm", D);
    linear(b + "attn.proj", D, D, m.proj_bias, out_scale);
    if (m.init_values > 0) add(b + "ls1.gamma", {D}, {InitKind::constant, m.init_values}, false);
    norm(b + "norm2", D);
    linear(b + "mlp.fc1", d.hidden, D, m.proj_bias);
    if (m.scale_mlp_norm) norm(b + "mlp.norm", d.hidden);
    linear(b + "mlp.fc2", D, d.hidden, m.proj_bias, out_scale);
    if (m.init_values > 0) add(b + "ls2.gamma", {D}, {InitKind::constant, m.init_values}, false);
  }

  begin_unit("head");
  const bool use_fc_norm = m.fc_norm == "auto" ? m.global_pool == "avg" : m.fc_norm == "true";
  if (m.final_norm && !use_fc_norm) norm("norm", D);
  if (m.global_pool == "map") {
    // timm's AttentionPoolLatent (num_heads = model heads, mlp_ratio = model's, latent_len 1, qkv bias on).
    add("attn_pool.latent", {1, 1, D}, init.latent(D), false);
    linear("attn_pool.q", D, D, true);
    linear("attn_pool.kv", 2 * D, D, true);
    // (timm's VisionTransformer builds its AttentionPoolLatent without qk_norm.)
    linear("attn_pool.proj", D, D, true);
    norm("attn_pool.norm", D);
    linear("attn_pool.mlp.fc1", d.hidden, D, true);
    linear("attn_pool.mlp.fc2", D, d.hidden, true);
  }
  if (m.final_norm && use_fc_norm) norm("fc_norm", D);
  if (d.K > 0) linear("head", d.K, D, true);
  for (const UnitSpec& u : units_) total_ += u.numel;
}

int ParamLayout::find(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name == name) return (int)i;
  return -1;
}

const ParamSpec& ParamLayout::param(const std::string& name) const {
  int i = find(name);
  VIT_ASSERT(i >= 0, "no parameter named ", name);
  return params_[i];
}

uint64_t ParamLayout::hash() const {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mixin = [&](uint64_t v) { h = rng::mix64(h ^ v); };
  for (const ParamSpec& p : params_) {
    mixin(rng::hash_name(p.name.c_str()));
    for (int64_t s : p.shape) mixin((uint64_t)s);
    mixin((uint64_t)p.unit);
    mixin((uint64_t)p.offset);
  }
  return h;
}

template <class T>
void ParamLayout::init_range(T* dst, int u, int64_t begin, int64_t end, uint64_t seed) const {
  const UnitSpec& U = units_[u];
  VIT_ASSERT(0 <= begin && begin <= end);
  std::fill(dst, dst + (end - begin), T(0));  // alignment gaps and the shard padding stay zero
  for (int i = U.first_param; i < U.first_param + U.num_params; ++i) {
    const ParamSpec& P = params_[i];
    const int64_t b = std::max(begin, P.offset), e = std::min(end, P.offset + P.numel);
    const uint64_t stream = rng::hash_name(P.name.c_str());
    for (int64_t k = b; k < e; ++k) {
      const uint64_t idx = (uint64_t)(k - P.offset);
      double v = 0;
      switch (P.init.kind) {
        case InitKind::zeros: v = 0; break;
        case InitKind::ones: v = 1; break;
        case InitKind::constant: v = P.init.a; break;
        case InitKind::trunc_normal: v = rng::trunc_normal(seed, stream, idx, 0.0, P.init.a, -2.0, 2.0); break;
        case InitKind::trunc_normal_tf:
          v = rng::trunc_normal(seed, stream, idx, 0.0, P.init.a, -2.0 * P.init.a, 2.0 * P.init.a);
          break;
        case InitKind::normal: v = P.init.a * rng::normal(seed, stream, idx); break;
        case InitKind::uniform:
          v = P.init.a * (2.0 * rng::uniform_open_d(rng::bits(seed, stream, idx)) - 1.0);
          break;
      }
      dst[k - begin] = T(v * P.init.scale);
    }
  }
}

template void ParamLayout::init_range<float>(float*, int, int64_t, int64_t, uint64_t) const;
template void ParamLayout::init_range<double>(double*, int, int64_t, int64_t, uint64_t) const;

}  // namespace vit
