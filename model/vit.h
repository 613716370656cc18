// The Vision Transformer as timm builds it, written once for both backends. forward() runs the ops through
// the tape (recording them when training), backward() replays the tape in reverse. Activation and
// activation-gradient memory is planned here from the config and the micro-batch; parameters and their
// gradients live in per-unit flat buffers owned by the parameter store (single rank or FSDP), which hands
// out stable pointers (see ParamStore).
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/config.h"
#include "engine/memory_plan.h"
#include "engine/rng.h"
#include "engine/tape.h"
#include "kernels/patch_drop.h"
#include "model/vit_layout.h"

namespace vit {

// Where each unit's (gathered) parameters and full-size gradients are. Pointers stay valid for a whole
// step; their contents are guaranteed only between the unit hooks' begin and end.
template <class Ops>
struct ParamStore : UnitHooks {
  virtual const typename Ops::Param* unit_params(int unit) = 0;
  virtual typename Ops::Grad* unit_grads(int unit) = 0;
};

struct StepContext {
  bool train = true;          // dropouts on, tape recorded, dlogits computed
  uint64_t seed = 0;          // dropout masks: keyed by (seed, step, micro-step)
  int64_t step = 0;
  int micro = 0;
  double dscale = 1.0;        // dlogits scale: 1 / global batch
  double label_smoothing = 0;
};

template <class Ops>
class ViT {
  using A = typename Ops::Act;
  using P = typename Ops::Param;
  using G = typename Ops::Grad;
  using S = typename Ops::Stat;
  using Nd = Nodes<Ops>;

 public:
  ViT(const ModelConfig& mc, const ParamLayout& layout, Ops& ops, int batch)
      : mc_(mc), L_(layout), d_(layout.dims()), ops_(ops), tape_(ops), B_(batch) {
    check_supported();
    plan();
    const ModelDims& d = d_;
    ops_.prepare(B_, d.T, d.D, d.hidden, d.heads, d.hd);
    const size_t free_b = ops_.free_memory();
    if (plan_.total() > free_b) {
      const size_t fixed = plan_.total() - plan_.per_sample_total();
      const size_t per = plan_.per_sample_total() / (size_t)B_;
      const size_t fits = free_b > fixed ? (free_b - fixed) / per : 0;
      fail("the activations of micro-batch ", B_, " need ", plan_.total() >> 20, " MiB but only ", free_b >> 20,
           " MiB are free: the largest micro-batch that fits is ", fits, "; set training.micro_batch_size <= ", fits,
           " (and raise training.grad_accum to keep the global batch)");
    }
    arena_ = static_cast<char*>(ops_.alloc(plan_.total(), "activations"));
  }
  ~ViT() { ops_.release(arena_); }
  ViT(const ViT&) = delete;
  ViT& operator=(const ViT&) = delete;

  const MemoryPlan& memory_plan() const { return plan_; }
  int batch() const { return B_; }
  const A* logits() const { return buf<A>(o_logits_); }
  const S* losses() const { return buf<S>(o_losses_); }
  Tape<Ops>& tape() { return tape_; }

