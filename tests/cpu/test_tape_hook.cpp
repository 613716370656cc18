// The tape's node hook (what bench_train --ops times): called before every node, forward in recording order and
// backward in reverse, with each node's kind.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/local_store.h"
#include "engine/ops_cpu.h"
#include "engine/rng.h"
#include "model/vit.h"

using namespace vit;

TEST_CASE("tape: the node hook sees every node, forward in order and backward in reverse") {
  ModelConfig m;
  m.img_size = {8, 8};
  m.patch_size = 4;
  m.in_chans = 3;
  m.num_classes = 5;
  m.embed_dim = 8;
  m.depth = 2;
  m.num_heads = 2;
  CpuOps<double> ops;
  ParamLayout layout(m);
  LocalStore<CpuOps<double>> store(layout, ops);
  store.init(3);
  const int B = 2;
  const ModelDims d = layout.dims();
  std::vector<float> img(B * d.C * d.H * d.W);
  for (size_t i = 0; i < img.size(); ++i) img[i] = (float)rng::normal(1, 2, i);
  std::vector<int> labels = {0, 3};
  ViT<CpuOps<double>> model(m, layout, ops, B);
  StepContext ctx;
  ctx.train = true;
  ctx.dscale = 1.0 / B;

  std::vector<std::string> seen;
  model.tape().set_node_hook([&](const char* kind) { seen.emplace_back(kind); });
  model.forward(store, img.data(), labels.data(), B, ctx);
  const std::vector<std::string> fwd = seen;
  REQUIRE(fwd.size() == model.tape().size());
  seen.clear();
  model.backward();
  std::vector<std::string> bwd_reversed(seen.rbegin(), seen.rend());
  CHECK(bwd_reversed == fwd);
  // Per block: two layer norms, qkv/proj/fc1/fc2 linears, one attention; units bracket every block.
  CHECK(std::count(fwd.begin(), fwd.end(), "attention") == m.depth);
  CHECK(std::count(fwd.begin(), fwd.end(), "linear") >= 4 * m.depth);
  CHECK(std::count(fwd.begin(), fwd.end(), "unit") == 2 * (int)layout.units().size());
  CHECK(fwd.front() == "unit");

  // Cleared: nothing is called.
  model.tape().set_node_hook({});
  seen.clear();
  model.forward(store, img.data(), labels.data(), B, ctx);
  model.backward();
  CHECK(seen.empty());
}
