// Model-level dropout (the model-options issue: "with a fixed seed, outputs are reproducible; the kept
// fraction matches the rate statistically; evaluation applies none") for drop_rate (head dropout),
// pos_drop_rate, attn_drop_rate, proj_drop_rate, drop_path_rate and patch_drop_rate, through the whole ViT
// on the CPU backend. A backend that watches the dropout kernels the model calls gives the kept fractions as
// the model sees them.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "engine/local_store.h"
#include "engine/ops_cpu.h"
#include "model/vit.h"

using namespace vit;

namespace {

// What the model asked of one kind of dropout kernel: calls per rate, elements (or samples) seen, kept.
struct Tally {
  int calls = 0;
  double seen = 0, kept = 0, expected_kept = 0, variance = 0;
  bool exact_values = true;  // every output is 0 or input / (1 - p)
  void add(double n, double k, double p) {
    calls++;
    seen += n;
    kept += k;
    expected_kept += n * (1 - p);
    variance += n * p * (1 - p);
  }
};

// The CPU backend, plus a record of every dropout, drop path and patch dropout the model runs (the tape
// calls these by name on its Ops type, so hiding CpuOps' versions intercepts them).
struct ObservingOps : CpuOps<double> {
  std::map<float, Tally> dropout, drop_path, attn;  // by rate
  std::set<uint64_t> attn_sites;                     // RNG streams of the active attention dropouts
  std::vector<std::pair<int, int>> patch_keep;  // (keep, Np) per call
  std::set<int> patch_bad_samples;              // samples whose kept indices were not distinct and in range

  void dropout_forward(double* out, const double* x, i64 n, float p, uint64_t seed, uint64_t site) {
    const std::vector<double> in(x, x + n);  // the model runs dropout in place
    CpuOps::dropout_forward(out, x, n, p, seed, site);
    Tally& t = dropout[p];
    const double scale = 1.0 / (1.0 - (double)p);
    double seen = 0, kept = 0;
    for (i64 i = 0; i < n; ++i) {
      if (in[i] == 0) continue;  // an exact zero tells nothing
      seen++;
      kept += out[i] != 0;
      t.exact_values &= out[i] == 0 || out[i] == in[i] * scale;
    }
    t.add(seen, kept, p);
  }
  void drop_path_forward(double* out, const double* x, int B, i64 per, float p, uint64_t seed, uint64_t site) {
    const std::vector<double> in(x, x + B * per);
    CpuOps::drop_path_forward(out, x, B, per, p, seed, site);
    Tally& t = drop_path[p];
    const double scale = 1.0 / (1.0 - (double)p);
    double kept = 0;
    for (int b = 0; b < B; ++b) {
      // A whole sample's branch is kept (scaled) or dropped.
      bool all_kept = true, all_dropped = true;
      for (i64 i = b * per; i < (b + 1) * per; ++i) {
        all_kept &= out[i] == in[i] * scale;
        all_dropped &= out[i] == 0;
      }
      t.exact_values &= all_kept || all_dropped;
      kept += all_kept && !all_dropped;
    }
    t.add(B, kept, p);
  }
  void patch_keep_indices(int* idx, int B, int Np, int keep, uint64_t seed, uint64_t site) {
    CpuOps::patch_keep_indices(idx, B, Np, keep, seed, site);
    patch_keep.emplace_back(keep, Np);
    for (int b = 0; b < B; ++b) {
      std::set<int> s(idx + (size_t)b * keep, idx + (size_t)(b + 1) * keep);
      if ((int)s.size() != keep || *s.begin() < 0 || *s.rbegin() >= Np) patch_bad_samples.insert(b);
    }
  }
  // Attention dropout lives inside the fused attention: count its mask (attention_dropout.h) over the call's
  // whole (b, h, query, key) grid.
  void attention_forward(double* out, double* lse, const double* qkv, int B, int Tn, int H, int d, double scale,
                         const AttnDropout& drop) {
    CpuOps::attention_forward(out, lse, qkv, B, Tn, H, d, scale, drop);
    if (!drop.active()) return;
    attn_sites.insert(drop.site);
    const uint32_t thr = attn_mask::threshold(drop.p);
    double kept = 0;
    for (i64 bh = 0; bh < (i64)B * H; ++bh)
      for (int i = 0; i < Tn; ++i)
        for (int j = 0; j < Tn; ++j) kept += attn_mask::keep(drop, thr, bh, i, j);
    attn[drop.p].add((double)B * H * Tn * Tn, kept, thr / 65536.0);  // p as the mask resolves it
  }
  void clear() {
    dropout.clear();
    drop_path.clear();
    attn.clear();
    attn_sites.clear();
    patch_keep.clear();
  }
};

constexpr int kBatch = 8;

ModelConfig dropout_model() {
  ModelConfig m;
  m.img_size = {16, 16};
  m.patch_size = 4;  // 16 patches
  m.in_chans = 3;
  m.num_classes = 5;
  m.embed_dim = 16;
  m.depth = 3;
  m.num_heads = 2;
  m.mlp_ratio = 2;
  m.reg_tokens = 1;
  m.init_values = 0.5;  // layer scale: drop path sits after it
  return m;
}

// Distinct rates, so each kernel call tells which option it serves.
constexpr float kHead = 0.1f, kPos = 0.2f, kProj = 0.3f, kPath = 0.4f, kPatch = 0.5f, kAttn = 0.15f;
enum Rate : unsigned { kOnHead = 1, kOnPos = 2, kOnProj = 4, kOnPath = 8, kOnPatch = 16, kOnAttn = 32, kOnAll = 63 };

ModelConfig with_rates(ModelConfig m, unsigned which) {
  m.drop_rate = which & kOnHead ? kHead : 0;
  m.pos_drop_rate = which & kOnPos ? kPos : 0;
  m.proj_drop_rate = which & kOnProj ? kProj : 0;
  m.drop_path_rate = which & kOnPath ? kPath : 0;
  m.patch_drop_rate = which & kOnPatch ? kPatch : 0;
  m.attn_drop_rate = which & kOnAttn ? kAttn : 0;
  return m;
}

// One model with fixed weights (seed 7, same for every config: the layout does not depend on the rates).
struct Rig {
  ModelConfig m;
  ParamLayout layout;
  ObservingOps ops;
  LocalStore<ObservingOps> store;
  ViT<ObservingOps> model;
  std::vector<float> img;
  std::vector<int> labels;

