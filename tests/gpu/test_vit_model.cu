// The whole ViT on the GPU against the CPU backend: same weights (bf16-rounded for both), same batch;
// logits, loss and every parameter gradient compared.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/local_store.h"
#include "engine/ops_cpu.h"
#include "engine/ops_cuda.h"
#include "kernels/attention_bwd_wg.h"
#include "kernels/attention_fwd_wg.h"
#include "model/vit.h"
#include "tests/gpu/gpu_test_util.h"

using namespace vit;

namespace {

// Unit buffers in device memory: bf16 parameters and fp32 gradients, nothing sharded.
class DeviceStore final : public ParamStore<CudaOps> {
 public:
  DeviceStore(const ParamLayout& L, CudaOps& ops, const std::vector<std::vector<float>>& params) : ops_(ops) {
    for (size_t u = 0; u < L.units().size(); ++u) {
      p_.push_back(static_cast<bf16*>(ops.alloc(L.units()[u].numel * sizeof(bf16), "test params")));
      g_.push_back(static_cast<float*>(ops.alloc(L.units()[u].numel * sizeof(float), "test grads")));
      std::vector<bf16> h = test::to_bf(params[u]);
      ops.upload(p_[u], h.data(), h.size() * sizeof(bf16));
      ops.zero(g_[u], L.units()[u].numel * sizeof(float));
    }
  }
  ~DeviceStore() override {
    for (auto* p : p_) ops_.release(p);
    for (auto* g : g_) ops_.release(g);
  }
  const bf16* unit_params(int u) override { return p_[u]; }
  float* unit_grads(int u) override { return g_[u]; }
  void forward_begin(int) override {}
  void forward_end(int) override {}
  void backward_begin(int) override {}
  void backward_end(int) override {}
  std::vector<float> grads(int u, int64_t n) {
    std::vector<float> h(n);
    ops_.download(h.data(), g_[u], n * sizeof(float));
    return h;
  }

 private:
  CudaOps& ops_;
  std::vector<bf16*> p_;
  std::vector<float*> g_;
};

void compare_model(ModelConfig m, const char* what) {
  CAPTURE(what);
  ParamLayout L(m);
  const ModelDims d = L.dims();
  const int B = 3;
  // Weights: the model's own init plus noise (so every path carries signal), rounded to bf16.
  std::vector<std::vector<float>> params(L.units().size());
  for (size_t u = 0; u < L.units().size(); ++u) {
    params[u].resize(L.units()[u].numel);
    L.init_range(params[u].data(), (int)u, 0, L.units()[u].numel, 3);
    auto noise = test::randn_f(params[u].size(), 40 + u, 0.05f);
    for (size_t i = 0; i < params[u].size(); ++i) params[u][i] = test::to_f(test::to_bf(params[u][i] + noise[i]));
  }
  std::vector<float> img = test::randn_f((size_t)B * d.C * d.H * d.W, 9);
  std::vector<int> labels(B);
  for (int i = 0; i < B; ++i) labels[i] = (i * 7 + 1) % d.K;
  StepContext ctx;
  ctx.dscale = 1.0 / B;
  ctx.label_smoothing = 0.1;

  // CPU reference in float.
  CpuOps<float> cops;
  LocalStore<CpuOps<float>> cstore(L, cops);
  for (size_t u = 0; u < L.units().size(); ++u) std::copy(params[u].begin(), params[u].end(), cstore.params((int)u));
  ViT<CpuOps<float>> cm(m, L, cops, B);
  cm.forward(cstore, img.data(), labels.data(), B, ctx);
  cm.backward();
  std::vector<float> clog(cm.logits(), cm.logits() + (size_t)B * d.K);
  double closs = 0;
  for (int i = 0; i < B; ++i) closs += cm.losses()[i];

  // GPU.
  CudaOps gops(0);
  DeviceStore gstore(L, gops, params);
  ViT<CudaOps> gm(m, L, gops, B);
  auto dimg = test::to_device(img);
  auto dlab = test::to_device(labels);
  gm.forward(gstore, dimg.get(), dlab.get(), B, ctx);
  gm.backward();
  std::vector<bf16> glog_b((size_t)B * d.K);
  gops.download(glog_b.data(), gm.logits(), glog_b.size() * sizeof(bf16));
  std::vector<float> glosses(B);
  gops.download(glosses.data(), gm.losses(), B * sizeof(float));
  double gloss = 0;
  for (float x : glosses) gloss += x;

  // bf16 activations through two blocks: ~3 significant digits per op, errors compound over the depth.
  const double logit_err = test::rel_err(test::to_f(glog_b), clog);
  std::printf("vit %-24s logits rel err %.2e, loss %.5f vs %.5f\n", what, logit_err, gloss, closs);
  CHECK(logit_err < 3e-2);
  CHECK(std::abs(gloss - closs) / std::abs(closs) < 1e-2);
  double worst = 0, gmax = 0;
  for (const ParamSpec& P : L.params()) {
    double n2 = 0;
    for (int64_t k = 0; k < P.numel; ++k) n2 += (double)cstore.grad(P.name)[k] * cstore.grad(P.name)[k];
    gmax = std::max(gmax, std::sqrt(n2));
  }
  for (const ParamSpec& P : L.params()) {
    CAPTURE(P.name);
    std::vector<float> gg = gstore.grads(P.unit, L.units()[P.unit].numel);
    std::vector<float> a(gg.begin() + P.offset, gg.begin() + P.offset + P.numel);
    std::vector<float> b(cstore.grad(P.name), cstore.grad(P.name) + P.numel);
    double num = 0, den = 0;
    for (int64_t k = 0; k < P.numel; ++k) {
      num += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
      den += (double)b[k] * b[k];
    }
    // Relative to the tensor's own gradient, floored at 1% of the largest gradient in the model: some
    // gradients are exactly zero in exact arithmetic (the k_norm bias: a shift shared by all keys cancels
    // in the softmax), and there bf16 rounding noise is all there is to compare.
    const double e = std::isfinite(num) ? std::sqrt(num) / std::max(std::sqrt(den), 1e-2 * gmax) : INFINITY;
    worst = std::max(worst, e);
    // Gradients pass through every bf16 activation gradient of the backward; 8e-2 still catches any
    // indexing or missing-term error (those give O(1)).
    CHECK(e < 8e-2);
  }
  std::printf("vit %-24s worst parameter-gradient rel err %.2e over %zu tensors\n", what, worst, L.params().size());
}

ModelConfig small() {
  ModelConfig m;
  m.img_size = {32, 32};
  m.patch_size = 8;
  m.num_classes = 16;
  m.embed_dim = 64;
  m.depth = 2;
  m.num_heads = 2;
  return m;
}

}  // namespace

