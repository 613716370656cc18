// Flat-buffer FSDP manager, written once over the Comm interface and the backend's Ops, as Megatron-FSDP's
// strategies:
//   no_shard            every rank holds everything; gradients all-reduced (DDP)
//   optim               ZeRO-1: optimizer state (fp32 master, Adam m, v) sharded
//   optim_grads         ZeRO-2: + gradients reduce-scattered per unit during backward
//   optim_grads_params  ZeRO-3: + parameters sharded, gathered per unit before use and dropped after
// Ranks form dp_outer groups of dp_shard consecutive ranks: sharding happens inside a group (the shard
// comm). Across groups (the outer comm) the shards are either replicated (outer gradients all-reduced) or,
// with outer_shard (Megatron-FSDP's outer_dp_sharding_strategy "optim"), the optimizer state is split again
// over the groups: gradient shards reduce-scattered over the outer comm, parameter shards all-gathered back.
// One rank without outer groups runs every strategy as no_shard: nothing to gather or scatter (strategy() still
// reports the configured one).
// Every unit is one flat buffer padded to a multiple of 8·dp_shard (·dp_outer with outer_shard) elements so it
// splits evenly, in 16-byte pieces, over any rank count; a rank owns one contiguous slice of every unit.
//
// Overlap (GPU): collectives run on the comm's own stream. ZeRO-3 gathers the next unit's parameters while the
// current one computes (two slots without bursts, forward and backward; with keep_gathered, FSDP2's reshard_after_forward=False,
// every unit keeps its gathered copy from forward to backward instead: parameters x 2 bytes per rank, and no
// all-gathers in backward); ZeRO-2/3 reduce-scatter each unit's gradient as soon as its backward ends, and
// no_shard / ZeRO-1 reduce each unit during the last micro-batch's backward. What a
// collective lands in a gradient that must be added (later micro-batches, bf16 wire) is added on the compute
// stream one unit (one burst) later, so the compute never waits for the collective it just issued.
// grad_reduce_dtype = bf16: gradients go over the wire as bf16 (half the bytes); accumulation over
// micro-batches and the optimizer stay fp32. Comms of one rank move nothing and keep fp32.
// Bursts (burst = k > 1): ZeRO-3 gathers the next k units at once whenever the next one is missing, and ZeRO-2/3
// reduce-scatter k units' gradients at once (the last burst of backward may be shorter), so the links between
// the GPUs idle k units long between collectives. Costs k + 1 parameter slots and 2k gradient slots instead of 2
// and 2. Same results, but no faster on 2x H200: NVLink sleeps only after 50 ms idle, longer than a step
// (docs/benchmarks.md runs 101-102); the host-memory transport keeps it asleep instead (engine/comm_host.h).
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

struct FsdpOptions {
  bool outer_shard = false;  // shard the optimizer state over the outer groups too (needs a sharded strategy)
  bool bf16_reduce = false;  // gradients travel as bf16
  bool keep_gathered = false;  // ZeRO-3: gathered units stay from forward to backward (not resharded)
  int burst = 1;               // units whose collectives are issued together (distributed.comm_burst)
};

template <class Ops>
class FsdpStore final : public ParamStore<Ops> {
  using P = typename Ops::Param;
  using G = typename Ops::Grad;
  using M = typename Ops::Master;
  using S = typename Ops::Stat;
  using W = typename Ops::Wire;

