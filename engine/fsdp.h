// Flat-buffer FSDP manager, written once over the Comm interface and the backend's Ops, as Megatron-FSDP's
// strategies:
//   no_shard            every rank holds everything; gradients all-reduced (DDP)
//   optim               ZeRO-1: optimizer state (fp32 master, Adam m, v) sharded
//   optim_grads         ZeRO-2: + gradients reduce-scattered per unit during backward
//   optim_grads_params  ZeRO-3: + parameters sharded, gathered per unit before use and dropped after
// Ranks form dp_outer groups of dp_shard consecutive ranks: sharding happens inside a group (the shard
// comm), groups replicate each other (the outer comm all-reduces the sharded gradients).
// Every unit is one flat buffer padded to a multiple of 8·dp_shard elements so it splits evenly, in
// 16-byte pieces, over any rank count; a rank owns one contiguous slice of every unit.
#pragma once
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/comm.h"
#include "kernels/adamw.h"
#include "model/vit.h"
#include "model/vit_layout.h"

namespace vit {

enum class Strategy { no_shard, optim, optim_grads, optim_grads_params };
Strategy parse_strategy(const std::string& s);
const char* strategy_name(Strategy s);

template <class X>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<X, float>) return DType::f32;
  else if constexpr (std::is_same_v<X, double>) return DType::f64;
  else return DType::bf16;
}

// Contiguous slice [begin, end) of a unit's padded flat buffer.
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

template <class Ops>
class FsdpStore final : public ParamStore<Ops> {
  using P = typename Ops::Param;
  using G = typename Ops::Grad;
  using M = typename Ops::Master;
  using S = typename Ops::Stat;

 public:
  // shard: the ranks that split each unit (size dp_shard); outer: the replica groups (size dp_outer; may
  // be null when dp_outer == 1).
  FsdpStore(const ParamLayout& layout, Ops& ops, Comm& shard, Comm* outer, Strategy st)
      : L_(layout), ops_(ops), shard_(shard), outer_(outer), st_(st) {
    const int Sz = shard_.size(), r = shard_.rank();
    // no_shard replicates everything: its "shard group" is the rank itself and the outer comm is the world.
    VIT_ASSERT(st_ != Strategy::no_shard || Sz == 1, "no_shard needs a shard comm of one rank");
    const size_t nu = layout.units().size();
    int64_t max_pad = 0, max_shard = 0;
    for (size_t u = 0; u < nu; ++u) {
      const int64_t n = layout.units()[u].numel;
      const int64_t quantum = 8 * (int64_t)Sz;
      const int64_t pad = (n + quantum - 1) / quantum * quantum;
      padded_.push_back(pad);
      shard_range_.push_back({r * (pad / Sz), (r + 1) * (pad / Sz)});
      max_pad = std::max(max_pad, pad);
      max_shard = std::max(max_shard, pad / Sz);
    }
    for (size_t u = 0; u < nu; ++u) {
      const Range opt = st_ == Strategy::no_shard ? Range{0, padded_[u]} : shard_range_[u];
      opt_range_.push_back(opt);
      master_.push_back(alloc<M>(opt.size(), "master weights"));
      adam_m_.push_back(alloc<M>(opt.size(), "adam m"));
      adam_v_.push_back(alloc<M>(opt.size(), "adam v"));
      ops_.zero(adam_m_[u], opt.size() * sizeof(M));
      ops_.zero(adam_v_[u], opt.size() * sizeof(M));
      if (sharded_grads() || st_ == Strategy::optim) {
        grad_shard_.push_back(alloc<G>(shard_range_[u].size(), "gradient shard"));
        ops_.zero(grad_shard_[u], shard_range_[u].size() * sizeof(G));
      }
      if (!sharded_grads()) {
        full_g_.push_back(alloc<G>(padded_[u], "gradients"));
        ops_.zero(full_g_[u], padded_[u] * sizeof(G));
      }
      if (st_ == Strategy::optim_grads_params) {
        // The parameter shard in the gathered dtype; on the CPU it is the master itself.
        if constexpr (std::is_same_v<P, M>) pshard_.push_back(master_[u]);
        else pshard_.push_back(alloc<P>(shard_range_[u].size(), "parameter shard"));
      } else if (std::is_same_v<P, M> && st_ == Strategy::no_shard) {
        full_p_.push_back(reinterpret_cast<P*>(master_[u]));  // same type: the master is what forward reads
      } else {
        full_p_.push_back(alloc<P>(padded_[u], "parameters"));
      }
    }
    if (st_ == Strategy::optim_grads_params)
      for (int s = 0; s < 2; ++s) p_slot_[s] = alloc<P>(max_pad, "gathered parameters");
    if (sharded_grads()) {
      for (int s = 0; s < 2; ++s) g_slot_[s] = alloc<G>(max_pad, "unit gradients");
      rs_tmp_ = alloc<G>(max_shard, "reduce-scatter landing");
    }
    scalars_ = alloc<S>(4, "norm scalars");
  }