  explicit Rig(const ModelConfig& mc)
      : m(mc), layout(mc), store(layout, ops), model(mc, layout, ops, kBatch) {
    store.init(7);
    const ModelDims d = layout.dims();
    img.resize((size_t)kBatch * d.C * d.H * d.W);
    for (size_t i = 0; i < img.size(); ++i) img[i] = (float)rng::normal(3, 3, i);
    for (int b = 0; b < kBatch; ++b) labels.push_back(b % d.K);
  }
  std::vector<double> logits(bool train, uint64_t seed, int64_t step, int micro = 0) {
    StepContext ctx;
    ctx.train = train;
    ctx.seed = seed;
    ctx.step = step;
    ctx.micro = micro;
    ctx.dscale = 1.0 / kBatch;
    model.forward(store, img.data(), labels.data(), kBatch, ctx);
    return {model.logits(), model.logits() + (size_t)kBatch * layout.dims().K};
  }
  // Parameter gradients of one training step (from zero).
  std::vector<double> grads(uint64_t seed, int64_t step) {
    store.zero_grads();
    logits(true, seed, step);
    model.backward();
    std::vector<double> g;
    for (size_t u = 0; u < layout.units().size(); ++u)
      g.insert(g.end(), store.grads((int)u), store.grads((int)u) + layout.units()[u].numel);
    return g;
  }
};

}  // namespace

TEST_CASE("vit dropout: same seed and step give identical logits and gradients, another seed, step or micro-step differ") {
  Rig r(with_rates(dropout_model(), kOnAll));
  const auto a = r.logits(true, 42, 3);
  CHECK(r.logits(true, 42, 3) == a);
  CHECK(r.logits(true, 43, 3) != a);
  CHECK(r.logits(true, 42, 4) != a);
  CHECK(r.logits(true, 42, 3, 1) != a);
  // A second model instance with the same weights and context reproduces it too (nothing hidden in state).
  Rig r2(with_rates(dropout_model(), kOnAll));
  CHECK(r2.logits(true, 42, 3) == a);
  const auto g = r.grads(42, 3);
  CHECK(r.grads(42, 3) == g);
  CHECK(r2.grads(42, 3) == g);
  CHECK(r.grads(42, 5) != g);
}

TEST_CASE("vit dropout: each rate alone changes training logits, reproducibly, and evaluation ignores it") {
  const ModelConfig base = dropout_model();
  Rig plain(base);
  const auto ref_eval = plain.logits(false, 0, 0);
  CHECK(plain.logits(true, 42, 1) == ref_eval);  // no rate set: training computes the same function
  const std::pair<const char*, Rate> rates[] = {{"drop_rate", kOnHead},       {"pos_drop_rate", kOnPos},
                                                {"proj_drop_rate", kOnProj},   {"drop_path_rate", kOnPath},
                                                {"patch_drop_rate", kOnPatch}, {"attn_drop_rate", kOnAttn}};
  for (const auto& [name, which] : rates) {
    INFO(name);
    Rig r(with_rates(base, which));
    const auto t = r.logits(true, 42, 1);
    CHECK(t != ref_eval);
    CHECK(r.logits(true, 42, 1) == t);
    CHECK(r.logits(true, 9, 1) != t);
    CHECK(r.logits(false, 42, 1) == ref_eval);
  }
}

