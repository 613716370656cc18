// The engine's side of the timm parity check (tools/parity.py runs both sides on the GPU machine): loads
// timm weights (safetensors) and a batch, runs forward + backward on the chosen backend with dropouts off,
// then one AdamW step, and writes logits, per-sample losses, every parameter gradient and the updated
// weights, all in timm naming, to OUT.safetensors.
//   parity_dump CONFIG.toml WEIGHTS.safetensors BATCH.bin OUT.safetensors cpu|cuda [key=value ...]
// BATCH.bin: int32 B, then B·C·H·W float32 images, then B int32 labels (what parity.py writes).
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm_mpi.h"
#include "engine/comm_nccl.h"
#include "engine/config.h"
#include "engine/fsdp.h"
#include "engine/ops_cpu.h"
#include "engine/ops_cuda.h"
#include "engine/safetensors.h"
#include "engine/train_step.h"
#include "model/timm_weights.h"
#include "model/vit.h"

using namespace vit;

namespace {

struct Batch {
  int B = 0;
  std::vector<float> images;
  std::vector<int> labels;
};

Batch read_batch(const std::string& path, const ModelDims& d) {
  std::ifstream f(path, std::ios::binary);
  VIT_REQUIRE(f, "cannot open batch file ", path);
  Batch b;
  f.read(reinterpret_cast<char*>(&b.B), 4);
  VIT_REQUIRE(f && b.B > 0 && b.B < 65536, path, ": bad batch size");
  b.images.resize((size_t)b.B * d.C * d.H * d.W);
  b.labels.resize(b.B);
  f.read(reinterpret_cast<char*>(b.images.data()), b.images.size() * 4);
  f.read(reinterpret_cast<char*>(b.labels.data()), b.labels.size() * 4);
  VIT_REQUIRE(f, path, ": truncated (expected ", b.B, " images of ", d.C, "x", d.H, "x", d.W, " and labels)");
  return b;
}

template <class Ops>
void run(Ops& ops, Comm& self, const Config& cfg, const std::string& weights, const Batch& batch, const std::string& out) {
  ParamLayout L(cfg.model);
  const ModelDims& d = L.dims();
  FsdpStore<Ops> store(L, ops, self, nullptr, Strategy::no_shard);
  store.init(0);
  TimmImport imp(weights, cfg.model, L);
  for (size_t u = 0; u < L.units().size(); ++u) {
    std::vector<float> host(store.opt_range((int)u).size(), 0.f);
    imp.fill((int)u, 0, L.units()[u].numel, host.data());
    ops.upload(store.master((int)u), host.data(), host.size() * sizeof(float));
  }
  store.publish_params();
  ViT<Ops> model(cfg.model, L, ops, batch.B);
  float* img = static_cast<float*>(ops.alloc(batch.images.size() * sizeof(float), "images"));
  int* lab = static_cast<int*>(ops.alloc(batch.labels.size() * sizeof(int), "labels"));
  ops.upload(img, batch.images.data(), batch.images.size() * sizeof(float));
  ops.upload(lab, batch.labels.data(), batch.labels.size() * sizeof(int));
  auto* loss = static_cast<typename Ops::Stat*>(ops.alloc(sizeof(typename Ops::Stat), "loss"));
  StepSettings s;
  s.accum = 1;
  s.global_batch = batch.B;
  s.label_smoothing = cfg.training.label_smoothing;
  s.grad_clip = 0;  // the comparison is of AdamW itself
  s.adam = {(float)cfg.optimizer.lr, (float)cfg.optimizer.betas[0], (float)cfg.optimizer.betas[1],
            (float)cfg.optimizer.eps, (float)cfg.optimizer.weight_decay, 0};
  // Logits and losses of the forward that the step runs, read back before the update.
  std::vector<float> logits((size_t)batch.B * d.K), losses(batch.B);
  std::vector<std::vector<float>> grads(L.units().size());
  auto next = [&](int) { return MicroBatch{img, lab, batch.B}; };
  // train_step would update the weights right away: run its pieces to capture the gradients in between.
  store.zero_grads();
  StepContext ctx;
  ctx.dscale = 1.0 / batch.B;
  ctx.label_smoothing = s.label_smoothing;
  MicroBatch mb = next(0);
  model.forward(store, mb.images, mb.labels, mb.n, ctx);
  model.backward();
  std::vector<typename Ops::Act> lg(logits.size());
  ops.download(lg.data(), model.logits(), lg.size() * sizeof(lg[0]));
  for (size_t i = 0; i < lg.size(); ++i) logits[i] = (float)lg[i];
  std::vector<typename Ops::Stat> ls(batch.B);
  ops.download(ls.data(), model.losses(), ls.size() * sizeof(ls[0]));
  for (int i = 0; i < batch.B; ++i) losses[i] = (float)ls[i];
  store.finish_grads();
  for (size_t u = 0; u < L.units().size(); ++u) {
    std::vector<typename Ops::Grad> g(store.opt_range((int)u).size());
    ops.download(g.data(), store.opt_grad((int)u), g.size() * sizeof(g[0]));
    grads[u].assign(g.begin(), g.end());
  }
  AdamWParams ap = s.adam;
  ap.step = 1;
  store.step(ap, 0.0);
  std::vector<std::vector<float>> after(L.units().size());
  for (size_t u = 0; u < L.units().size(); ++u) {
    after[u].resize(store.opt_range((int)u).size());
    ops.download(after[u].data(), store.master((int)u), after[u].size() * sizeof(float));
  }
  safetensors::Writer w;
  w.add_f32("logits", {batch.B, d.K}, logits);
  w.add_f32("losses", {batch.B}, losses);
  for (const ParamSpec& p : L.params()) {
    w.add_f32("grad." + p.name, p.shape, std::span<const float>(grads[p.unit].data() + p.offset, p.numel));
    w.add_f32("after." + p.name, p.shape, std::span<const float>(after[p.unit].data() + p.offset, p.numel));
  }
  w.write(out);
  ops.release(img);
  ops.release(lab);
  ops.release(loss);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    MpiSession mpi(&argc, &argv);
    VIT_REQUIRE(argc >= 6, "usage: parity_dump CONFIG.toml WEIGHTS.safetensors BATCH.bin OUT.safetensors cpu|cuda [key=value ...]");
    std::vector<std::string> ov(argv + 6, argv + argc);
    // Dropouts off: the comparison is of the deterministic function.
    for (const char* k : {"model.drop_rate=0", "model.pos_drop_rate=0", "model.patch_drop_rate=0", "model.proj_drop_rate=0",
                          "model.attn_drop_rate=0", "model.drop_path_rate=0"})
      ov.push_back(k);
    Config cfg = load_config(argv[1], ov);
    const ModelDims d = model_dims(cfg.model);
    Batch batch = read_batch(argv[3], d);
    const std::string dev = argv[5];
    if (dev == "cpu") {
      CpuOps<float> ops;
      MpiComm self(MPI_COMM_SELF);
      run(ops, self, cfg, argv[2], batch, argv[4]);
    } else {
      VIT_REQUIRE(dev == "cuda", "device must be cpu or cuda, not ", dev);
      CudaOps ops(0);
      CommStream cs(ops.stream());
      auto world = NcclComm::world(cs);
      run(ops, *world, cfg, argv[2], batch, argv[4]);
    }
    std::printf("parity_dump: wrote %s (%s)\n", argv[4], dev.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parity_dump: error: %s\n", e.what());
    return 1;
  }
}
