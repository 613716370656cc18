// model.weight_init: every parameter tensor of two model shapes (map head with registers, qk_norm, layer scale
// and fix_init; avg pool with pre_norm and fc_norm) under each of timm's modes ('' | jax | jax_nlhb | moco |
// skip), checked against timm 1.0's rules with analytic statistics: exact constants where timm writes them,
// sample mean and std against the distribution's, every |x| inside the uniform bound or truncation, and the
// largest |x| reaching where only the right distribution reaches. Then: slices of a unit equal the whole
// (sharded init), seeds matter, fix_init is an exact rescale, and the model runs in every mode.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/local_store.h"
#include "engine/ops_cpu.h"
#include "model/vit.h"
#include "model/vit_layout.h"

using namespace vit;

namespace {

const char* const kModes[] = {"", "jax", "jax_nlhb", "moco", "skip"};
constexpr double kTruncStd = 0.87962566103423978;  // std of a standard normal truncated to [-2, 2]

// Map head, registers, qk_norm, scale_mlp_norm, layer scale, fix_init; patch conv with a bias.
ModelConfig map_model(const std::string& mode) {
  ModelConfig m;
  m.img_size = {32, 32};
  m.patch_size = 8;  // conv fan_in 3·8·8 = 192
  m.in_chans = 3;
  m.num_classes = 10;
  m.embed_dim = 64;
  m.depth = 2;
  m.num_heads = 4;
  m.mlp_ratio = 4;  // hidden 256
  m.global_pool = "map";
  m.reg_tokens = 2;
  m.qk_norm = true;
  m.scale_mlp_norm = true;
  m.init_values = 0.1;
  m.init_variance_rescale = true;
  m.weight_init = mode;
  return m;
}

// Avg pool without class token, pre_norm (no patch bias), fc_norm, no qkv bias.
ModelConfig avg_model(const std::string& mode) {
  ModelConfig m = map_model(mode);
  m.global_pool = "avg";
  m.class_token = false;
  m.reg_tokens = 0;
  m.qk_norm = false;
  m.scale_mlp_norm = false;
  m.init_values = 0;
  m.init_variance_rescale = false;
  m.pre_norm = true;
  m.qkv_bias = false;
  return m;
}

// What timm leaves in a tensor: a constant, or draws with a known std, an upper bound on |x|, and a level
// the largest |x| must reach in a large sample (a uniform never passes sqrt(3)·std; normals do).
struct Expect {
  bool constant = false;
  double value = 0;
  double std = 0;
  double max_abs = std::numeric_limits<double>::infinity();
  double reach = 0;  // fraction of max_abs (uniform) or multiple of std (normals) the max |x| reaches
  bool uniform = false;
};

Expect constant(double v) { return {true, v}; }
Expect uniform(double bound) { return {false, 0, bound / std::sqrt(3.0), bound, 0.9, true}; }
// P(|z| > 2.5) = 1.2%: a sample of thousands reaches it; a uniform of the same std stops at 1.73 std.
Expect normal(double s, double abs_bound = std::numeric_limits<double>::infinity()) {
  return {false, 0, s, std::min(abs_bound, 6.5 * s), 2.5};
}
// trunc_normal_tf_(std = s): s·z with z truncated to [-2, 2]; std s·0.8796, max |x| 2s (1.9s is reached).
Expect trunc_tf(double s) { return {false, 0, s * kTruncStd, 2 * s, 1.9 / kTruncStd}; }

Expect scaled(Expect e, double k) {
  e.value *= k;
  e.std *= k;
  e.max_abs *= k;
  return e;
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// timm 1.0 (VisionTransformer.__init__ / init_weights, init_weights_vit_{timm,jax,moco}, AttentionPoolLatent,
// fix_init_weight), written out per tensor. "skip" keeps PyTorch's module defaults: nn.Linear and nn.Conv2d
// weight kaiming_uniform(a=sqrt(5)) and bias, both uniform(±1/sqrt(fan_in)); LayerNorm ones/zeros; the
// constructor's zero tokens and randn·0.02 pos_embed; AttentionPoolLatent's own latent init.
Expect timm_rule(const ParamLayout& L, const ParamSpec& P, const ModelConfig& m) {
  const std::string& mode = m.weight_init;
  const bool jax = starts_with(mode, "jax"), moco = mode == "moco", skip = mode == "skip";
  const std::string& n = P.name;
  const bool is_weight = ends_with(n, ".weight");
  const std::string module = n.substr(0, n.rfind('.'));
  const std::string leaf = module.substr(module.rfind('.') + 1);
  if (ends_with(n, ".gamma")) return constant(m.init_values);
  if (has(leaf, "norm")) return constant(is_weight ? 1 : 0);
  if (n == "cls_token" || n == "reg_token") return skip ? constant(0) : normal(1e-6);
  if (n == "pos_embed") return normal(0.02, 2.0);
  if (n == "attn_pool.latent") return trunc_tf(1.0 / std::sqrt((double)m.embed_dim));
  if (module == "patch_embed.proj") {
    const double fan_in = (double)m.in_chans * m.patch_size * m.patch_size;
    if (jax) return is_weight ? trunc_tf(std::sqrt(1 / fan_in) / kTruncStd) : constant(0);  // lecun_normal_
    return uniform(1 / std::sqrt(fan_in));
  }
  // Every other tensor belongs to an nn.Linear.
  const ParamSpec& W = L.param(module + ".weight");
  const double out = (double)W.shape[0], in = (double)W.shape[1];
  const bool rescaled = m.init_variance_rescale && starts_with(n, "blocks.") &&
                        (ends_with(n, "attn.proj.weight") || ends_with(n, "mlp.fc2.weight"));
  const double k = rescaled ? 1 / std::sqrt(2.0 * (std::stoi(n.substr(7)) + 1)) : 1.0;
  const double xavier = std::sqrt(6 / (in + out));
  if (skip) return scaled(uniform(1 / std::sqrt(in)), is_weight ? k : 1);
  if (jax) {
    if (module == "head") return is_weight ? constant(0) : constant(mode == "jax_nlhb" ? -std::log(out) : 0.0);
    if (is_weight) return scaled(uniform(xavier), k);
    return has(module, "mlp") ? normal(1e-6) : constant(0);
  }
  if (!is_weight) return constant(0);
  if (moco) return scaled(uniform(has(module, "qkv") ? std::sqrt(6 / (out / 3 + in)) : xavier), k);
  return scaled(normal(0.02, 2.0), k);  // timm's trunc_normal_(std=.02): [-2, 2] is 100 std away
}

std::vector<std::vector<double>> init_all(const ParamLayout& L, uint64_t seed) {
  std::vector<std::vector<double>> units;
  for (size_t u = 0; u < L.units().size(); ++u) {
    units.emplace_back(L.units()[u].numel, NAN);
    L.init_range(units.back().data(), (int)u, 0, L.units()[u].numel, seed);
  }
  return units;
}

std::vector<double> tensor(const std::vector<std::vector<double>>& units, const ParamSpec& P) {
  const auto& u = units[P.unit];
  return {u.begin() + P.offset, u.begin() + P.offset + P.numel};
}

void check_tensor(const std::vector<double>& x, const Expect& e) {
  const double n = (double)x.size();
  if (e.constant) {
    CHECK(std::all_of(x.begin(), x.end(), [&](double v) { return v == e.value; }));
    return;
  }
  double sum = 0, sq = 0, mx = 0;
  for (double v : x) {
    sum += v;
    sq += v * v;
    mx = std::max(mx, std::abs(v));
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  INFO("n ", n, " mean ", mean, " std ", sd, " (expected ", e.std, ") max|x| ", mx, " (bound ", e.max_abs, ")");
  // 5 standard errors: of the mean, std/sqrt(n); of the sample std, at most std/sqrt(2n) (normal kurtosis is
  // the largest of these distributions).
  CHECK(std::abs(mean) < 5 * e.std / std::sqrt(n));
  CHECK(std::abs(sd / e.std - 1) < 5 / std::sqrt(2 * n));
  CHECK(mx <= e.max_abs * (1 + 1e-12));
  // The largest |x| reaches the distribution's tail: for a uniform 0.9·bound (missed with probability 0.9^n),
  // for normals a level a uniform of the same std never reaches (missed with probability < 0.99^n).
  if (n >= 2000) CHECK(mx >= (e.uniform ? e.reach * e.max_abs : e.reach * e.std));
}

void check_model_init(const ModelConfig& m) {
  CAPTURE(m.weight_init);
  CAPTURE(m.global_pool);
  ParamLayout L(m);
  const auto units = init_all(L, 2024);
  for (const ParamSpec& P : L.params()) {
    CAPTURE(P.name);
    check_tensor(tensor(units, P), timm_rule(L, P, m));
  }
  // Alignment gaps between tensors stay zero.
  for (size_t u = 0; u < units.size(); ++u) {
    std::vector<bool> covered(units[u].size(), false);
    for (const ParamSpec& P : L.params())
      if (P.unit == (int)u) std::fill(covered.begin() + P.offset, covered.begin() + P.offset + P.numel, true);
    for (size_t i = 0; i < covered.size(); ++i)
      if (!covered[i]) REQUIRE(units[u][i] == 0);
  }
}

}  // namespace

TEST_CASE("weight_init: every tensor follows timm's rule for its mode (map head, registers, qk_norm, fix_init)") {
  for (const char* mode : kModes) check_model_init(map_model(mode));
}

TEST_CASE("weight_init: every tensor follows timm's rule for its mode (avg pool, pre_norm, fc_norm)") {
  for (const char* mode : kModes) check_model_init(avg_model(mode));
}

TEST_CASE("weight_init: the distinctive values of each mode, spelled out") {
  ModelConfig m = map_model("jax_nlhb");
  ParamLayout L(m);
  auto u = init_all(L, 5);
  auto t = [&](const char* name) { return tensor(u, L.param(name)); };
  // jax: zero head weight, -log(num_classes) head bias; mlp biases (blocks and map head) are tiny normals,
  // the other Linear biases zero.
  CHECK(t("head.bias")[0] == doctest::Approx(-std::log(10.0)).epsilon(1e-15));
  CHECK(t("head.weight") == std::vector<double>(L.param("head.weight").numel, 0.0));
  for (const char* b : {"blocks.1.mlp.fc1.bias", "blocks.1.mlp.fc2.bias", "attn_pool.mlp.fc1.bias"}) {
    CAPTURE(b);
    auto v = t(b);
    CHECK(std::count(v.begin(), v.end(), 0.0) == 0);
    CHECK(*std::max_element(v.begin(), v.end()) < 1e-5);
  }
  for (const char* b : {"blocks.0.attn.qkv.bias", "blocks.0.attn.proj.bias", "attn_pool.kv.bias"}) {
    auto v = t(b);
    CHECK(std::count(v.begin(), v.end(), 0.0) == (long)v.size());
  }
  // jax without nlhb: head bias 0. moco: the head is an ordinary xavier Linear, not zero.
  m.weight_init = "jax";
  ParamLayout Lj(m);
  CHECK(tensor(init_all(Lj, 5), Lj.param("head.bias")) == std::vector<double>(10, 0.0));
  m.weight_init = "moco";
  ParamLayout Lm(m);
  auto head = tensor(init_all(Lm, 5), Lm.param("head.weight"));
  CHECK(*std::max_element(head.begin(), head.end()) > 0.9 * std::sqrt(6.0 / (64 + 10)));
  // skip: zero tokens.
  m.weight_init = "skip";
  ParamLayout Ls(m);
  auto us = init_all(Ls, 5);
  CHECK(tensor(us, Ls.param("cls_token")) == std::vector<double>(64, 0.0));
  CHECK(tensor(us, Ls.param("reg_token")) == std::vector<double>(128, 0.0));
}

TEST_CASE("weight_init: any slice of a unit equals the whole unit's init (sharded init), in every mode") {
  for (const char* mode : kModes) {
    for (const ModelConfig& m : {map_model(mode), avg_model(mode)}) {
      CAPTURE(mode);
      ParamLayout L(m);
      const auto full = init_all(L, 77);
      for (size_t u = 0; u < L.units().size(); ++u) {
        const int64_t n = L.units()[u].numel;
        // Cuts at odd places: inside tensors, at their edges, in alignment gaps.
        std::vector<int64_t> cuts = {0, 1, 7, 13, n / 5, n / 3 + 1, n / 2 + 5, n - 3, n};
        std::sort(cuts.begin(), cuts.end());
        cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
        std::vector<double> pieced(n, NAN);
        for (size_t c = 0; c + 1 < cuts.size(); ++c) {
          if (cuts[c] < 0 || cuts[c + 1] > n || cuts[c] >= cuts[c + 1]) continue;
          L.init_range(pieced.data() + cuts[c], (int)u, cuts[c], cuts[c + 1], 77);
        }
        CHECK(pieced == full[u]);
      }
    }
  }
}

TEST_CASE("weight_init: another seed gives other random tensors and the same constants") {
  for (const char* mode : kModes) {
    CAPTURE(mode);
    const ModelConfig m = map_model(mode);
    ParamLayout L(m);
    const auto a = init_all(L, 1), b = init_all(L, 2);
    for (const ParamSpec& P : L.params()) {
      CAPTURE(P.name);
      const bool random = !timm_rule(L, P, m).constant;
      const auto ta = tensor(a, P), tb = tensor(b, P);
      size_t same = 0;
      for (size_t i = 0; i < ta.size(); ++i) same += ta[i] == tb[i];
      CHECK(same == (random ? 0 : ta.size()));
    }
  }
}

TEST_CASE("weight_init: init_variance_rescale divides exactly the block proj and fc2 weights by sqrt(2 layer)") {
  for (const char* mode : kModes) {
    CAPTURE(mode);
    ModelConfig on = map_model(mode), off = on;
    off.init_variance_rescale = false;
    ParamLayout Lon(on), Loff(off);
    const auto a = init_all(Lon, 3), b = init_all(Loff, 3);
    for (const ParamSpec& P : Lon.params()) {
      CAPTURE(P.name);
      const auto x = tensor(a, P), y = tensor(b, Loff.param(P.name));
      const bool rescaled = ends_with(P.name, "attn.proj.weight") || ends_with(P.name, "mlp.fc2.weight");
      if (!rescaled || !starts_with(P.name, "blocks.")) {
        CHECK(x == y);
        continue;
      }
      const double k = 1 / std::sqrt(2.0 * (std::stoi(P.name.substr(7)) + 1));
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::abs(x[i] - y[i] * k));
      CHECK(worst <= 1e-15);
      CHECK(x != y);
    }
  }
}

TEST_CASE("weight_init: the model runs in every mode, and jax's zero head gives logits equal to the head bias") {
  for (const char* mode : kModes) {
    CAPTURE(mode);
    ModelConfig m = map_model(mode);
    m.embed_dim = 16;
    m.mlp_ratio = 2;
    CpuOps<double> ops;
    ParamLayout L(m);
    LocalStore<CpuOps<double>> store(L, ops);
    store.init(11);
    const int B = 3;
    const ModelDims d = L.dims();
    std::vector<float> img((size_t)B * d.C * d.H * d.W);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (float)rng::normal(4, 4, i);
    ViT<CpuOps<double>> model(m, L, ops, B);
    StepContext ctx;
    ctx.train = false;
    model.forward(store, img.data(), nullptr, B, ctx);
    const std::string mo = mode;
    const double head_bias = mo == "jax_nlhb" ? -std::log((double)m.num_classes) : 0.0;
    bool finite = true, equal_bias = true, spread = false;
    for (int i = 0; i < B * d.K; ++i) {
      const double z = model.logits()[i];
      finite &= std::isfinite(z);
      equal_bias &= z == head_bias;
      spread |= z != model.logits()[0];
    }
    CHECK(finite);
    if (starts_with(mo, "jax"))
      CHECK(equal_bias);
    else
      CHECK(spread);  // a random head: logits differ between classes and images
  }
}