  // images: (B, C, H, W) float in the backend's memory; labels: (B) ints there too. `n` <= planned batch.
  void forward(ParamStore<Ops>& store, const float* images, const int* labels, int n, const StepContext& ctx) {
    VIT_ASSERT(n >= 1 && n <= B_);
    const ModelDims& d = d_;
    const i64 D = d.D;
    tape_.start(ctx.train);
    const uint64_t dseed = rng::mix64(ctx.seed ^ rng::mix64((uint64_t)ctx.step * 1024 + (uint64_t)ctx.micro));
    store_ = &store;
    const bool train = ctx.train;
    // Patch dropout (training only) shortens the sequence: T_ is the token count from there on.
    const bool pdrop = train && mc_.patch_drop_rate > 0;
    const int keep = pdrop ? patch_drop_keep(d.Np, mc_.patch_drop_rate) : d.Np;
    T_ = d.prefix + keep;
    const i64 rows_full = (i64)n * d.T;
    const i64 rows = (i64)n * T_;
    auto drop = [&](A* x, A* dx, i64 count, double p, uint64_t site) {
      if (train && p > 0) tape_.run(typename Nd::Dropout{x, x, count, (float)p, dseed, site, dx, dx});
    };

    // ---- embedding unit ----
    tape_.run(typename Nd::Unit{0, true, &store});
    A* ptok = buf<A>(o_ptok_);
    tape_.run(typename Nd::PatchEmbed{ptok, buf<A>(o_patches_), images, prm("patch_embed.proj.weight"),
                                      prm("patch_embed.proj.bias"), buf<A>(o_dptok_), grd("patch_embed.proj.weight"),
                                      grd("patch_embed.proj.bias"), n, d.C, d.H, d.W, d.p, d.D});
    EmbedShape es{n, d.Np, d.D, mc_.reg_tokens, d.cls, mc_.no_embed_class};
    A* dres = buf<A>(o_dres_);
    A* dsm = buf<A>(o_dsm_);
    // Gradient buffers, chosen so nothing in flight is overwritten: the tensor that starts the residual stream
    // has its gradient in dres; a tensor in front of norm_pre or patch dropout gets the other of (dres, dsm).
    //   plain:               embed -> [x = res0]                       dx0 = dres
    //   pre_norm:            embed -> x -> norm_pre -> res             dx0 = dsm
    //   patch drop:          embed -> xe -> drop -> [res0]             dxe = dsm
    //   patch drop+pre_norm: embed -> xe -> drop -> xp -> norm_pre     dxp = dsm, dxe = dres
    A* xe = pdrop ? buf<A>(o_embed_) : res(0);
    A* dxe = pdrop ? (mc_.pre_norm ? dres : dsm) : (mc_.pre_norm ? dsm : dres);
    tape_.run(typename Nd::Embed{xe, ptok, prm("cls_token"), prm("reg_token"), d.Tpos ? prm("pos_embed") : nullptr, es,
                                 dxe, buf<A>(o_dptok_), grd("cls_token"), grd("reg_token"),
                                 d.Tpos ? grd("pos_embed") : nullptr});
    drop(xe, dxe, rows_full * D, mc_.pos_drop_rate, site(-1, 0));
    A* x = xe;
    A* dx = dxe;
    if (pdrop) {
      x = res(0);
      dx = mc_.pre_norm ? dsm : dres;
      tape_.run(typename Nd::PatchDrop{x, xe, buf<int>(o_keep_), n, d.prefix, d.Np, keep, d.D, dseed, site(-1, 8), dx,
                                       dxe});
    }
    if (mc_.pre_norm) {
      A* xn = buf<A>(o_prenorm_);
      tape_.run(typename Nd::LayerNorm{xn, buf<S>(o_prestat_), buf<S>(o_prestat_) + rows, x, prm("norm_pre.weight"),
                                       prm("norm_pre.bias"), rows, d.D, 1e-6, dres, dx,
                                       grd("norm_pre.weight"), grd("norm_pre.bias"), false});
      x = xn;
    }
    tape_.run(typename Nd::Unit{0, false, &store});

    // ---- transformer blocks ----
    for (int l = 0; l < d.depth; ++l) {
      const std::string b = "blocks." + std::to_string(l) + ".";
      const int u = 1 + l;
      tape_.run(typename Nd::Unit{u, true, &store});
      A* xout = res(l + 1);
      A* ln1 = lbuf<A>(o_ln1_, l);
      S* st1 = lbuf<S>(o_st1_, l);
      A* dsm = buf<A>(o_dsm_);
      tape_.run(typename Nd::LayerNorm{ln1, st1, st1 + rows, x, prm(b + "norm1.weight"), prm(b + "norm1.bias"), rows,
                                       d.D, 1e-6, dsm, dres, grd(b + "norm1.weight"), grd(b + "norm1.bias"), true});
      A* qkv = lbuf<A>(o_qkv_, l);
      A* dqkv = buf<A>(o_dqkv_);
      // Without qk_norm the attention backward writes the qkv linear's output gradient itself and sums its
      // bias gradient on the way.
      G* dqkv_b = grd(b + "attn.qkv.bias");
      G* attn_dbias = mc_.qk_norm ? nullptr : dqkv_b;
      tape_.run(typename Nd::Linear{qkv, ln1, prm(b + "attn.qkv.weight"), prm(b + "attn.qkv.bias"), rows, d.D, 3 * d.D,
                                    dqkv, dsm, grd(b + "attn.qkv.weight"), attn_dbias ? nullptr : dqkv_b, false});
      A* att_in = qkv;
      A* datt_in = dqkv;
      if (mc_.qk_norm) {
        // q and k normalised per head; the attention's input gradient lands in a second qkv-sized buffer
        // that the norm's backward turns into the qkv linear's output gradient.
        att_in = lbuf<A>(o_qkn_, l);
        datt_in = buf<A>(o_dqkv2_);
        S* st = lbuf<S>(o_qkst_, l);
        const i64 nrows = rows * d.heads;
        tape_.run(typename Nd::QkNorm{att_in, st, st + 2 * nrows, qkv, prm(b + "attn.q_norm.weight"),
                                      prm(b + "attn.q_norm.bias"), prm(b + "attn.k_norm.weight"), prm(b + "attn.k_norm.bias"),
                                      rows, d.heads, d.hd, datt_in, dqkv, grd(b + "attn.q_norm.weight"),
                                      grd(b + "attn.q_norm.bias"), grd(b + "attn.k_norm.weight"),
                                      grd(b + "attn.k_norm.bias")});
      }
      A* att = lbuf<A>(o_att_, l);
      A* datt = buf<A>(o_dsm2_);
      // timm attn_drop on the softmax probabilities (training only; the mask is regenerated in backward)
      const AttnDropout attn_drop = train && mc_.attn_drop_rate > 0
                                        ? AttnDropout{(float)mc_.attn_drop_rate, dseed, site(l, 7)}
                                        : AttnDropout{};
      tape_.run(typename Nd::Attention{att, lbuf<S>(o_lse_, l), att_in, n, T_, d.heads, d.hd,
                                       1.0 / std::sqrt((double)d.hd), datt, datt_in, attn_drop, attn_dbias});
      // attention branch: proj -> proj_drop -> ls1 -> drop_path, then the residual add
      A* h = lbuf<A>(o_h_, l);
      A* proj_in = att;
      A* dproj_in = datt;
      if (mc_.scale_attn_norm) {
        // timm Attention.norm: LayerNorm(dim) between the attention and proj. Its output gradient lives in
        // the norm-out gradient buffer, free until the qkv backward writes it.
        proj_in = lbuf<A>(o_an_, l);
        dproj_in = dsm;
        S* st = lbuf<S>(o_anst_, l);
        tape_.run(typename Nd::LayerNorm{proj_in, st, st + rows, att, prm(b + "attn.norm.weight"), prm(b + "attn.norm.bias"),
                                         rows, d.D, 1e-6, dproj_in, datt, grd(b + "attn.norm.weight"),
                                         grd(b + "attn.norm.bias"), false});
      }
      // norm2's backward sums proj's bias gradient when proj adds the skip connection itself (same unit, so
      // the same gradient buffer; fc2's next norm is in the next unit, whose gradients FSDP keeps elsewhere).
      G* proj_bias = branch(b, "attn.proj", "ls1", proj_in, dproj_in, h, x, dres, rows, n, l, 1, dseed, train, true);
      // MLP branch: norm2 -> fc1 -> act -> drop -> fc2 -> drop -> ls2 -> drop_path
      A* ln2 = lbuf<A>(o_ln2_, l);
      S* st2 = lbuf<S>(o_st2_, l);
      tape_.run(typename Nd::LayerNorm{ln2, st2, st2 + rows, h, prm(b + "norm2.weight"), prm(b + "norm2.bias"), rows,
                                       d.D, 1e-6, dsm, dres, grd(b + "norm2.weight"), grd(b + "norm2.bias"), true,
                                       proj_bias});
      const i64 HH = d.hidden;
      A* f = lbuf<A>(o_f_, l);
      A* df = buf<A>(o_df_);
      // fc1's bias gradient is summed by the GELU backward, which writes fc1's output gradient anyway.
      G* dfc1_b = grd(b + "mlp.fc1.bias");
      tape_.run(typename Nd::Linear{f, ln2, prm(b + "mlp.fc1.weight"), prm(b + "mlp.fc1.bias"), rows, d.D, d.hidden,
                                    df, dsm, grd(b + "mlp.fc1.weight"), nullptr, false});
      A* g = lbuf<A>(o_g_, l);
      A* dg = buf<A>(o_dg_);
      tape_.run(typename Nd::Gelu{g, f, rows * HH, mc_.act == "gelu_tanh", dg, df, dfc1_b, d.hidden});
      drop(g, dg, rows * HH, mc_.proj_drop_rate, site(l, 1));
      A* fc2_in = g;
      A* dfc2_in = dg;
      if (mc_.scale_mlp_norm) {
        // timm Mlp.norm: LayerNorm(hidden) before fc2. Its output gradient uses the fc1-out gradient buffer,
        // which the GELU backward overwrites only after this norm's backward has read it.
        fc2_in = lbuf<A>(o_mn_, l);
        dfc2_in = df;
        S* st = lbuf<S>(o_mnst_, l);
        tape_.run(typename Nd::LayerNorm{fc2_in, st, st + rows, g, prm(b + "mlp.norm.weight"), prm(b + "mlp.norm.bias"), rows,
                                         d.hidden, 1e-6, dfc2_in, dg, grd(b + "mlp.norm.weight"), grd(b + "mlp.norm.bias"),
                                         false});
      }
      branch(b, "mlp.fc2", "ls2", fc2_in, dfc2_in, xout, h, dres, rows, n, l, 2, dseed, train, false);
      tape_.run(typename Nd::Unit{u, false, &store});
      x = xout;
    }

    // ---- head unit ----
    const int uh = d.depth + 1;
    tape_.run(typename Nd::Unit{uh, true, &store});
    const bool use_fc_norm = mc_.fc_norm == "auto" ? mc_.global_pool == "avg" : mc_.fc_norm == "true";
    const bool has_norm = mc_.final_norm && !use_fc_norm;
    const PoolMode mode = mc_.global_pool == "avg" ? PoolMode::avg : PoolMode::token;
    A* pooled = buf<A>(o_pool_);
    A* dpooled = buf<A>(o_dpool_);
    A* feat = pooled;   // what the head reads
    A* dfeat = dpooled;
    if (mc_.global_pool == "map") {
      map_head(x, dres, n, has_norm);
      feat = buf<A>(o_mout_);
      dfeat = buf<A>(o_mdres_);
    } else if (has_norm && mode == PoolMode::avg) {
      // norm over every token, then average (LayerNorm and averaging do not commute)
      A* xn = buf<A>(o_headnorm_);
      S* st = buf<S>(o_headstat_);
      // first writer of the residual gradient in backward: acc = false
      tape_.run(typename Nd::LayerNorm{xn, st, st + rows, x, prm("norm.weight"), prm("norm.bias"), rows, d.D, 1e-6,
                                       buf<A>(o_dsm_), dres, grd("norm.weight"), grd("norm.bias"), false});
      tape_.run(typename Nd::Pool{pooled, xn, n, T_, d.D, mode, d.prefix, dpooled, buf<A>(o_dsm_)});
    } else {
      // the pool's backward writes the whole residual gradient (zeros where it did not read)
      tape_.run(typename Nd::Pool{pooled, x, n, T_, d.D, mode, d.prefix, dpooled, dres});
      if (has_norm) {
        // token pooling: norm(x)[:, 0] == norm(x[:, 0]), so normalise only the pooled rows
        A* pn = buf<A>(o_pn_);
        S* st = buf<S>(o_pnstat_);
        tape_.run(typename Nd::LayerNorm{pn, st, st + n, pooled, prm("norm.weight"), prm("norm.bias"), n, d.D, 1e-6,
                                         buf<A>(o_dpn_), dpooled, grd("norm.weight"), grd("norm.bias"), false});
        feat = pn;
        dfeat = buf<A>(o_dpn_);
      }
    }
    if (mc_.final_norm && use_fc_norm) {
      A* fn = buf<A>(o_fcn_);
      S* st = buf<S>(o_fcnstat_);
      tape_.run(typename Nd::LayerNorm{fn, st, st + n, feat, prm("fc_norm.weight"), prm("fc_norm.bias"), n, d.D, 1e-6,
                                       buf<A>(o_dfcn_), dfeat, grd("fc_norm.weight"), grd("fc_norm.bias"), false});
      feat = fn;
      dfeat = buf<A>(o_dfcn_);
    }
    drop(feat, dfeat, (i64)n * D, mc_.drop_rate, site(-1, 6));
    A* logits = buf<A>(o_logits_);
    A* dlogits = buf<A>(o_dlogits_);
    tape_.run(typename Nd::Linear{logits, feat, prm("head.weight"), prm("head.bias"), n, d.D, d.K, dlogits, dfeat,
                                  grd("head.weight"), grd("head.bias"), false});
    if (labels)
      tape_.run(typename Nd::SoftmaxXent{buf<S>(o_losses_), train ? dlogits : nullptr, logits, labels, n, d.K,
                                         ctx.label_smoothing, ctx.dscale});
    tape_.run(typename Nd::Unit{uh, false, &store});
    n_ = n;
  }

