// Training-step benchmark, the engine's side of ../shared/anchors/anchor_timm.py (one GPU) and anchor_fsdp2.py
// (mpirun: one GPU per rank): synthetic images and labels already on the device, full fwd + bwd + AdamW steps
// through the same FSDP store and tape as vit_train. Prints img/s, step ms, MFU, memory against ZeRO-3's formula.
//   bench_train CONFIG.toml [--warmup N] [--steps N] [key=value ...]  (e.g. configs/vit_base.toml model.drop_path_rate=0)
// The default 5 + 20 steps match the anchors' short windows (about 1.5 s of ViT-B). The GPUs run power-governed, so
// a short window measures a clock that is still settling: --warmup 150 --steps 460 measures the sustained rate
// (docs/benchmarks.md, session 7), and the BLOCKS line shows the rate of each 20-step block to see the drift.
// --phases adds a PHASES line: the timed steps' mean milliseconds in forward, backward, the gradient reduction's
// tail (what finish_grads waits for after backward), the optimizer, and between steps, from events on the compute
// stream — where a multi-GPU step's extra time goes. --ops adds OPS lines: every tape node timed and summed by kind
// within each phase (tools/op_timer.h; synchronises every step, so its rates are not comparable).
#include <cuda_profiler_api.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm_ce.h"
#include "engine/comm_host.h"
#include "engine/comm_nccl.h"
#include "engine/comm_mpi.h"
#include "engine/config.h"
#include "engine/fsdp.h"
#include "engine/ops_cuda.h"
#include "engine/rng.h"
#include "engine/run.h"
#include "engine/train_step.h"
#include "engine/trainer.h"
#include "model/vit.h"
#include "tools/bench_util.h"
#include "tools/op_timer.h"

using namespace vit;

