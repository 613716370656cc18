// The training program's body, written once for both backends: FSDP groups, model, loaders, resume,
// the step loop with logging, evaluation, checkpoints and preemption. The backend supplies Ops (kernels
// and memory) and the data-parallel Comms (MPI on the CPU, NCCL on the GPU); control traffic (config
// hash, stop flags, metric sums) always goes over MPI.
#pragma once
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"
#include "engine/checkpoint_dir.h"
#include "engine/comm.h"
#include "engine/config.h"
#include "engine/eval_metrics.h"
#include "engine/fsdp.h"
#include "engine/lr_schedule.h"
#include "engine/train_step.h"
#include "engine/watchdog.h"
#include "model/vit.h"
#include "model/timm_weights.h"
#include "model/vit_layout.h"

namespace vit {

// Set by SIGTERM / SIGINT; the loop finishes its step, checkpoints and exits 0.
std::atomic<int>& stop_signal();
void install_stop_handlers();

// Training FLOPs per image (forward + backward), the same count as the PyTorch anchor: 6 · (weights of
// every matrix) · tokens + 12 · depth · tokens² · dim for attention.
double train_flops_per_image(const ParamLayout& layout);

// One line to stdout from rank 0.
void log0(int rank, const std::string& line);
std::string fmt(const char* f, ...);

struct DpGroups {
  Comm* shard;   // the ranks that split each unit
  Comm* outer;   // replicas (null when one group)
};

struct EvalResult {
  double loss = 0, top1 = 0, top5 = 0;
  int64_t count = 0;
};

template <class Ops>
class Trainer {
  using S = typename Ops::Stat;

 public:
  Trainer(const Config& cfg, const std::string& cfg_toml, Ops& ops, DpGroups groups, int rank, int world,
          bool eval_only = false)
      : cfg_(cfg), cfg_toml_(cfg_toml), ops_(ops), rank_(rank), world_(world), layout_(cfg.model) {
    const Strategy st = parse_strategy(cfg.distributed.strategy);
    FsdpOptions fo;
    fo.outer_shard = cfg.distributed.outer_strategy == "shard";
    fo.bf16_reduce = cfg.distributed.grad_reduce_dtype == "bf16";
    fo.keep_gathered = !cfg.distributed.reshard_after_forward;
    fo.burst = cfg.distributed.comm_burst;
    store_ = std::make_unique<FsdpStore<Ops>>(layout_, ops_, *groups.shard, groups.outer, st, fo);
    const TrainingConfig& t = cfg.training;
    model_ = std::make_unique<ViT<Ops>>(cfg.model, layout_, ops_, t.micro_batch_size);
    const ModelDims& d = layout_.dims();
    data::Allocator pinned{[this](size_t n) { return ops_.alloc_host(n); }, [this](void* p) { ops_.free_host(p); }};
    auto logf = [this](const std::string& s) { log0(rank_, s); };
    const int64_t per_step = (int64_t)t.micro_batch_size * t.grad_accum * world_;
    if (!eval_only) {
      train_ = std::make_unique<data::Loader>(cfg.data, d.C, d.H, d.W, data::Split::train, rank_, world_,
                                              t.micro_batch_size, (uint64_t)cfg.run.seed, pinned, logf);
      VIT_REQUIRE(train_->num_classes() <= d.K, "the training data has ", train_->num_classes(),
                  " classes but model.num_classes = ", d.K, ": set model.num_classes >= ", train_->num_classes());
      total_steps_ = t.steps > 0 ? t.steps : t.epochs * (train_->steps_per_epoch() / t.grad_accum);
      VIT_REQUIRE(total_steps_ > 0, "training.steps = 0 and training.epochs = ", t.epochs,
                  " give no optimizer step: set training.steps or training.epochs");
    }
    global_batch_ = per_step;
    for (int k = 0; k < 2; ++k) {  // double-buffered so the next batch's copy overlaps this one's compute
      images_[k] = static_cast<float*>(ops_.alloc((size_t)t.micro_batch_size * d.C * d.H * d.W * sizeof(float), "input images"));
      labels_[k] = static_cast<int*>(ops_.alloc((size_t)t.micro_batch_size * sizeof(int), "input labels"));
    }
    loss_acc_ = static_cast<S*>(ops_.alloc(sizeof(S), "loss accumulator"));
    flops_per_image_ = train_flops_per_image(layout_);
  }
  ~Trainer() {
    for (int k = 0; k < 2; ++k) {
      ops_.release(images_[k]);
      ops_.release(labels_[k]);
    }
    ops_.release(loss_acc_);
  }