  // Replays the tape in reverse; parameter gradients are added into the store's unit gradient buffers.
  void backward() { tape_.backward(); }

 private:
  void check_supported() const {
    auto no = [](bool cond, const char* key) {
      VIT_REQUIRE(!cond, "model.", key, " is not supported by this build yet (see the model-options issue): turn it off");
    };
    no(mc_.global_pool == "none", "global_pool = \"none\"");
    VIT_REQUIRE(d_.K > 0, "model.num_classes must be >= 1 for training");
    VIT_REQUIRE(mc_.global_pool != "token" || d_.cls || mc_.reg_tokens > 0,
                "model.global_pool = \"token\" needs model.class_token = true (or use global_pool = \"avg\")");
  }

  // A parameter's (gathered) values and its gradient slot; null when the model has no such parameter.
  const P* prm(const std::string& name) const {
    int i = L_.find(name);
    return i < 0 ? nullptr : store_->unit_params(L_.params()[i].unit) + L_.params()[i].offset;
  }
  G* grd(const std::string& name) const {
    int i = L_.find(name);
    return i < 0 ? nullptr : store_->unit_grads(L_.params()[i].unit) + L_.params()[i].offset;
  }

  // timm's AttentionPoolLatent over the patch tokens (pool_include_prefix = False), latent_len 1:
  //   q = Wq·latent, kv = Wkv·x[:, prefix:], a = softmax(q kᵀ/√d) v, p = Wproj·a, out = p + mlp(norm(p)).
  void map_head(A* x, A* dres, int n, bool has_norm) {
    const ModelDims& d = d_;
    const i64 rows = (i64)n * T_, D = d.D;
    const int Np = T_ - d.prefix;  // patch tokens left after patch dropout
    A* xin = x;
    A* dxin = dres;
    if (has_norm) {  // final norm over every token before pooling; first writer of the residual gradient
      xin = buf<A>(o_headnorm_);
      dxin = buf<A>(o_dsm_);
      S* st = buf<S>(o_headstat_);
      tape_.run(typename Nd::LayerNorm{xin, st, st + rows, x, prm("norm.weight"), prm("norm.bias"), rows, d.D, 1e-6, dxin,
                                       dres, grd("norm.weight"), grd("norm.bias"), false});
    }
    A* xs = buf<A>(o_mxs_);
    A* dxs = buf<A>(o_mdxs_);
    tape_.run(typename Nd::TokenSlice{xs, xin, n, T_, d.prefix, d.D, dxs, dxin});
    A* qin = buf<A>(o_mqin_);
    A* dqin = buf<A>(o_mdqin_);
    tape_.run(typename Nd::Broadcast{qin, prm("attn_pool.latent"), n, 1, d.D, dqin, grd("attn_pool.latent")});
    A* q = buf<A>(o_mq_);
    A* dq = buf<A>(o_mdq_);
    tape_.run(typename Nd::Linear{q, qin, prm("attn_pool.q.weight"), prm("attn_pool.q.bias"), n, d.D, d.D, dq, dqin,
                                  grd("attn_pool.q.weight"), grd("attn_pool.q.bias"), false});
    A* kv = buf<A>(o_mkv_);
    A* dkv = buf<A>(o_mdkv_);
    tape_.run(typename Nd::Linear{kv, xs, prm("attn_pool.kv.weight"), prm("attn_pool.kv.bias"), (i64)n * Np, d.D,
                                  2 * d.D, dkv, dxs, grd("attn_pool.kv.weight"), grd("attn_pool.kv.bias"), false});
    A* a = buf<A>(o_ma_);
    A* da = buf<A>(o_mda_);
    tape_.run(typename Nd::CrossAttention{a, buf<S>(o_mlse_), q, kv, n, 1, Np, d.heads, d.hd,
                                          1.0 / std::sqrt((double)d.hd), da, dq, dkv});
    A* p = buf<A>(o_mp_);
    A* dp = buf<A>(o_mdres_);  // p feeds the residual add: its gradient is the head residual gradient
    tape_.run(typename Nd::Linear{p, a, prm("attn_pool.proj.weight"), prm("attn_pool.proj.bias"), n, d.D, d.D, dp, da,
                                  grd("attn_pool.proj.weight"), grd("attn_pool.proj.bias"), false});
    A* pn = buf<A>(o_mpn_);
    A* dpn = buf<A>(o_mdpn_);
    S* st = buf<S>(o_mpnst_);
    tape_.run(typename Nd::LayerNorm{pn, st, st + n, p, prm("attn_pool.norm.weight"), prm("attn_pool.norm.bias"), n,
                                     d.D, 1e-6, dpn, dp, grd("attn_pool.norm.weight"), grd("attn_pool.norm.bias"), true});
    A* f = buf<A>(o_mf_);
    A* df = buf<A>(o_mdf_);
    tape_.run(typename Nd::Linear{f, pn, prm("attn_pool.mlp.fc1.weight"), prm("attn_pool.mlp.fc1.bias"), n, d.D,
                                  d.hidden, df, dpn, grd("attn_pool.mlp.fc1.weight"), grd("attn_pool.mlp.fc1.bias"), false});
    A* g = buf<A>(o_mg_);
    A* dg = buf<A>(o_mdg_);
    tape_.run(typename Nd::Gelu{g, f, (i64)n * d.hidden, mc_.act == "gelu_tanh", dg, df});
    A* m = buf<A>(o_mm_);
    tape_.run(typename Nd::Linear{m, g, prm("attn_pool.mlp.fc2.weight"), prm("attn_pool.mlp.fc2.bias"), n, d.hidden,
                                  d.D, dp, dg, grd("attn_pool.mlp.fc2.weight"), grd("attn_pool.mlp.fc2.bias"), false});
    tape_.run(typename Nd::Add{buf<A>(o_mout_), p, m, (i64)n * D, dp, dp, dp});
  }