  ~FsdpStore() override {
    for (void* p : owned_) ops_.release(p);
  }
  FsdpStore(const FsdpStore&) = delete;
  FsdpStore& operator=(const FsdpStore&) = delete;

  Strategy strategy() const { return st_; }
  const Range& opt_range(int u) const { return opt_range_[u]; }
  int64_t padded(int u) const { return padded_[u]; }
  M* master(int u) { return master_[u]; }
  M* adam_m(int u) { return adam_m_[u]; }
  M* adam_v(int u) { return adam_v_[u]; }

  // Sharded initialisation: each rank fills only its optimizer range from the counter RNG, so no rank
  // ever materialises the whole model in fp32 and the weights do not depend on the rank count.
  void init(uint64_t seed) {
    for (size_t u = 0; u < padded_.size(); ++u) {
      const Range o = opt_range_[u];
      std::vector<M> host(o.size());
      const int64_t n = L_.units()[u].numel;
      const int64_t e = std::min(o.end, n);
      if (o.begin < e) L_.init_range(host.data(), (int)u, o.begin, e, seed);
      std::fill(host.begin() + std::max<int64_t>(0, e - o.begin), host.end(), M(0));
      ops_.upload(master_[u], host.data(), host.size() * sizeof(M));
    }
    publish_params();
  }

  // After the master weights changed (init, load, optimizer step): refresh what forward reads.
  void publish_params() {
    for (size_t u = 0; u < padded_.size(); ++u) ops_.master_to_param(param_copy((int)u), master_[u], opt_range_[u].size());
    share_params();
  }

  // ---- ParamStore ----
  const P* unit_params(int u) override { return st_ == Strategy::optim_grads_params ? p_slot_[u % 2] : full_p_[u]; }
  G* unit_grads(int u) override { return sharded_grads() ? g_slot_[u % 2] : full_g_[u]; }

  void forward_begin(int u) override { gather(u); }
  void forward_end(int) override {}
  void backward_begin(int u) override {
    gather(u);
    if (sharded_grads()) ops_.zero(g_slot_[u % 2], padded_[u] * sizeof(G));
  }
  void backward_end(int u) override {
    if (!sharded_grads()) return;
    // This micro-batch's unit gradient, summed over the shard group, lands on its owner and is added to
    // the gradient shard (micro-batches accumulate there).
    const Range s = shard_range_[u];
    shard_.reduce_scatter(rs_tmp_, g_slot_[u % 2], s.size(), dtype_of<G>());
    ops_.add_inplace(grad_shard_[u], rs_tmp_, s.size());
  }

  // ---- step ----
  void zero_grads() {
    for (size_t u = 0; u < padded_.size(); ++u) {
      if (!full_g_.empty()) ops_.zero(full_g_[u], padded_[u] * sizeof(G));
      if (!grad_shard_.empty()) ops_.zero(grad_shard_[u], shard_range_[u].size() * sizeof(G));
    }
  }

  // After the last micro-batch: complete the gradient reduction so each rank holds the global sum over
  // its optimizer range.
  void finish_grads() {
    for (size_t u = 0; u < padded_.size(); ++u) {
      if (st_ == Strategy::no_shard) {
        if (outer_) outer_->allreduce(full_g_[u], padded_[u], dtype_of<G>());
        continue;
      }
      if (st_ == Strategy::optim)
        shard_.reduce_scatter(grad_shard_[u], full_g_[u], shard_range_[u].size(), dtype_of<G>());
      if (outer_) outer_->allreduce(grad_shard_[u], shard_range_[u].size(), dtype_of<G>());
    }
  }

