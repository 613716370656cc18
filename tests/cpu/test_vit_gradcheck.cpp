// Whole-model gradient check in float64: every parameter tensor of small ViTs (several option sets)
// against central differences of the loss, through the same tape the trainer uses.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/local_store.h"
#include "engine/ops_cpu.h"
#include "model/vit.h"
#include "tests/cpu/gradcheck.h"

using namespace vit;

namespace {

ModelConfig tiny_model() {
  ModelConfig m;
  m.img_size = {8, 12};  // non-square: 2 x 3 patches
  m.patch_size = 4;
  m.in_chans = 3;
  m.num_classes = 5;
  m.embed_dim = 8;
  m.depth = 2;
  m.num_heads = 2;
  m.mlp_ratio = 1.5;
  return m;
}

// tiny-style model on a fixed batch of two images (rng stream img_seed, labels 0 and 3), parameters from
// store.init(init_seed): for the tests that only run it.
struct TinyRun {
  static constexpr int B = 2;
  CpuOps<double> ops;
  ParamLayout layout;
  LocalStore<CpuOps<double>> store;
  std::vector<float> img;
  std::vector<int> labels = {0, 3};
  ViT<CpuOps<double>> model;
  TinyRun(const ModelConfig& m, uint64_t init_seed, uint64_t img_seed)
      : layout(m), store(layout, ops), img((size_t)B * layout.dims().C * layout.dims().H * layout.dims().W),
        model(m, layout, ops, B) {
    store.init(init_seed);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (float)rng::normal(img_seed, img_seed, i);
  }
  void forward(const StepContext& ctx) { model.forward(store, img.data(), labels.data(), B, ctx); }
};

// Loss of the model on a fixed batch (forward only), for the finite differences.
double loss_of(ViT<CpuOps<double>>& model, LocalStore<CpuOps<double>>& store, const std::vector<float>& img,
               const std::vector<int>& labels, int B, const StepContext& ctx) {
  model.forward(store, img.data(), labels.data(), B, ctx);
  double s = 0;
  for (int i = 0; i < B; ++i) s += model.losses()[i];
  return s * ctx.dscale;
}

void check_model(const ModelConfig& m, const char* what, double tol = 1e-6) {
  CAPTURE(what);
  CpuOps<double> ops;
  ParamLayout layout(m);
  LocalStore<CpuOps<double>> store(layout, ops);
  store.init(1234);
  // Larger-than-init weights so every path carries signal (timm's 1e-6 token init would hide errors).
  for (size_t u = 0; u < layout.units().size(); ++u) {
    auto r = test::randn(layout.units()[u].numel, 99 + u, 0.5);
    double* p = store.params((int)u);
    for (int64_t i = 0; i < layout.units()[u].numel; ++i) p[i] += r[i];
  }
  const int B = 2;
  const ModelDims d = layout.dims();
  std::vector<float> img(B * d.C * d.H * d.W);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (float)rng::normal(5, 5, i);
  std::vector<int> labels = {1, 4};
  ViT<CpuOps<double>> model(m, layout, ops, B);
  StepContext ctx;
  ctx.train = true;
  ctx.seed = 77;
  ctx.dscale = 1.0 / B;
  ctx.label_smoothing = 0.1;

  // Analytic gradients, added onto a non-zero starting gradient to prove accumulation (+=).
  std::vector<std::vector<double>> g0(layout.units().size());
  for (size_t u = 0; u < layout.units().size(); ++u) {
    g0[u] = test::randn(layout.units()[u].numel, 500 + u);
    std::copy(g0[u].begin(), g0[u].end(), store.grads((int)u));
  }
  model.forward(store, img.data(), labels.data(), B, ctx);
  model.backward();

  double worst = 0;
  for (const ParamSpec& P : layout.params()) {
    CAPTURE(P.name);
    std::vector<double> x(store.param(P.name), store.param(P.name) + P.numel);
    std::vector<double> analytic(P.numel);
    for (int64_t i = 0; i < P.numel; ++i) analytic[i] = store.grad(P.name)[i] - g0[P.unit][P.offset + i];
    double* live = store.param(P.name);
    auto loss = [&] {
      std::copy(x.begin(), x.end(), live);
      return loss_of(model, store, img, labels, B, ctx);
    };
    const std::vector<double> numeric = test::numeric_grad(x, loss);
    std::copy(x.begin(), x.end(), live);
    const double scale = std::sqrt(test::dot(numeric, numeric));
    if (scale < 1e-6) {
      // The loss does not depend on this tensor (e.g. the k_norm bias: a shift shared by every key cancels in
      // the softmax): the analytic gradient must vanish too.
      CHECK(std::sqrt(test::dot(analytic, analytic)) < 1e-6);
      continue;
    }
    double err = test::rel_err(analytic, numeric);
    worst = std::max(worst, err);
    CHECK(err < tol);
  }
  std::printf("gradcheck %-28s worst relative error over %zu tensors: %.2e\n", what, layout.params().size(), worst);
}

}  // namespace

TEST_CASE("vit gradcheck: classic ViT (class token, token pool, final norm)") { check_model(tiny_model(), "classic"); }

TEST_CASE("vit gradcheck: avg pool, no class token, fc_norm, register tokens, no_embed_class") {
  ModelConfig m = tiny_model();
  m.global_pool = "avg";
  m.class_token = false;
  m.reg_tokens = 2;
  m.no_embed_class = true;
  check_model(m, "avg+reg+no_embed_class");
}