  // Dropout sites (RNG streams): kind 0 pos_drop, 1 mlp drop1, 2 attn proj_drop, 3 mlp drop2, 8 patch_drop,
  // 4 drop_path attn, 5 drop_path mlp, 6 head_drop, 7 attn_drop; layer -1 outside the blocks.
  static uint64_t site(int layer, int kind) { return (uint64_t)(layer + 1) * 16 + (uint64_t)kind + 1; }

  // The tail of a residual branch: y = x_in + drop_path(ls(drop(linear(inp)))). The branch's output
  // gradient is the residual gradient itself (the Add aliases it), so only ops inside the branch that
  // change it need buffers: they write into the two branch scratch buffers, never into dres.
  // With nothing between the linear and the add, the linear adds x_in itself (GEMM epilogue); then, with
  // defer_bias, its bias gradient (the column sums of dres) is left to the next norm's backward, which
  // writes dres anyway: the gradient slot is returned for that norm's dsum. Otherwise returns null.
  G* branch(const std::string& b, const std::string& lin, const std::string& ls, A* inp, A* dinp, A* y, A* x_in,
            A* dres, i64 rows, int n, int l, int which, uint64_t dseed, bool train, bool defer_bias) {
    const ModelDims& d = d_;
    const int K = which == 1 ? d.D : d.hidden;
    const bool has_ls = mc_.init_values > 0;
    const bool has_drop = train && mc_.proj_drop_rate > 0;
    const bool has_dp = train && mc_.drop_path_rate > 0;
    // Backward order is the reverse of forward: drop_path reads dres first, so every op after the linear
    // takes its output gradient from the previous (in backward) op's buffer.
    A* dbr0 = buf<A>(o_dbr0_);
    A* dbr1 = buf<A>(o_dbr1_);
    // Gradient buffers from the end of the branch backwards: dres -> [drop_path] -> [ls] -> [drop] -> linear.
    A* g_after_dp = dres;
    A* g_after_ls;
    A* g_after_drop;
    if (has_dp) g_after_dp = dbr0;
    g_after_ls = g_after_dp;
    if (has_ls) g_after_ls = g_after_dp == dbr0 ? dbr1 : dbr0;
    g_after_drop = g_after_ls;
    if (has_drop && g_after_drop == dres) g_after_drop = dbr0;  // dropout backward may run in place, never on dres

    if (!has_ls && !has_drop && !has_dp) {
      // Nothing between the linear and the skip connection: y = x_in + linear(inp) in the GEMM's epilogue.
      G* db = grd(b + lin + ".bias");
      tape_.run(typename Nd::Linear{y, inp, prm(b + lin + ".weight"), prm(b + lin + ".bias"), rows, K, d.D, dres,
                                    dinp, grd(b + lin + ".weight"), defer_bias ? nullptr : db, false, x_in});
      return defer_bias ? db : nullptr;
    }
    A* out = has_ls ? lbuf<A>(which == 1 ? o_pr_ : o_mo_, l) : buf<A>(o_brs_);
    tape_.run(typename Nd::Linear{out, inp, prm(b + lin + ".weight"), prm(b + lin + ".bias"), rows, K, d.D,
                                  g_after_drop, dinp, grd(b + lin + ".weight"), grd(b + lin + ".bias"), false});
    if (has_drop)
      tape_.run(typename Nd::Dropout{out, out, rows * d.D, (float)mc_.proj_drop_rate, dseed, site(l, which == 1 ? 2 : 3),
                                     g_after_ls, g_after_drop});
    A* cur = out;
    if (has_ls) {
      A* lsout = buf<A>(o_brs_);
      tape_.run(typename Nd::LayerScale{lsout, out, prm(b + ls + ".gamma"), rows, d.D, g_after_dp, g_after_ls,
                                        grd(b + ls + ".gamma")});
      cur = lsout;
    }
    if (has_dp) {
      const double rate = mc_.drop_path_rate * l / std::max(1, d.depth - 1);  // timm's linear decay rule
      tape_.run(typename Nd::DropPath{cur, cur, n, (i64)T_ * d.D, (float)rate, dseed, site(l, 3 + which), dres,
                                      g_after_dp});
    }
    tape_.run(typename Nd::Add{y, x_in, cur, rows * d.D, dres, dres, dres});
    return nullptr;
  }