 public:
  // shard: the ranks that split each unit (size dp_shard); outer: the groups (size dp_outer; may be null when
  // dp_outer == 1). no_shard: the shard comm is the rank itself and the outer comm is the world.
  FsdpStore(const ParamLayout& layout, Ops& ops, Comm& shard, Comm* outer, Strategy st, FsdpOptions opt = {})
      : L_(layout), ops_(ops), shard_(shard), outer_(outer), declared_(st), st_(alone(shard, outer) ? Strategy::no_shard : st) {
    const int Sz = shard_.size(), r = shard_.rank();
    const int O = outer_ ? outer_->size() : 1, o = outer_ ? outer_->rank() : 0;
    VIT_ASSERT(st_ != Strategy::no_shard || Sz == 1, "no_shard needs a shard comm of one rank");
    VIT_REQUIRE(!(opt.outer_shard && st_ == Strategy::no_shard && O > 1),
                "distributed.outer_strategy = \"shard\" shards the optimizer over the outer groups, which needs a "
                "sharded distributed.strategy (optim, optim_grads or optim_grads_params), not no_shard");
    VIT_REQUIRE(opt.burst >= 1, "distributed.comm_burst must be >= 1, got ", opt.burst);
    const int nunits = (int)layout.units().size();
    burst_ = std::min(opt.burst, nunits);
    // The unit computing and the next burst; a burst filling and the previous one being reduced. Never more
    // slots than units: then every unit has its own.
    pslots_ = std::max(2, std::min(burst_ + 1, nunits));
    gslots_ = std::max(2, std::min(2 * burst_, nunits));
    outer_shard_ = opt.outer_shard && O > 1;
    const int split = outer_shard_ ? O : 1;  // optimizer pieces per shard
    wire_shard_ = opt.bf16_reduce && Sz > 1;
    wire_outer_ = opt.bf16_reduce && O > 1;
    const size_t nu = layout.units().size();
    int64_t max_pad = 0, max_shard = 0;
    for (size_t u = 0; u < nu; ++u) {
      const int64_t n = layout.units()[u].numel;
      const int64_t quantum = 8 * (int64_t)Sz * split;
      const int64_t pad = (n + quantum - 1) / quantum * quantum;
      const int64_t s = pad / Sz;
      padded_.push_back(pad);
      shard_range_.push_back({r * s, (r + 1) * s});
      max_pad = std::max(max_pad, pad);
      max_shard = std::max(max_shard, s);
      Range opt_r = shard_range_[u];
      if (st_ == Strategy::no_shard) opt_r = {0, pad};
      else if (outer_shard_) opt_r = {r * s + o * (s / O), r * s + (o + 1) * (s / O)};
      opt_range_.push_back(opt_r);
    }
    for (size_t u = 0; u < nu; ++u) {
      const Range opt_r = opt_range_[u];
      master_.push_back(alloc<M>(opt_r.size(), "master weights"));
      adam_m_.push_back(alloc<M>(opt_r.size(), "adam m"));
      adam_v_.push_back(alloc<M>(opt_r.size(), "adam v"));
      ops_.zero(adam_m_[u], opt_r.size() * sizeof(M));
      ops_.zero(adam_v_[u], opt_r.size() * sizeof(M));
      if (st_ != Strategy::no_shard) {
        grad_shard_.push_back(alloc<G>(shard_range_[u].size(), "gradient shard"));
        ops_.zero(grad_shard_[u], shard_range_[u].size() * sizeof(G));
      }
      if (outer_shard_) grad_opt_.push_back(alloc<G>(opt_r.size(), "outer gradient shard"));
      if (!sharded_grads()) {
        full_g_.push_back(alloc<G>(padded_[u], "gradients"));
        ops_.zero(full_g_[u], padded_[u] * sizeof(G));
      }
      if (st_ == Strategy::optim_grads_params) {
        // The parameter shard in the gathered dtype; on the CPU it is the master itself unless the outer
        // groups split it.
        if constexpr (std::is_same_v<P, M>) {
          if (!outer_shard_) {
            pshard_.push_back(master_[u]);
            continue;
          }
        }
        pshard_.push_back(alloc<P>(shard_range_[u].size(), "parameter shard"));
      } else if (std::is_same_v<P, M> && st_ == Strategy::no_shard) {
        full_p_.push_back(reinterpret_cast<P*>(master_[u]));  // same type: the master is what forward reads
      } else {
        full_p_.push_back(alloc<P>(padded_[u], "parameters"));
      }
    }
    keep_ = opt.keep_gathered && st_ == Strategy::optim_grads_params;
    if (keep_) {
      for (size_t u = 0; u < nu; ++u) p_kept_.push_back(alloc<P>(padded_[u], "gathered parameters (kept)"));
      kept_ready_.resize(nu);
      kept_.assign(nu, false);
    } else if (st_ == Strategy::optim_grads_params) {
      for (int k = 0; k < pslots_; ++k) p_slot_.push_back(alloc<P>(max_pad, "gathered parameters"));
    }
    resident_.assign(pslots_, -1);
    slot_ready_.resize(pslots_);
    if (sharded_grads())
      for (int k = 0; k < gslots_; ++k) {
        g_slot_.push_back(alloc<G>(max_pad, "unit gradients"));
        rs_tmp_.push_back(alloc<G>(max_shard, "reduce-scatter landing"));
      }
    g_slot_read_.resize(gslots_);
    const int wslots = std::max(2, gslots_);  // the shard's bursts use unit % gslots_, the other reductions unit % 2
    if (wire_shard_ || wire_outer_)
      for (int k = 0; k < wslots; ++k) {
        wire_in_.push_back(alloc<W>(max_pad, "bf16 gradient wire"));
        wire_out_.push_back(alloc<W>(max_shard, "bf16 gradient wire (reduced)"));
      }
    wire_read_.resize(wslots);
    fresh_.assign(nu, true);
    reduced_.assign(nu, false);
    scalars_ = alloc<S>(4, "norm scalars");
  }