  const MemoryPlan& memory_plan() const { return model_->memory_plan(); }
  const ParamLayout& layout() const { return layout_; }

  int run() {
    const TrainingConfig& t = cfg_.training;
    const std::string ckpt_root = t.checkpoint.path;
    int64_t start = 0;
    if (!ckpt_root.empty() && t.checkpoint.resume) start = try_resume(ckpt_root);
    if (start == 0 && !resumed_) {
      store_->init((uint64_t)cfg_.run.seed);
      if (!cfg_.model.init_from.empty()) import_weights(cfg_.model.init_from);
    }
    log0(rank_, fmt("training %lld steps from step %lld: global batch %lld (%d ranks x %d micro x %d accum), %s%s%s, "
                    "gradients reduced in %s%s",
                    (long long)total_steps_, (long long)start, (long long)global_batch_, world_, t.micro_batch_size,
                    t.grad_accum, strategy_name(store_->strategy()),
                    store_->outer_sharded() ? " + optimizer sharded over the outer groups" : "",
                    store_->alone()            ? " (one rank: nothing to shard, nothing gathered)"
                    : store_->keeps_gathered() ? " (gathered units kept for backward)"
                                               : "",
                    cfg_.distributed.grad_reduce_dtype.c_str(),
                    store_->burst() > 1 && !store_->alone()
                        ? fmt(", collectives in bursts of %d units", store_->burst()).c_str()
                        : ""));
    std::filesystem::create_directories(cfg_.run.output_dir);
    std::ofstream metrics;
    if (rank_ == 0) metrics.open(std::filesystem::path(cfg_.run.output_dir) / cfg_.logging.metrics_file, std::ios::app);

    using clock = std::chrono::steady_clock;
    auto t_last = clock::now();
    double data_wait = 0;
    int64_t steps_since = 0;
    EvalResult last_eval;
    bool have_eval = false;
    int64_t step = start;
    Watchdog watchdog(world_ > 1 ? cfg_.distributed.timeout_s : 0.0, rank_);
    for (; step < total_steps_; ++step) {
      watchdog.beat(fmt("step %lld: forward/backward, gradient reduction, optimizer", (long long)(step + 1)));
      maybe_inject_fault(rank_, step + 1);
      StepSettings s;
      s.step = step;
      s.accum = t.grad_accum;
      s.global_batch = global_batch_;
      s.label_smoothing = t.label_smoothing;
      s.grad_clip = t.grad_clip;
      s.seed = (uint64_t)cfg_.run.seed;
      const double lr = lr_at(cfg_.scheduler, cfg_.optimizer.lr, step, total_steps_);
      s.adam = {(float)lr, (float)cfg_.optimizer.betas[0], (float)cfg_.optimizer.betas[1], (float)cfg_.optimizer.eps,
                (float)cfg_.optimizer.weight_decay, 0};
      auto next = [&](int) {
        auto w0 = clock::now();
        ops_.wait_uploads();  // the previous batch's pinned memory is about to be recycled
        const data::Batch& b = train_->next();
        data_wait += std::chrono::duration<double>(clock::now() - w0).count();
        const int k = (int)(uploads_ % 2);
        if (uploads_ > 0) ops_.mark_consumed(1 - k);  // the previous batch (other slot) has had its work queued
        ++uploads_;
        ops_.upload_async(images_[k], b.images, (size_t)b.size * image_elems() * sizeof(float), k);
        ops_.upload_async(labels_[k], b.labels, (size_t)b.size * sizeof(int), k);
        return MicroBatch{images_[k], labels_[k], b.size};
      };
      auto res = train_step<Ops>(*model_, *store_, ops_, loss_acc_, next, s);
      ++steps_since;
      const bool last = step + 1 == total_steps_;
      if ((t.log_interval > 0 && (step + 1) % t.log_interval == 0) || last) {
        double vals[2] = {(double)ops_.read_scalar(res.loss_sum), (double)ops_.read_scalar(res.grad_norm)};
        MPI_Allreduce(MPI_IN_PLACE, vals, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        const double dt = std::chrono::duration<double>(clock::now() - t_last).count();
        const double ips = (double)steps_since * global_batch_ / dt;
        const double mfu = ips * flops_per_image_ / world_ / (cfg_.logging.peak_tflops * 1e12);
        const double eta = (double)(total_steps_ - step - 1) * dt / (double)steps_since;
        const double epoch = (double)(step + 1) * t.grad_accum / (double)train_->steps_per_epoch();
        log0(rank_, fmt("step %6lld/%lld  epoch %6.2f  loss %.4f  lr %.3e  grad_norm %.3f  %8.1f img/s  mfu %.3f  "
                        "mem %.0f MiB  data_wait %.1f%%  eta %.0fs",
                        (long long)(step + 1), (long long)total_steps_, epoch, vals[0], lr, vals[1], ips, mfu,
                        ops_.memory_in_use() / 1048576.0, 100.0 * data_wait / dt, eta));
        if (rank_ == 0)
          metrics << fmt("{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                         "\"img_per_s\": %.2f, \"mfu\": %.4f, \"mem_mib\": %.1f, \"data_wait_frac\": %.4f}\n",
                         (long long)(step + 1), epoch, vals[0], lr, vals[1], ips, mfu, ops_.memory_in_use() / 1048576.0,
                         data_wait / dt)
                  << std::flush;
        t_last = clock::now();
        data_wait = 0;
        steps_since = 0;
      }
      const bool want_eval = !cfg_.data.val_path.empty() || cfg_.data.format == "synthetic";
      if (want_eval && ((t.val_interval > 0 && (step + 1) % t.val_interval == 0) || last)) {
        watchdog.beat(fmt("step %lld: evaluation", (long long)(step + 1)));
        last_eval = evaluate();
        have_eval = true;
        log0(rank_, fmt("eval  step %lld  val_loss %.4f  val_top1 %.2f%%  val_top5 %.2f%%  (%lld images)",
                        (long long)(step + 1), last_eval.loss, 100 * last_eval.top1, 100 * last_eval.top5,
                        (long long)last_eval.count));
        if (rank_ == 0)
          metrics << fmt("{\"step\": %lld, \"val_loss\": %.6f, \"val_top1\": %.6f, \"val_top5\": %.6f, \"val_count\": %lld}\n",
                         (long long)(step + 1), last_eval.loss, last_eval.top1, last_eval.top5,
                         (long long)last_eval.count)
                  << std::flush;
        t_last = clock::now();  // evaluation time is not training throughput
      }
      // Stop requests are agreed on by all ranks so every rank takes the same path.
      int stop = stop_signal().load();
      if (t.stop_after_steps > 0 && step + 1 - start >= t.stop_after_steps && !last) stop = 2;
      MPI_Allreduce(MPI_IN_PLACE, &stop, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
      const bool ckpt_due = !ckpt_root.empty() &&
                            ((t.checkpoint.interval > 0 && (step + 1) % t.checkpoint.interval == 0) || last || stop);
      watchdog.beat(fmt("step %lld: stop-flag all-reduce / checkpoint", (long long)(step + 1)));
      if (ckpt_due) {
        save(ckpt_root, step + 1, have_eval ? &last_eval : nullptr);
        t_last = clock::now();  // checkpoint time is not training throughput either
      }
      if (stop) {
        log0(rank_, fmt("%s: %s step %lld, exiting", stop == 2 ? "training.stop_after_steps reached" : "stop signal received",
                        ckpt_root.empty() ? "no checkpoint path, not saved at" : "checkpointed", (long long)(step + 1)));
        return 0;
      }
    }
    log0(rank_, fmt("done: %lld steps; metrics in %s%s", (long long)step,
                    (std::filesystem::path(cfg_.run.output_dir) / cfg_.logging.metrics_file).c_str(),
                    ckpt_root.empty() ? "" : (", checkpoints in " + ckpt_root).c_str()));
    return 0;
  }

  // vit_eval: the weights of the newest (or best) committed checkpoint under training.checkpoint.path, or
  // model.init_from, evaluated on the validation split. Prints one JSON line (rank 0).
  int run_eval() {
    const std::string& root = cfg_.training.checkpoint.path;
    int64_t step = 0;
    if (!root.empty()) step = try_resume(root);
    if (!resumed_) {
      VIT_REQUIRE(!cfg_.model.init_from.empty() || root.empty(), "no committed checkpoint under training.checkpoint.path = \"",
                  root, "\": train first, or point it at a checkpoint directory");
      VIT_REQUIRE(!cfg_.model.init_from.empty(), "nothing to evaluate: set training.checkpoint.path or model.init_from");
      store_->init((uint64_t)cfg_.run.seed);
      import_weights(cfg_.model.init_from);
    }
    EvalResult e = evaluate();
    log0(rank_, fmt("{\"step\": %lld, \"val_loss\": %.6f, \"val_top1\": %.6f, \"val_top5\": %.6f, \"val_count\": %lld}",
                    (long long)step, e.loss, e.top1, e.top5, (long long)e.count));
    return 0;
  }

  // Whole validation set, every sample exactly once over all ranks; sums across ranks are exact.
  EvalResult evaluate() {
    const ModelDims& d = layout_.dims();
    const int B = cfg_.training.micro_batch_size;
    data::Loader val(cfg_.data, d.C, d.H, d.W, data::Split::val, rank_, world_, B, (uint64_t)cfg_.run.seed,
                     {[this](size_t n) { return ops_.alloc_host(n); }, [this](void* p) { ops_.free_host(p); }},
                     [](const std::string&) {});
    std::vector<typename Ops::Act> logits((size_t)B * d.K);
    std::vector<float> lf(logits.size());
    EvalSums es;
    for (int64_t i = 0; i < val.steps_per_epoch(); ++i) {
      ops_.wait_uploads();
      const data::Batch& b = val.next();
      ops_.upload_async(images_[0], b.images, (size_t)b.size * image_elems() * sizeof(float), 0);
      StepContext ctx;
      ctx.train = false;
      model_->forward(*store_, images_[0], nullptr, b.size, ctx);
      ops_.mark_consumed(0);
      ops_.download(logits.data(), model_->logits(), (size_t)b.size * d.K * sizeof(logits[0]));
      for (size_t k = 0; k < (size_t)b.size * d.K; ++k) lf[k] = (float)to_double(logits[k]);
      accumulate_eval(es, lf.data(), b.labels, b.valid, b.size, d.K);
    }
    double sums[4] = {es.loss, es.top1, es.top5, es.count};
    MPI_Allreduce(MPI_IN_PLACE, sums, 4, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    EvalResult e;
    e.count = (int64_t)sums[3];
    if (e.count > 0) {
      e.loss = sums[0] / sums[3];
      e.top1 = sums[1] / sums[3];
      e.top5 = sums[2] / sums[3];
    }
    return e;
  }

 private:
  template <class X>
  static double to_double(X x) {
    if constexpr (std::is_arithmetic_v<X>) return (double)x;
    else return (double)static_cast<float>(x);
  }
  int64_t image_elems() const {
    const ModelDims& d = layout_.dims();
    return (int64_t)d.C * d.H * d.W;
  }

  // Replicas (no_shard ranks, or identical ranks of other outer groups) each write one slice of what
  // they hold, so a checkpoint stores every element once whatever the strategy.
  void save(const std::string& root, int64_t step, const EvalResult* ev) {
    namespace fs = std::filesystem;
    if (rank_ == 0) ckpt::begin_step(root, step);
    MPI_Barrier(MPI_COMM_WORLD);
    const int replicas = store_->opt_replicas(), replica = store_->opt_replica();
    std::vector<std::vector<float>> keep;  // host copies must outlive write()
    std::vector<std::array<int64_t, 2>> ranges;
    ckpt::FileInfo info{rank_, world_, layout_.hash(), step};
    ckpt::CheckpointWriter w(ckpt::rank_path(root, step, rank_), info);
    ranges.reserve(layout_.units().size());
    keep.reserve(3 * layout_.units().size());
    for (size_t u = 0; u < layout_.units().size(); ++u) {
      const Range o = store_->opt_range((int)u);
      const int64_t n = layout_.units()[u].numel;
      const int64_t lo = std::min(o.begin, n), hi = std::min(o.end, n);
      const int64_t piece = (hi - lo + replicas - 1) / replicas;
      const int64_t b = std::min(hi, lo + replica * piece), e = std::min(hi, b + piece);
      ranges.push_back({b, e});
      const std::string unit = "unit." + std::to_string(u);
      w.add<int64_t>(unit + ".range", std::span<const int64_t>(ranges.back().data(), 2));
      typename Ops::Master* srcs[3] = {store_->master((int)u), store_->adam_m((int)u), store_->adam_v((int)u)};
      const char* kinds[3] = {"master", "adam_m", "adam_v"};
      for (int k = 0; k < 3; ++k) {
        keep.emplace_back(e - b);
        ops_.download(keep.back().data(), srcs[k] + (b - o.begin), (size_t)(e - b) * sizeof(float));
        w.add<float>(unit + "." + kinds[k], std::span<const float>(keep.back()));
      }
    }
    const data::LoaderState ls = train_->state();
    const int64_t loader[2] = {ls.epoch, ls.step_in_epoch};
    w.add<int64_t>("loader", std::span<const int64_t>(loader, 2));
    w.write();
    maybe_inject_fault(rank_, step, "checkpoint");
    MPI_Barrier(MPI_COMM_WORLD);  // every rank's file is durable before the marker
    if (rank_ == 0) {
      std::map<std::string, double> metrics;
      if (ev) {
        metrics["val_loss"] = ev->loss;
        metrics["val_top1"] = ev->top1;
        metrics["val_top5"] = ev->top5;
      }
      ckpt::write_meta(root, step, cfg_toml_, metrics);
      ckpt::commit(root, step);
      auto pr = ckpt::prune(root, cfg_.training.checkpoint.keep_last, cfg_.training.checkpoint.resume_from_metric);
      for (const auto& wmsg : pr.warnings) log0(rank_, "warning: " + wmsg);
      log0(rank_, fmt("checkpoint: %s", ckpt::step_dir(root, step).c_str()));
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }

  // model.init_from: timm weights into this rank's master ranges (fresh init where the file has nothing).
  void import_weights(const std::string& path) {
    TimmImport imp(path, cfg_.model, layout_);
    for (const std::string& n : imp.notes()) log0(rank_, n);
    for (size_t u = 0; u < layout_.units().size(); ++u) {
      const Range o = store_->opt_range((int)u);
      std::vector<float> host(o.size());
      ops_.download(host.data(), store_->master((int)u), host.size() * sizeof(float));
      const int64_t hi = std::min(o.end, layout_.units()[u].numel);
      if (o.begin < hi) imp.fill((int)u, o.begin, hi, host.data());
      ops_.upload(store_->master((int)u), host.data(), host.size() * sizeof(float));
    }
    store_->publish_params();
    log0(rank_, "initialised from " + path);
  }

  // Returns the step to continue from (0 when nothing usable was found).
  int64_t try_resume(const std::string& root) {
    if (!std::filesystem::exists(root)) return 0;
    ckpt::ResumeChoice choice;
    if (rank_ == 0) choice = ckpt::choose_resume(root, cfg_.training.checkpoint.resume_from_metric);
    for (const auto& wmsg : choice.warnings) log0(rank_, "warning: " + wmsg);
    int64_t step = choice.step.value_or(-1);
    MPI_Bcast(&step, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    if (step < 0) return 0;
    ckpt::StepReader reader(root, step);
    VIT_REQUIRE(reader.layout_hash() == layout_.hash(), "checkpoint ", reader.dir().string(),
                " was written for another model shape (layout hash differs): use another training.checkpoint.path "
                "or the model config it was trained with");
    for (size_t u = 0; u < layout_.units().size(); ++u) {
      const Range o = store_->opt_range((int)u);
      const int64_t n = layout_.units()[u].numel;
      const int64_t hi = std::min(o.end, n);
      const std::string unit = "unit." + std::to_string(u);
      typename Ops::Master* dsts[3] = {store_->master((int)u), store_->adam_m((int)u), store_->adam_v((int)u)};
      const char* kinds[3] = {"master", "adam_m", "adam_v"};
      for (int k = 0; k < 3; ++k) {
        std::vector<float> host(o.size(), 0.0f);
        if (o.begin < hi) reader.read_unit_f32(unit, kinds[k], o.begin, std::span<float>(host.data(), hi - o.begin));
        ops_.upload(dsts[k], host.data(), host.size() * sizeof(float));
      }
    }
    auto loader = reader.rank(0).template read_vector<int64_t>("loader");
    VIT_REQUIRE(loader.size() == 2, reader.rank(0).where(), "section 'loader' has ", loader.size(),
                " values, expected 2: the file is damaged; delete ", reader.dir().string());
    if (train_) train_->restore({loader[0], loader[1]});
    store_->publish_params();
    resumed_ = true;
    log0(rank_, fmt("resumed from %s (written by %d ranks)", reader.dir().c_str(), reader.world_size()));
    return step;
  }

  const Config cfg_;
  const std::string cfg_toml_;
  Ops& ops_;
  const int rank_, world_;
  ParamLayout layout_;
  std::unique_ptr<FsdpStore<Ops>> store_;
  std::unique_ptr<ViT<Ops>> model_;
  std::unique_ptr<data::Loader> train_;
  int64_t total_steps_ = 0, global_batch_ = 0;
  float* images_[2] = {nullptr, nullptr};
  int* labels_[2] = {nullptr, nullptr};
  int64_t uploads_ = 0;
  S* loss_acc_ = nullptr;
  double flops_per_image_ = 0;
  bool resumed_ = false;
};

}  // namespace vit