TEST_CASE("gpu vit: classic model matches the CPU backend") { compare_model(small(), "classic"); }

// Head dim 64, no dropout: the public attention pairing at ViT's head dim, i.e. the wgmma forward and the wgmma
// backward with the qkv bias gradient fused in (where the device takes them: required here, so the test cannot
// pass on a fallback), at T = 17 (one warpgroup) and T = 65 (two, a 1-query last block).
TEST_CASE("gpu vit: head dim 64 (wgmma attention forward and backward, fused qkv bias gradient)") {
  ModelConfig m = small();
  m.embed_dim = 128;
  if (gpu::attn::wg_forward_supports(17, 64))  // a compute capability 9.0 device with the sm_90a build
    REQUIRE(gpu::attn::wg_backward_supports(17, 64));
  else
    WARN_MESSAGE(false, "no compute capability 9.0 device: this case runs the m32 and resident kernels instead");
  compare_model(m, "d64 T17");
  m.img_size = {64, 64};  // 64 patches + the class token
  compare_model(m, "d64 T65");
}

TEST_CASE("gpu vit: avg pool, registers, layer scale, 10 classes (small-GEMM head), gray 28x28 patch 7") {
  ModelConfig m = small();
  m.img_size = {28, 28};
  m.patch_size = 7;
  m.in_chans = 1;
  m.num_classes = 10;
  m.global_pool = "avg";
  m.class_token = false;
  m.reg_tokens = 3;
  m.init_values = 0.5;
  compare_model(m, "avg+reg+ls+odd-shapes");
}

TEST_CASE("gpu vit: pre_norm, scale_attn_norm, scale_mlp_norm, no biases, tanh GELU") {
  ModelConfig m = small();
  m.pre_norm = true;
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  m.qkv_bias = false;
  m.proj_bias = false;
  m.act = "gelu_tanh";
  compare_model(m, "extra-norms+nobias+tanh");
}

TEST_CASE("gpu vit: map pooling head (AttentionPoolLatent), registers, fc_norm, extra norms (the recipe's model)") {
  ModelConfig m = small();
  m.global_pool = "map";
  m.reg_tokens = 4;
  m.fc_norm = "true";
  m.pre_norm = true;
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  compare_model(m, "map+reg+fc_norm+norms");
}

TEST_CASE("gpu vit: qk_norm with the recipe's option set (map head, registers, extra norms, no dropout)") {
  ModelConfig m = small();
  m.qk_norm = true;
  m.global_pool = "map";
  m.reg_tokens = 8;
  m.fc_norm = "true";
  m.pre_norm = true;
  m.scale_attn_norm = true;
  m.scale_mlp_norm = true;
  m.init_variance_rescale = true;
  compare_model(m, "recipe options (qk_norm)");
}

TEST_CASE("gpu vit: patch dropout with registers and the map head (same RNG indices as the CPU)") {
  ModelConfig m = small();
  m.patch_drop_rate = 0.3;
  m.reg_tokens = 2;
  m.global_pool = "map";
  m.fc_norm = "true";
  m.pre_norm = true;
  compare_model(m, "patch_drop+reg+map");
}

TEST_CASE("gpu vit: attention dropout (the GPU kernels draw the CPU's mask), head dims 32 and 64") {
  ModelConfig m = small();
  m.attn_drop_rate = 0.2;
  compare_model(m, "attn_drop d32");
  m.embed_dim = 128;  // 2 heads of 64: the public pairing's resident backward at ViT's head dim
  m.reg_tokens = 4;   // T = 21
  m.proj_drop_rate = 0.1;
  compare_model(m, "attn_drop+proj_drop d64");
}