  ~FsdpStore() override {
    // Collectives may still read or write these buffers on the comm stream.
    shard_.synchronize();
    if (outer_) outer_->synchronize();
    for (void* p : owned_) ops_.release(p);
  }
  FsdpStore(const FsdpStore&) = delete;
  FsdpStore& operator=(const FsdpStore&) = delete;

  Strategy strategy() const { return declared_; }
  // One rank and no outer groups: every strategy holds everything, so the store runs as no_shard (no gathers or
  // scatters that would only copy the rank's own data).
  bool alone() const { return alone(shard_, outer_); }
  bool outer_sharded() const { return outer_shard_; }
  bool keeps_gathered() const { return keep_; }
  int burst() const { return burst_; }
  const Range& opt_range(int u) const { return opt_range_[u]; }
  int64_t padded(int u) const { return padded_[u]; }
  M* master(int u) { return master_[u]; }
  M* adam_m(int u) { return adam_m_[u]; }
  M* adam_v(int u) { return adam_v_[u]; }
  // Ranks holding the same optimizer range (they split the writing of it in a checkpoint) and this rank's
  // index among them.
  int opt_replicas() const { return outer_ && !outer_shard_ ? outer_->size() : 1; }
  int opt_replica() const { return outer_ && !outer_shard_ ? outer_->rank() : 0; }

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
  const P* unit_params(int u) override {
    if (st_ != Strategy::optim_grads_params) return full_p_[u];
    return keep_ ? p_kept_[u] : p_slot_[u % pslots_];
  }
  G* unit_grads(int u) override { return sharded_grads() ? g_slot_[u % gslots_] : full_g_[u]; }

  void forward_begin(int u) override {
    use_params(u);
    // In flight while unit u computes: the next burst, when the next unit is not there yet.
    const int last = (int)padded_.size() - 1;
    if (u < last && !gathered(u + 1))
      for (int v = u + 1; v <= std::min(u + burst_, last); ++v) gather(v);
  }
  void forward_end(int) override {}
  void backward_begin(int u) override {
    use_params(u);
    if (u > 0 && !gathered(u - 1))
      for (int v = u - 1; v >= std::max(0, u - burst_); --v) gather(v);
    if (sharded_grads()) {
      const int k = u % gslots_;
      g_slot_read_[k].wait();  // the reduce-scatter of unit u + gslots_ (a burst before) has read the slot
      ops_.zero(g_slot_[k], padded_[u] * sizeof(G));
    }
  }
  void backward_end(int u) override {
    if (!sharded_grads()) {
      if (reduce_in_backward_) reduce_unit(u);
      return;
    }
    queued_.push_back(u);
    if ((int)queued_.size() == burst_ || u == 0) reduce_queued();  // unit 0 ends backward
  }

  // ---- step ----
  // Called before each micro-batch: the last one reduces no_shard / ZeRO-1 gradients during its backward.
  void begin_micro(int micro, int accum) { reduce_in_backward_ = micro == accum - 1; }

  // Only the buffers backward accumulates into: every gradient shard is overwritten by the step's first
  // landing (reduce-scatter straight into it, or a pending write), so zeroing it would be a wasted pass.
  void zero_grads() {
    for (size_t u = 0; u < padded_.size(); ++u)
      if (!full_g_.empty()) ops_.zero(full_g_[u], padded_[u] * sizeof(G));
    fresh_.assign(padded_.size(), true);
    reduced_.assign(padded_.size(), false);
  }