TEST_CASE("vit gradcheck: pre_norm, layer scale, no biases, tanh GELU, final norm off") {
  ModelConfig m = tiny_model();
  m.pre_norm = true;
  m.init_values = 0.3;
  m.qkv_bias = false;
  m.proj_bias = false;
  m.act = "gelu_tanh";
  m.final_norm = false;
  check_model(m, "pre_norm+ls+nobias+tanh");
}

TEST_CASE("vit gradcheck: every dropout on (fixed seed: masks are part of the function)") {
  ModelConfig m = tiny_model();
  m.init_values = 0.5;
  m.drop_rate = 0.2;
  m.pos_drop_rate = 0.2;
  m.proj_drop_rate = 0.2;
  m.attn_drop_rate = 0.25;
  m.drop_path_rate = 0.3;
  m.depth = 3;
  check_model(m, "dropouts+drop_path+ls");
}

TEST_CASE("vit: attention dropout acts in training only") {
  // Same parameters, batch and step: in eval the loss with attn_drop_rate > 0 equals the one without, bit for
  // bit; in training it differs (and the whole-model gradients above include the mask).
  ModelConfig m = tiny_model();
  auto losses = [&](double rate, bool train) {
    ModelConfig c = m;
    c.attn_drop_rate = rate;
    TinyRun r(c, 4321, 6);
    StepContext ctx;
    ctx.train = train;
    ctx.seed = 78;
    ctx.dscale = 1.0 / TinyRun::B;
    r.forward(ctx);
    return std::vector<double>(r.model.losses(), r.model.losses() + TinyRun::B);
  };
  CHECK(losses(0.4, false) == losses(0.0, false));
  CHECK(losses(0.4, true) != losses(0.0, true));
  CHECK(losses(0.4, true) == losses(0.4, true));  // the mask is a function of (seed, step, site)
}

TEST_CASE("vit gradcheck: avg pool with final norm before pooling, no pos embed") {
  ModelConfig m = tiny_model();
  m.global_pool = "avg";
  m.fc_norm = "false";
  m.pos_embed = "none";
  check_model(m, "avg+norm+no_pos");
}

TEST_CASE("vit gradcheck: scale_attn_norm and scale_mlp_norm (timm's extra norms), with dropouts") {
  ModelConfig m = tiny_model();
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  m.proj_drop_rate = 0.2;
  m.init_values = 0.4;
  check_model(m, "scale_attn_norm+scale_mlp_norm");
}

TEST_CASE("vit gradcheck: map pooling (AttentionPoolLatent) with registers and fc_norm, as the recipe") {
  ModelConfig m = tiny_model();
  m.global_pool = "map";
  m.reg_tokens = 2;
  m.fc_norm = "true";
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  m.pre_norm = true;
  check_model(m, "map+reg+fc_norm+extra norms");
  m.fc_norm = "auto";  // timm: map keeps the final norm over the tokens
  check_model(m, "map+final norm");
}

TEST_CASE("vit gradcheck: qk_norm alone, and the recipe's full option set (dropouts on)") {
  ModelConfig m = tiny_model();
  m.qk_norm = true;
  check_model(m, "qk_norm");
  m.global_pool = "map";
  m.reg_tokens = 2;
  m.pre_norm = true;
  m.fc_norm = "true";
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  m.init_variance_rescale = true;
  m.drop_rate = m.pos_drop_rate = m.proj_drop_rate = m.attn_drop_rate = m.drop_path_rate = 0.1;
  check_model(m, "recipe options");
}

TEST_CASE("vit gradcheck: patch dropout (with registers, pre_norm, map head) and every other dropout") {
  ModelConfig m = tiny_model();
  m.img_size = {12, 16};  // 3 x 4 = 12 patches
  m.patch_drop_rate = 0.4;
  m.reg_tokens = 1;
  check_model(m, "patch_drop");
  m.pre_norm = true;
  m.global_pool = "map";
  m.fc_norm = "true";
  m.pos_drop_rate = m.proj_drop_rate = m.attn_drop_rate = m.drop_path_rate = 0.2;
  check_model(m, "patch_drop+pre_norm+map+dropouts");
}

TEST_CASE("tape: the node hook sees every node, forward in order and backward in reverse") {
  // What bench_train --ops times: the hook runs before every node, with the node's kind.
  const ModelConfig m = tiny_model();
  TinyRun r(m, 3, 1);
  StepContext ctx;
  ctx.train = true;
  ctx.dscale = 1.0 / TinyRun::B;
  std::vector<std::string> seen;
  r.model.tape().set_node_hook([&](const char* kind) { seen.emplace_back(kind); });
  r.forward(ctx);
  const std::vector<std::string> fwd = seen;
  REQUIRE(fwd.size() == r.model.tape().size());
  seen.clear();
  r.model.backward();
  CHECK(std::vector<std::string>(seen.rbegin(), seen.rend()) == fwd);
  // Per block: two layer norms, qkv/proj/fc1/fc2 linears, one attention; units bracket every block.
  CHECK(std::count(fwd.begin(), fwd.end(), "attention") == m.depth);
  CHECK(std::count(fwd.begin(), fwd.end(), "linear") >= 4 * m.depth);
  CHECK(std::count(fwd.begin(), fwd.end(), "unit") == 2 * (int)r.layout.units().size());
  CHECK(fwd.front() == "unit");
  // Cleared: nothing is called.
  r.model.tape().set_node_hook({});
  seen.clear();
  r.forward(ctx);
  r.model.backward();
  CHECK(seen.empty());
}