  // The reduced gradient over this rank's optimizer range.
  const G* opt_grad(int u) const {
    return st_ == Strategy::no_shard ? full_g_[u] : grad_shard_[u];
  }

  // Global gradient norm (sum of squares over the shards, all-reduced in the shard group), clipping
  // factor, AdamW on the optimizer range with per-parameter weight decay, then the new parameters
  // published. Returns the pre-clip norm (a device scalar on the GPU: read it only when logging).
  const S* step(const AdamWParams& base, double clip) {
    S* sumsq = scalars_;
    S* norm = scalars_ + 1;
    S* scale = scalars_ + 2;
    ops_.zero(sumsq, sizeof(S));
    for (size_t u = 0; u < padded_.size(); ++u) {
      ops_.sum_squares(sumsq, opt_grad((int)u), opt_range_[u].size());
    }
    if (shard_.size() > 1) shard_.allreduce(sumsq, 1, dtype_of<S>());
    ops_.clip_scale(scale, norm, sumsq, clip);
    for (size_t u = 0; u < padded_.size(); ++u) {
      const Range o = opt_range_[u];
      const int64_t n = L_.units()[u].numel;
      L_.for_each_decay_run((int)u, o.begin, std::min(o.end, n), [&](int64_t b, int64_t e, bool decay) {
        AdamWParams ap = base;
        if (!decay) ap.weight_decay = 0;
        const int64_t k = b - o.begin;
        // AdamW writes the gathered-dtype copy in the same pass (no separate cast over the parameters).
        ops_.adamw(master_[u] + k, param_copy((int)u) + k, opt_grad((int)u) + k, adam_m_[u] + k, adam_v_[u] + k,
                   e - b, ap, scale);
      });
    }
    share_params();
    return norm;
  }

 private:
  // This rank's optimizer range in the dtype forward reads: the parameter shard (ZeRO-3), the whole replica
  // (no_shard) or this rank's slice of the full parameters (optim, optim_grads). On the CPU it may be the
  // master itself.
  P* param_copy(int u) {
    if (st_ == Strategy::optim_grads_params) return pshard_[u];
    if (st_ == Strategy::no_shard) return full_p_[u];
    return full_p_[u] + opt_range_[u].begin;
  }
  // After the parameter copies changed: ZeRO-1/2 gather every slice into the full parameters; ZeRO-3 gathers
  // per unit on demand, so only the slot bookkeeping is reset.
  void share_params() {
    if (st_ == Strategy::optim || st_ == Strategy::optim_grads)
      for (size_t u = 0; u < padded_.size(); ++u)
        shard_.allgather(full_p_[u], full_p_[u] + opt_range_[u].begin, opt_range_[u].size(), dtype_of<P>());
    resident_[0] = resident_[1] = -1;
  }

  bool sharded_grads() const { return st_ == Strategy::optim_grads || st_ == Strategy::optim_grads_params; }

  void gather(int u) {
    if (st_ != Strategy::optim_grads_params) return;
    if (resident_[u % 2] == u) return;  // still there (the head between forward and backward)
    shard_.allgather(p_slot_[u % 2], pshard_[u], shard_range_[u].size(), dtype_of<P>());
    resident_[u % 2] = u;
  }

  template <class X>
  X* alloc(int64_t n, const char* what) {
    void* p = ops_.alloc(std::max<int64_t>(n, 1) * sizeof(X), what);
    owned_.push_back(p);
    return static_cast<X*>(p);
  }

  const ParamLayout& L_;
  Ops& ops_;
  Comm& shard_;
  Comm* outer_;
  const Strategy st_;
  std::vector<int64_t> padded_;
  std::vector<Range> shard_range_, opt_range_;
  std::vector<M*> master_, adam_m_, adam_v_;
  std::vector<G*> grad_shard_, full_g_;
  std::vector<P*> pshard_, full_p_;
  P* p_slot_[2] = {nullptr, nullptr};
  G* g_slot_[2] = {nullptr, nullptr};
  G* rs_tmp_ = nullptr;
  S* scalars_ = nullptr;
  int resident_[2] = {-1, -1};
  std::vector<void*> owned_;
};

}  // namespace vit