  // After the last micro-batch: complete the gradient reduction so each rank holds the global sum over
  // its optimizer range, and make the compute stream wait for it.
  void finish_grads() {
    if (!queued_.empty()) reduce_queued();
    if (!sharded_grads())
      for (size_t u = 0; u < padded_.size(); ++u)
        if (!reduced_[u]) reduce_unit((int)u);
    flush_pending();
    if (outer_ && st_ != Strategy::no_shard)
      for (size_t u = 0; u < padded_.size(); ++u) reduce_outer((int)u);
    flush_pending();
    reduce_in_backward_ = false;
    join();
  }

  // The reduced gradient over this rank's optimizer range.
  const G* opt_grad(int u) const {
    if (st_ == Strategy::no_shard) return full_g_[u];
    return outer_shard_ ? grad_opt_[u] : grad_shard_[u];
  }

  // Global gradient norm (sum of squares over the optimizer ranges, all-reduced over the ranks that split
  // them), clipping factor, AdamW on the optimizer range with per-parameter weight decay, then the new
  // parameters published. Returns the pre-clip norm (a device scalar on the GPU: read it only when logging).
  const S* step(const AdamWParams& base, double clip) {
    S* sumsq = scalars_;
    S* norm = scalars_ + 1;
    S* scale = scalars_ + 2;
    ops_.zero(sumsq, sizeof(S));
    for (size_t u = 0; u < padded_.size(); ++u) {
      ops_.sum_squares(sumsq, opt_grad((int)u), opt_range_[u].size());
    }
    if (shard_.size() > 1) shard_.allreduce(sumsq, 1, dtype_of<S>());
    if (outer_shard_) outer_->allreduce(sumsq, 1, dtype_of<S>());
    join();
    ops_.clip_scale(scale, norm, sumsq, clip);
    for (size_t u = 0; u < padded_.size(); ++u) {
      const Range o = opt_range_[u];
      const int64_t n = L_.units()[u].numel;
      // One AdamW launch per unit (or per DecayRuns::kMax runs of it); it writes the gathered-dtype copy in
      // the same pass (no separate cast over the parameters).
      int64_t first = o.begin;  // where the pending runs start
      DecayRuns runs;
      auto flush = [&] {
        const int64_t k = first - o.begin;
        ops_.adamw(master_[u] + k, param_copy((int)u) + k, opt_grad((int)u) + k, adam_m_[u] + k, adam_v_[u] + k,
                   runs, base, scale);
        first += runs.size();
        runs = DecayRuns{};
      };
      L_.for_each_decay_run((int)u, o.begin, std::min(o.end, n), [&](int64_t b, int64_t e, bool decay) {
        VIT_ASSERT(b == first + runs.size(), "fsdp: parameters of unit ", u, " are not contiguous");
        if (!runs.push(e - first, decay)) {
          flush();
          runs.push(e - first, decay);
        }
      });
      if (runs.count) flush();
    }
    share_params();
    return norm;
  }

 private:
  static bool alone(const Comm& shard, const Comm* outer) { return shard.size() == 1 && (!outer || outer->size() == 1); }

  // A point on a comm's stream: compute issued after wait() runs after the collectives before it.
  struct Mark {
    Comm* comm = nullptr;
    Comm::Ticket ticket = 0;
    void wait() const {
      if (comm) comm->wait(ticket);
    }
  };
  static Mark mark(Comm& c) { return {&c, c.ticket()}; }

  // A collective's result still to be added into (or written to) a gradient on the compute stream.
  struct Pending {
    G* dst = nullptr;
    const G* src = nullptr;   // fp32 landing, or
    const W* wire = nullptr;  // bf16 landing
    int64_t n = 0;
    bool add = false;
    Mark done;
  };

  void flush_pending() {
    for (const Pending& p : pending_) {
      p.done.wait();
      if (p.wire) ops_.wire_to_grad(p.dst, p.wire, p.n, p.add);
      else ops_.add_inplace(p.dst, p.src, p.n);
    }
    pending_.clear();
  }