TEST_CASE("vit dropout: evaluation with every rate > 0 equals the model with every rate 0 and runs no dropout") {
  Rig on(with_rates(dropout_model(), kOnAll));
  Rig off(dropout_model());
  for (int64_t step : {0, 1, 17}) {
    CHECK(on.logits(false, 42, step) == off.logits(false, 42, step));
    CHECK(on.logits(false, 42, step) == off.logits(true, 42, step));
  }
  // Same losses too (the evaluation loss goes through the same path).
  on.logits(false, 1, 1);
  off.logits(false, 1, 1);
  for (int b = 0; b < kBatch; ++b) CHECK(on.model.losses()[b] == off.model.losses()[b]);
  on.ops.clear();
  on.logits(false, 42, 2);
  CHECK(on.ops.dropout.empty());
  CHECK(on.ops.drop_path.empty());
  CHECK(on.ops.attn.empty());
  CHECK(on.ops.patch_keep.empty());
}

TEST_CASE("vit dropout: every site runs in training with its rate, and the kept fractions match 1 - p") {
  const ModelConfig m = with_rates(dropout_model(), kOnAll);
  Rig r(m);
  r.ops.clear();
  const int steps = 40;
  for (int s = 0; s < steps; ++s) r.logits(true, 1000, s);
  const ModelDims d = r.layout.dims();
  const int keep = patch_drop_keep(d.Np, kPatch);
  const int T = d.prefix + keep;  // tokens after patch dropout

  // Where each rate is applied, per forward: head dropout once on (B, D); pos dropout once on every token
  // before patch dropout; proj dropout three times per block (MLP hidden, attention proj, fc2).
  REQUIRE(r.ops.dropout.size() == 3);
  const Tally& head = r.ops.dropout.at(kHead);
  const Tally& pos = r.ops.dropout.at(kPos);
  const Tally& proj = r.ops.dropout.at(kProj);
  CHECK(head.calls == steps);
  CHECK(pos.calls == steps);
  CHECK(proj.calls == 3 * d.depth * steps);
  // Elements seen (minus the rare exact zeros of the inputs).
  CHECK(head.seen <= (double)steps * kBatch * d.D);
  CHECK(head.seen > 0.99 * steps * kBatch * d.D);
  CHECK(pos.seen > 0.99 * steps * kBatch * d.T * d.D);
  CHECK(proj.seen > 0.99 * steps * kBatch * T * (2.0 * d.D + d.hidden) * d.depth);
  // Drop path: one call per branch per block; timm's linspace(0, rate, depth) gives layer l the rate
  // rate · l / (depth - 1).
  REQUIRE(r.ops.drop_path.size() == (size_t)d.depth);
  for (int l = 0; l < d.depth; ++l) {
    const float p = (float)(kPath * l / (d.depth - 1.0));
    CAPTURE(l);
    REQUIRE(r.ops.drop_path.count(p) == 1);
    CHECK(r.ops.drop_path.at(p).calls == 2 * steps);
    CHECK(r.ops.drop_path.at(p).seen == 2.0 * steps * kBatch);
  }

  // Attention dropout: once per block, each block its own RNG stream, over every (b, h, query, key).
  REQUIRE(r.ops.attn.size() == 1);
  const Tally& att = r.ops.attn.at(kAttn);
  CHECK(att.calls == d.depth * steps);
  CHECK(att.seen == (double)steps * d.depth * kBatch * d.heads * T * T);
  CHECK(r.ops.attn_sites.size() == (size_t)d.depth);

  // Kept counts: a sum of independent Bernoulli(1 - p) draws, within 5 standard deviations of its mean.
  // (Each tally's expectation is Σ n·(1 - p), its variance Σ n·p·(1 - p).)
  auto check_kept = [](const char* what, const Tally& t) {
    INFO(what);
    INFO("kept ", t.kept, " of ", t.seen, ", expected ", t.expected_kept, " ± ", std::sqrt(t.variance));
    CHECK(t.exact_values);
    CHECK(std::abs(t.kept - t.expected_kept) < 5 * std::sqrt(t.variance));
  };
  check_kept("head dropout", head);
  check_kept("pos dropout", pos);
  check_kept("proj dropout", proj);
  check_kept("attention dropout", att);
  Tally path;  // every drop path call with p > 0, pooled
  for (const auto& [p, t] : r.ops.drop_path) {
    CHECK(t.exact_values);
    if (p > 0) {
      path.kept += t.kept;
      path.seen += t.seen;
      path.expected_kept += t.expected_kept;
      path.variance += t.variance;
    } else {
      CHECK(t.kept == t.seen);  // the first block's rate is 0: every sample kept
    }
  }
  path.exact_values = true;
  check_kept("drop path", path);
  // The same bound written as a fraction: |kept / n - (1 - p)| < 5 sqrt(p (1 - p) / n).
  CHECK(std::abs(head.kept / head.seen - (1 - kHead)) < 5 * std::sqrt(kHead * (1 - kHead) / head.seen));

  // Patch dropout keeps exactly floor(Np · (1 - p)) patches per sample (timm's num_keep), distinct and in
  // range: the kept fraction is 1 - p within one patch.
  CHECK(r.ops.patch_keep.size() == (size_t)steps);
  for (const auto& [k, np] : r.ops.patch_keep) {
    CHECK(k == keep);
    CHECK(np == d.Np);
  }
  CHECK(std::abs((double)keep / d.Np - (1 - kPatch)) < 1.0 / d.Np);
  CHECK(r.ops.patch_bad_samples.empty());
}