namespace {
__global__ void fill_images(float* x, long n, uint64_t seed) {
  for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    x[i] = 2.f * rng::uniform(seed, 1, (uint64_t)i) - 1.f;
}
__global__ void fill_labels(int* y, int n, int K, uint64_t seed) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = (int)(rng::bits(seed, 2, (uint64_t)i) % (uint64_t)K);
}
// "--warmup N" / "--steps N": a positive step count, or a one-line error naming the flag.
int step_count(const std::string& flag, const char* value) {
  int n = 0;
  const std::string v = value ? value : "";
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  VIT_REQUIRE(!v.empty() && ec == std::errc() && end == v.data() + v.size() && n > 0 && n <= 1000000,
              flag + " needs a step count from 1 to 1000000 (got '" + v + "')");
  return n;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    MpiSession mpi(&argc, &argv);
    VIT_REQUIRE(argc >= 2, "usage: bench_train CONFIG.toml [--warmup N] [--steps N] [--phases] [--ops] [key=value ...]");
    int warm = 5, steps = 20;
    bool phases = false, op_times = false;
    std::vector<std::string> ov;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--phases" || a == "--ops") {
        (a == "--phases" ? phases : op_times) = true;
      } else if (a == "--warmup" || a == "--steps") {
        (a == "--warmup" ? warm : steps) = step_count(a, i + 1 < argc ? argv[i + 1] : nullptr);
        ++i;
      } else {
        VIT_REQUIRE(!a.starts_with("-"), "unknown flag '" + a + "' (flags: --warmup N, --steps N, --phases, --ops)");
        ov.push_back(a);
      }
    }
    Config cfg = load_config(argv[1], ov);
    CudaOps ops(rank_device(mpi.local_rank(), mpi.rank()));  // one GPU per rank, as vit_train
    CommStream cs(ops.stream());
    auto world = NcclComm::world(cs);
    ParamLayout layout(cfg.model);
    const Strategy st = parse_strategy(cfg.distributed.strategy);
    std::unique_ptr<NcclComm> self = world->split(mpi.rank(), 0);
    FsdpOptions fo;
    fo.bf16_reduce = cfg.distributed.grad_reduce_dtype == "bf16";
    fo.keep_gathered = !cfg.distributed.reshard_after_forward;
    fo.burst = cfg.distributed.comm_burst;
    // The shard group (all ranks), over NCCL's kernels or the copy engines (distributed.transport).
    std::unique_ptr<Comm> group =
        st == Strategy::no_shard ? nullptr : shard_group_comm(*world, 0, mpi.rank(), cfg.distributed.transport);
    FsdpStore<CudaOps> store(layout, ops, st == Strategy::no_shard ? *self : *group,
                             st == Strategy::no_shard && world->size() > 1 ? world.get() : nullptr, st, fo);
    store.init(1);
    const int B = cfg.training.micro_batch_size;
    ViT<CudaOps> model(cfg.model, layout, ops, B);
    const ModelDims& d = layout.dims();
    const long nimg = (long)B * d.C * d.H * d.W;
    float* img = static_cast<float*>(ops.alloc(nimg * sizeof(float), "bench images"));
    int* lab = static_cast<int*>(ops.alloc(B * sizeof(int), "bench labels"));
    fill_images<<<1024, 256, 0, ops.stream()>>>(img, nimg, 7);
    fill_labels<<<(B + 255) / 256, 256, 0, ops.stream()>>>(lab, B, d.K, 7);
    CUDA_CHECK_LAUNCH();
    float* loss = static_cast<float*>(ops.alloc(sizeof(float), "loss"));
    StepSettings s;
    s.accum = 1;
    s.global_batch = B;
    s.label_smoothing = cfg.training.label_smoothing;
    s.grad_clip = cfg.training.grad_clip;
    s.adam = {(float)cfg.optimizer.lr, 0.9f, 0.999f, 1e-8f, 0.05f, 0};
    auto next = [&](int) { return MicroBatch{img, lab, B}; };
    float first_loss = 0;
    double host_step_ms = 0;
    for (int i = 0; i < warm; ++i) {
      s.step = i;
      // The last warm-up step starts on an idle GPU with an empty launch queue, so the host time to issue it
      // is what the host needs per step (in the timed loop a full queue makes the host wait for the GPU).
      if (i == warm - 1) ops.synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      auto r = train_step<CudaOps>(model, store, ops, loss, next, s);
      if (i == warm - 1)
        host_step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (i == 0) first_loss = ops.read_scalar(r.loss_sum);
    }
    // An event every 20 steps: the blocks' rates show whether the clock was still settling.
    constexpr int kBlock = 20;
    const int nev = (steps + kBlock - 1) / kBlock + 1;
    std::vector<bench::Event> ev(nev);
    // --phases: per timed step, an event at its start and at each StepPhase.
    constexpr int kMarks = 5;
    std::vector<bench::Event> marks(phases ? (size_t)steps * kMarks : 0);
    int cur = 0;
    bench::OpTimer op_timer(ops.stream());
    std::function<void(StepPhase)> on_phase;
    if (phases || op_times)
      on_phase = [&](StepPhase p) {
        if (phases) CUDA_CHECK(cudaEventRecord(marks[(size_t)cur * kMarks + 1 + (int)p].get(), ops.stream()));
        if (op_times) op_timer.phase(p);
      };
    if (op_times) model.tape().set_node_hook([&](const char* kind) { op_timer.node(kind); });
    ops.synchronize();
    CUDA_CHECK(cudaEventRecord(ev[0].get(), ops.stream()));
    const float* last = nullptr;
    for (int i = 0; i < steps; ++i) {
      s.step = warm + i;
      cur = i;
      if (phases) CUDA_CHECK(cudaEventRecord(marks[(size_t)i * kMarks].get(), ops.stream()));
      if (op_times) op_timer.begin_step();
      // A profiler started with capture off (ncu --profile-from-start off) sees exactly one timed step.
      if (i == 0) CUDA_CHECK(cudaProfilerStart());
      last = train_step<CudaOps>(model, store, ops, loss, next, s, on_phase).loss_sum;
      if (i == 0) CUDA_CHECK(cudaProfilerStop());
      if (op_times) op_timer.end_step();
      if ((i + 1) % kBlock == 0 || i + 1 == steps)
        CUDA_CHECK(cudaEventRecord(ev[(i + kBlock) / kBlock].get(), ops.stream()));
    }
    CUDA_CHECK(cudaEventSynchronize(ev[nev - 1].get()));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, ev[0].get(), ev[nev - 1].get()));
    ms /= steps;
    std::vector<double> block_ips;  // full blocks only
    for (int b = 0; b + 1 < nev && (b + 1) * kBlock <= steps; ++b) {
      float bms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&bms, ev[b].get(), ev[b + 1].get()));
      block_ips.push_back(B * kBlock / (bms * 1e-3));
    }
    if (phases) {
      double sum[kMarks] = {};  // forward, backward, reduction tail, optimizer, between steps
      for (int i = 0; i < steps; ++i)
        for (int k = 0; k < kMarks; ++k) {
          if (k == kMarks - 1 && i + 1 == steps) break;  // the last step has no next start
          float t = 0;
          const size_t a = (size_t)i * kMarks + k, b = k + 1 < kMarks ? a + 1 : (size_t)(i + 1) * kMarks;
          CUDA_CHECK(cudaEventElapsedTime(&t, marks[a].get(), marks[b].get()));
          sum[k] += t;
        }
      std::printf("PHASES rank=%d/%d ms per step: forward %.2f backward %.2f reduction_tail %.2f optimizer %.2f "
                  "between %.2f\n",
                  world->rank(), world->size(), sum[0] / steps, sum[1] / steps, sum[2] / steps, sum[3] / steps,
                  steps > 1 ? sum[4] / (steps - 1) : 0.0);
    }
    if (op_times) op_timer.report(world->rank(), world->size());
    const float last_loss = ops.read_scalar(last);
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const double ips = B / (ms * 1e-3);
    const double fl = train_flops_per_image(layout);
    // ZeRO-3's per-rank model state: fp32 master, Adam m and v, and the gradient shard, 16 bytes per parameter / N;
    // the rest of the allocation is the working set (activations, gathered slots, workspaces).
    const double params = (double)layout.total_numel();
    const double state_gib = 16.0 * params / world->size() / 1073741824.0;
    std::printf("ENGINE model=%s rank=%d/%d bs=%d strategy=%s grads=%s img_s=%.0f step_ms=%.1f alloc_GiB=%.2f "
                "device_used_GiB=%.2f zero3_state_formula_GiB=%.2f working_set_GiB=%.2f gflop_img=%.1f mfu=%.3f "
                "host_ms_per_step=%.1f warmup=%d steps=%d loss %.4f -> %.4f transport=%s burst=%d\n",
                argv[1], world->rank(), world->size(), B, cfg.distributed.strategy.c_str(),
                cfg.distributed.grad_reduce_dtype.c_str(), ips, ms, ops.memory_in_use() / 1073741824.0,
                (total_b - free_b) / 1073741824.0, state_gib, ops.memory_in_use() / 1073741824.0 - state_gib, fl / 1e9,
                ips * fl / (cfg.logging.peak_tflops * 1e12), host_step_ms, warm, steps, first_loss, last_loss,
                dynamic_cast<CopyEngineComm*>(group.get())   ? "copy_engine"
                : dynamic_cast<HostMemoryComm*>(group.get()) ? "host_memory"
                                                             : "nccl",
                cfg.distributed.comm_burst);
    std::printf("GEMM rank=%d/%d plans=%zu tuned=%zu choices=%016llx\n", world->rank(), world->size(),
                ops.gemm().plan_count(), ops.gemm().tuned_count(),
                (unsigned long long)ops.gemm().choice_fingerprint());
    if (block_ips.size() > 1) {
      const auto [lo, hi] = std::minmax_element(block_ips.begin(), block_ips.end());
      std::printf("BLOCKS rank=%d/%d %zu blocks of %d steps: img/s first %.0f last %.0f min %.0f max %.0f\n",
                  world->rank(), world->size(), block_ips.size(), kBlock, block_ips.front(), block_ips.back(), *lo,
                  *hi);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train: error: %s\n", e.what());
    return 1;
  }
}