  // ZeRO-2/3: the queued units' gradients (one burst), each summed over the shard group onto its owner: written
  // straight into the gradient shard by the first micro-batch, added to it by later ones (and by the bf16
  // wire). What the previous burst landed is added first, on the compute stream, a burst after it was issued.
  void reduce_queued() {
    flush_pending();
    for (int u : queued_) {
      const int k = u % gslots_;
      const int64_t s = shard_range_[u].size();
      if (wire_shard_) {
        reduce_over_wire(shard_, k, g_slot_[k], padded_[u], grad_shard_[u], s, !fresh_[u]);
      } else if (fresh_[u]) {
        shard_.reduce_scatter(grad_shard_[u], g_slot_[k], s, dtype_of<G>());
      } else {
        shard_.reduce_scatter(rs_tmp_[k], g_slot_[k], s, dtype_of<G>());
        pending_.push_back({grad_shard_[u], rs_tmp_[k], nullptr, s, true, mark(shard_)});
      }
      g_slot_read_[k] = mark(shard_);
      fresh_[u] = false;
    }
    queued_.clear();
  }

  // The compute stream waits for every collective issued so far.
  void join() {
    shard_.wait(shard_.ticket());
    if (outer_) outer_->wait(outer_->ticket());
  }

  // no_shard / ZeRO-1: one unit's accumulated gradient, reduced over the shard group (ZeRO-1: reduce-scatter
  // into the gradient shard) or over the world (no_shard: all-reduce in place).
  void reduce_unit(int u) {
    reduced_[u] = true;
    const int64_t pad = padded_[u];
    const bool no_shard = st_ == Strategy::no_shard;
    Comm* c = no_shard ? outer_ : &shard_;
    if (!c || c->size() == 1) {
      if (!no_shard) ops_.copy(grad_shard_[u], full_g_[u], pad * sizeof(G));  // one rank: the shard is everything
      return;
    }
    flush_pending();
    const bool wire = no_shard ? wire_outer_ : wire_shard_;
    if (!wire) {
      if (no_shard) c->allreduce(full_g_[u], pad, dtype_of<G>());
      else c->reduce_scatter(grad_shard_[u], full_g_[u], shard_range_[u].size(), dtype_of<G>());
      return;
    }
    if (no_shard) reduce_over_wire(*c, u % 2, full_g_[u], pad, full_g_[u], pad, false);
    else reduce_over_wire(*c, u % 2, full_g_[u], pad, grad_shard_[u], shard_range_[u].size(), false);
  }

  // Sharded strategies with outer groups: the shard group's gradient summed over the groups, all-reduced
  // (replicas) or reduce-scattered into this rank's optimizer piece (outer_shard).
  void reduce_outer(int u) {
    flush_pending();
    const int64_t s = shard_range_[u].size(), piece = opt_range_[u].size();
    if (!wire_outer_) {
      if (outer_shard_) outer_->reduce_scatter(grad_opt_[u], grad_shard_[u], piece, dtype_of<G>());
      else outer_->allreduce(grad_shard_[u], s, dtype_of<G>());
      return;
    }
    if (outer_shard_) reduce_over_wire(*outer_, u % 2, grad_shard_[u], s, grad_opt_[u], piece, false);
    else reduce_over_wire(*outer_, u % 2, grad_shard_[u], s, grad_shard_[u], s, false);
  }

  // bf16 on the wire: src (n_in) cast into wire slot k, summed over c into n_out elements (all-reduce in place
  // when n_out == n_in, else reduce-scatter), and left pending to be written (or added) into dst in fp32.
  void reduce_over_wire(Comm& c, int k, const G* src, int64_t n_in, G* dst, int64_t n_out, bool add) {
    wire_read_[k].wait();  // the collective that last read this slot is done
    ops_.grad_to_wire(wire_in_[k], src, n_in);
    const W* landed = wire_in_[k];
    if (n_out == n_in) {
      c.allreduce(wire_in_[k], n_in, DType::bf16);
    } else {
      c.reduce_scatter(wire_out_[k], wire_in_[k], n_out, DType::bf16);
      landed = wire_out_[k];
    }
    pending_.push_back({dst, nullptr, landed, n_out, add, mark(c)});
    wire_read_[k] = pending_.back().done;
  }

