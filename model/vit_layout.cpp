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
  const InitSpec zeros{InitKind::zeros}, ones{InitKind::ones};
  const InitSpec linear_w{InitKind::trunc_normal, 0.02};
  // timm: the patch-embedding conv keeps PyTorch's default init (kaiming_uniform(a=sqrt(5)) for the weight,
  // uniform(+-1/sqrt(fan_in)) for the bias); both bounds are 1/sqrt(fan_in).
  const double conv_bound = 1.0 / std::sqrt((double)d.C * d.p * d.p);
  auto norm = [&](const std::string& n, int64_t dim) {
    add(n + ".weight", {dim}, ones, false);
    add(n + ".bias", {dim}, zeros, false);
  };

  begin_unit("embed");
  if (m.class_token) add("cls_token", {1, 1, D}, {InitKind::normal, 1e-6}, false);
  if (m.reg_tokens > 0) add("reg_token", {1, m.reg_tokens, D}, {InitKind::normal, 1e-6}, false);
  if (d.Tpos > 0) add("pos_embed", {1, d.Tpos, D}, {InitKind::trunc_normal, 0.02}, false);
  add("patch_embed.proj.weight", {D, d.C, d.p, d.p}, {InitKind::uniform, conv_bound}, true);
  // timm builds the patch embedding without a bias when pre_norm is on (bias = not pre_norm).
  if (!m.pre_norm) add("patch_embed.proj.bias", {D}, {InitKind::uniform, conv_bound}, false);
  if (m.pre_norm) norm("norm_pre", D);

  for (int l = 0; l < d.depth; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".";
    // timm's fix_init_weight (init_variance_rescale): proj and fc2 weights divided by sqrt(2 * layer_id).
    InitSpec out_w = linear_w;
    if (m.init_variance_rescale) out_w.scale = 1.0 / std::sqrt(2.0 * (l + 1));
    begin_unit("blocks." + std::to_string(l));
    norm(b + "norm1", D);
    add(b + "attn.qkv.weight", {3 * D, D}, linear_w, true);
    if (m.qkv_bias) add(b + "attn.qkv.bias", {3 * D}, zeros, false);
    if (m.qk_norm) {
      norm(b + "attn.q_norm", d.hd);
      norm(b + "attn.k_norm", d.hd);
    }
    if (m.scale_attn_norm) norm(b + "attn.norm", D);
    add(b + "attn.proj.weight", {D, D}, out_w, true);
    if (m.proj_bias) add(b + "attn.proj.bias", {D}, zeros, false);
    if (m.init_values > 0) add(b + "ls1.gamma", {D}, {InitKind::constant, m.init_values}, false);
    norm(b + "norm2", D);
    add(b + "mlp.fc1.weight", {d.hidden, D}, linear_w, true);
    if (m.proj_bias) add(b + "mlp.fc1.bias", {d.hidden}, zeros, false);
    if (m.scale_mlp_norm) norm(b + "mlp.norm", d.hidden);
    add(b + "mlp.fc2.weight", {D, d.hidden}, out_w, true);
    if (m.proj_bias) add(b + "mlp.fc2.bias", {D}, zeros, false);
    if (m.init_values > 0) add(b + "ls2.gamma", {D}, {InitKind::constant, m.init_values}, false);
  }

  begin_unit("head");
  const bool use_fc_norm = m.fc_norm == "auto" ? m.global_pool == "avg" : m.fc_norm == "true";
  if (m.final_norm && !use_fc_norm) norm("norm", D);
  if (m.global_pool == "map") {
    // timm's AttentionPoolLatent (num_heads = model heads, mlp_ratio = model's, latent_len 1, qkv bias on).
    add("attn_pool.latent", {1, 1, D}, {InitKind::trunc_normal_tf, std::pow((double)D, -0.5)}, false);
    add("attn_pool.q.weight", {D, D}, linear_w, true);
    add("attn_pool.q.bias", {D}, zeros, false);
    add("attn_pool.kv.weight", {2 * D, D}, linear_w, true);
    add("attn_pool.kv.bias", {2 * D}, zeros, false);
    // (timm's VisionTransformer builds its AttentionPoolLatent without qk_norm.)
    add("attn_pool.proj.weight", {D, D}, linear_w, true);
    add("attn_pool.proj.bias", {D}, zeros, false);
    norm("attn_pool.norm", D);
    add("attn_pool.mlp.fc1.weight", {d.hidden, D}, linear_w, true);
    add("attn_pool.mlp.fc1.bias", {d.hidden}, zeros, false);
    add("attn_pool.mlp.fc2.weight", {D, d.hidden}, linear_w, true);
    add("attn_pool.mlp.fc2.bias", {D}, zeros, false);
  }
  if (m.final_norm && use_fc_norm) norm("fc_norm", D);
  if (d.K > 0) {
    // timm: head weight trunc_normal(0.02) and bias 0 ('' init); jax init zeroes the head.
    const bool zero_head = m.weight_init.rfind("jax", 0) == 0;
    add("head.weight", {d.K, D}, zero_head ? zeros : linear_w, true);
    InitSpec hb = zeros;
    if (m.weight_init == "jax_nlhb") hb = {InitKind::constant, -std::log((double)d.K)};
    add("head.bias", {d.K}, hb, false);
  }
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