  template <class X>
  X* buf(size_t off) const {
    return reinterpret_cast<X*>(arena_ + off);
  }
  // Slot l of a per-layer allocation.
  template <class X>
  X* lbuf(size_t off, int l) const {
    return reinterpret_cast<X*>(arena_ + off + (size_t)l * slots_.at(off));
  }
  A* res(int i) const { return lbuf<A>(o_res_, i); }

  size_t add(const std::string& name, size_t bytes, size_t count = 1, bool per_sample = true) {
    size_t off = plan_.add(name, bytes, count, per_sample);
    slots_[off] = plan_.entries().back().bytes;
    return off;
  }

  void plan() {
    const ModelDims& d = d_;
    const size_t a = sizeof(A), s = sizeof(S);
    const size_t B = B_, rows = B * d.T, rowsP = B * d.Np, D = d.D, HH = d.hidden, L = d.depth;
    const bool ls = mc_.init_values > 0;
    o_patches_ = add("patches", rowsP * d.C * d.p * d.p * a);
    o_ptok_ = add("patch_tokens", rowsP * D * a);
    if (mc_.patch_drop_rate > 0) {
      o_embed_ = add("embedded tokens (before patch dropout)", rows * D * a);
      o_keep_ = add("patch dropout indices", rowsP * sizeof(int));
    }
    o_res_ = add("residual stream", rows * D * a, L + 1);
    if (mc_.pre_norm) {
      o_prenorm_ = add("norm_pre out", rows * D * a);
      o_prestat_ = add("norm_pre stats", 2 * rows * s);
    }
    o_ln1_ = add("block norm1 out", rows * D * a, L);
    o_st1_ = add("block norm1 stats", 2 * rows * s, L);
    o_qkv_ = add("block qkv", rows * 3 * D * a, L);
    o_att_ = add("block attention out", rows * D * a, L);
    o_lse_ = add("block attention lse", B * d.heads * d.T * s, L);
    o_h_ = add("block mid residual", rows * D * a, L);
    o_ln2_ = add("block norm2 out", rows * D * a, L);
    o_st2_ = add("block norm2 stats", 2 * rows * s, L);
    o_f_ = add("block fc1 out", rows * HH * a, L);
    o_g_ = add("block gelu out", rows * HH * a, L);
    if (mc_.qk_norm) {
      o_qkn_ = add("block qk-normed qkv", rows * 3 * D * a, L);
      o_qkst_ = add("block qk norm stats", 4 * rows * d.heads * s, L);
      o_dqkv2_ = add("grad qk-normed qkv", rows * 3 * D * a);
    }
    if (mc_.scale_attn_norm) {
      o_an_ = add("block attn norm out", rows * D * a, L);
      o_anst_ = add("block attn norm stats", 2 * rows * s, L);
    }
    if (mc_.scale_mlp_norm) {
      o_mn_ = add("block mlp norm out", rows * HH * a, L);
      o_mnst_ = add("block mlp norm stats", 2 * rows * s, L);
    }
    if (ls) {
      o_pr_ = add("block proj out (ls)", rows * D * a, L);
      o_mo_ = add("block fc2 out (ls)", rows * D * a, L);
    }
    // Only a branch with something between its last linear and the skip connection needs the scratch (the
    // others add the residual in the GEMM's epilogue, see branch()).
    if (ls || mc_.proj_drop_rate > 0 || mc_.drop_path_rate > 0) o_brs_ = add("branch scratch", rows * D * a);
    o_headnorm_ = add("head norm out", rows * D * a);
    o_headstat_ = add("head norm stats", 2 * rows * s);
    o_pool_ = add("pooled", B * D * a);
    if (mc_.global_pool == "map") {
      const size_t Np = d.Np;
      o_mxs_ = add("map patch tokens", B * Np * D * a);
      o_mdxs_ = add("grad map patch tokens", B * Np * D * a);
      o_mkv_ = add("map kv", B * Np * 2 * D * a);
      o_mdkv_ = add("grad map kv", B * Np * 2 * D * a);
      for (size_t* o : {&o_mqin_, &o_mdqin_, &o_mq_, &o_mdq_, &o_ma_, &o_mda_, &o_mp_, &o_mpn_, &o_mdpn_, &o_mm_, &o_mout_,
                        &o_mdres_})
        *o = add("map head rows", B * D * a);
      o_mlse_ = add("map lse", B * d.heads * s);
      o_mpnst_ = add("map norm stats", 2 * B * s);
      for (size_t* o : {&o_mf_, &o_mdf_, &o_mg_, &o_mdg_}) *o = add("map mlp rows", B * HH * a);
    }
    o_pn_ = add("pooled norm", B * D * a);
    o_pnstat_ = add("pooled norm stats", 2 * B * s);
    o_fcn_ = add("fc_norm out", B * D * a);
    o_fcnstat_ = add("fc_norm stats", 2 * B * s);
    o_logits_ = add("logits", B * d.K * a);
    o_losses_ = add("losses", B * s);
    // activation gradients: shared by all blocks
    o_dres_ = add("grad residual", rows * D * a);
    o_dbr0_ = add("grad branch 0", rows * D * a);
    o_dbr1_ = add("grad branch 1", rows * D * a);
    o_dsm_ = add("grad norm out", rows * D * a);
    o_dsm2_ = add("grad attention out", rows * D * a);
    o_dqkv_ = add("grad qkv", rows * 3 * D * a);
    o_df_ = add("grad fc1 out", rows * HH * a);
    o_dg_ = add("grad gelu out", rows * HH * a);
    o_dptok_ = add("grad patch tokens", rowsP * D * a);
    o_dpool_ = add("grad pooled", B * D * a);
    o_dpn_ = add("grad pooled norm", B * D * a);
    o_dfcn_ = add("grad fc_norm", B * D * a);
    o_dlogits_ = add("grad logits", B * d.K * a);
  }