  // This rank's optimizer range in the dtype forward reads: a piece of the parameter shard (ZeRO-3), the whole
  // replica (no_shard) or this rank's slice of the full parameters (optim, optim_grads). On the CPU it may be
  // the master itself.
  P* param_copy(int u) {
    if (st_ == Strategy::optim_grads_params) return pshard_[u] + (opt_range_[u].begin - shard_range_[u].begin);
    if (st_ == Strategy::no_shard) return full_p_[u];
    return full_p_[u] + opt_range_[u].begin;
  }
  // This rank's shard range of the parameters in the gathered dtype.
  P* shard_copy(int u) {
    return st_ == Strategy::optim_grads_params ? pshard_[u] : full_p_[u] + shard_range_[u].begin;
  }
  // After the parameter copies changed: the outer groups' pieces are gathered into each shard (outer_shard),
  // then ZeRO-1/2 gather every shard into the full parameters; ZeRO-3 gathers per unit on demand.
  void share_params() {
    if (outer_shard_)
      for (size_t u = 0; u < padded_.size(); ++u)
        outer_->allgather(shard_copy((int)u), param_copy((int)u), opt_range_[u].size(), dtype_of<P>());
    if (st_ == Strategy::optim || st_ == Strategy::optim_grads)
      for (size_t u = 0; u < padded_.size(); ++u)
        shard_.allgather(full_p_[u], shard_copy((int)u), shard_range_[u].size(), dtype_of<P>());
    params_ready_ = mark(shard_);
    resident_.assign(pslots_, -1);
    kept_.assign(kept_.size(), false);
  }

  bool sharded_grads() const { return st_ == Strategy::optim_grads || st_ == Strategy::optim_grads_params; }

  // Before unit u computes: its parameters are there.
  void use_params(int u) {
    if (st_ != Strategy::optim_grads_params) {
      params_ready_.wait();  // ZeRO-1/2: the all-gathers after the last step
      params_ready_ = {};
      return;
    }
    gather(u);
    if (keep_) {
      kept_ready_[u].wait();
      kept_ready_[u] = {};  // waited once: backward and later micro-batches read it without waiting
      return;
    }
    slot_ready_[u % pslots_].wait();
  }

  // Whether unit u's parameters are gathered (or being gathered) for use; always for the other strategies.
  bool gathered(int u) const {
    if (st_ != Strategy::optim_grads_params) return true;
    return keep_ ? kept_[u] : resident_[u % pslots_] == u;
  }

  // ZeRO-3: issue the all-gather of unit u into its slot unless it is already there. The collective waits for
  // the compute issued so far, which includes everything that read the slot's previous unit.
  void gather(int u) {
    if (st_ != Strategy::optim_grads_params) return;
    if (keep_) {  // once per step into the unit's own buffer (the previous step's readers are done: see above)
      if (kept_[u]) return;
      shard_.allgather(p_kept_[u], pshard_[u], shard_range_[u].size(), dtype_of<P>());
      kept_ready_[u] = mark(shard_);
      kept_[u] = true;
      return;
    }
    const int k = u % pslots_;
    if (resident_[k] == u) return;  // still there (the last units between forward and backward)
    shard_.allgather(p_slot_[k], pshard_[u], shard_range_[u].size(), dtype_of<P>());
    slot_ready_[k] = mark(shard_);
    resident_[k] = u;
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
  const Strategy declared_, st_;
  bool outer_shard_ = false, wire_shard_ = false, wire_outer_ = false;
  std::vector<int64_t> padded_;
  std::vector<Range> shard_range_, opt_range_;
  std::vector<M*> master_, adam_m_, adam_v_;
  std::vector<G*> grad_shard_, grad_opt_, full_g_;
  std::vector<P*> pshard_, full_p_;
  int burst_ = 1, pslots_ = 2, gslots_ = 2;
  std::vector<P*> p_slot_;  // ZeRO-3 gathered units, unit u in slot u % pslots_
  bool keep_ = false;
  std::vector<P*> p_kept_;
  std::vector<Mark> kept_ready_;
  std::vector<bool> kept_;  // per unit: gathered since the parameters last changed
  std::vector<G*> g_slot_, rs_tmp_;  // ZeRO-2/3 unit gradients and landings, unit u in slot u % gslots_
  std::vector<W*> wire_in_, wire_out_;
  S* scalars_ = nullptr;
  std::vector<int> resident_;  // per parameter slot: the unit gathered there, or -1
  std::vector<Mark> slot_ready_, g_slot_read_, wire_read_;
  Mark params_ready_;
  std::vector<Pending> pending_;
  std::vector<int> queued_;  // units whose gradients wait for their burst's reduce-scatters
  std::vector<bool> fresh_, reduced_;  // per unit: no micro-batch landed yet / reduced this step
  bool reduce_in_backward_ = false;
  std::vector<void*> owned_;
};

}  // namespace vit