  const ModelConfig mc_;
  const ParamLayout& L_;
  const ModelDims d_;
  Ops& ops_;
  Tape<Ops> tape_;
  const int B_;
  int n_ = 0;
  int T_ = 0;  // tokens per image in the current forward (fewer with patch dropout)
  ParamStore<Ops>* store_ = nullptr;
  MemoryPlan plan_;
  std::map<size_t, size_t> slots_;
  char* arena_ = nullptr;
  size_t o_embed_{}, o_keep_{};
  size_t o_an_{}, o_anst_{}, o_mn_{}, o_mnst_{}, o_qkn_{}, o_qkst_{}, o_dqkv2_{};
  size_t o_mxs_{}, o_mdxs_{}, o_mkv_{}, o_mdkv_{}, o_mqin_{}, o_mdqin_{}, o_mq_{}, o_mdq_{}, o_ma_{}, o_mda_{}, o_mp_{},
      o_mpn_{}, o_mdpn_{}, o_mm_{}, o_mout_{}, o_mdres_{}, o_mlse_{}, o_mpnst_{}, o_mf_{}, o_mdf_{}, o_mg_{}, o_mdg_{};
  size_t o_patches_{}, o_ptok_{}, o_res_{}, o_prenorm_{}, o_prestat_{}, o_ln1_{}, o_st1_{}, o_qkv_{}, o_att_{}, o_lse_{},
      o_h_{}, o_ln2_{}, o_st2_{}, o_f_{}, o_g_{}, o_pr_{}, o_mo_{}, o_brs_{}, o_headnorm_{}, o_headstat_{}, o_pool_{},
      o_pn_{}, o_pnstat_{}, o_fcn_{}, o_fcnstat_{}, o_logits_{}, o_losses_{}, o_dres_{}, o_dbr0_{}, o_dbr1_{}, o_dsm_{},
      o_dsm2_{}, o_dqkv_{}, o_df_{}, o_dg_{}, o_dptok_{}, o_dpool_{}, o_dpn_{}, o_dfcn_{}, o_dlogits_{};
};

}  // namespace vit
