// The explicit tape. Forward runs each op and appends a node holding everything its backward needs
// (pointers into the planned activation / gradient / parameter buffers, shapes, attributes); backward walks
// the nodes in reverse. Nothing is allocated per step: the node vector keeps its capacity, every buffer
// comes from the memory plan. Conventions: parameter gradients accumulate (+=); an activation gradient is
// written (=) unless the node's `acc` flag says another consumer already wrote it.
// Ops is the backend (CpuOps<T> or CudaOps): it fixes the element types and runs the kernels.
#pragma once
#include <functional>
#include <utility>
#include <variant>
#include <vector>

#include "kernels/attention_dropout.h"
#include "kernels/embed.h"
#include "kernels/pool.h"
#include "kernels/types.h"

namespace vit {

// FSDP hooks at unit boundaries: gather parameters before a unit runs, release them after, reduce its
// gradient when its backward is done. The single-rank store makes these no-ops.
struct UnitHooks {
  virtual ~UnitHooks() = default;
  virtual void forward_begin(int unit) = 0;
  virtual void forward_end(int unit) = 0;
  virtual void backward_begin(int unit) = 0;
  virtual void backward_end(int unit) = 0;
};

template <class Ops>
struct Nodes {
  using A = typename Ops::Act;
  using P = typename Ops::Param;
  using G = typename Ops::Grad;
  using S = typename Ops::Stat;

  struct Unit {  // marks where a unit's ops begin (begin = true) or end in forward order
    static constexpr const char* kind = "unit";
    int unit;
    bool begin;
    UnitHooks* hooks;
    void forward(Ops&) { begin ? hooks->forward_begin(unit) : hooks->forward_end(unit); }
    void backward(Ops&) { begin ? hooks->backward_end(unit) : hooks->backward_begin(unit); }
  };
  struct PatchEmbed {  // patches = patchify(img); out = patches · W^T + b
    static constexpr const char* kind = "patch_embed";
    A* out; A* patches; const float* img; const P* w; const P* b;
    A* dout; G* dw; G* db;
    int B, C, H, W, p, D;
    void forward(Ops& o) {
      o.patchify(patches, img, B, C, H, W, p);
      o.linear_forward(out, patches, w, b, (i64)B * (H / p) * (W / p), C * p * p, D);
    }
    void backward(Ops& o) {
      o.linear_backward(nullptr, dw, db, dout, patches, w, (i64)B * (H / p) * (W / p), C * p * p, D, false);
    }
  };
  struct Embed {
    static constexpr const char* kind = "embed";
    A* x; const A* patch_tokens; const P* cls; const P* reg; const P* pos; EmbedShape s;
    A* dx; A* dpatch; G* dcls; G* dreg; G* dpos;
    void forward(Ops& o) { o.embed_forward(x, patch_tokens, cls, reg, pos, s); }
    void backward(Ops& o) { o.embed_backward(dpatch, dcls, dreg, dpos, dx, s); }
  };
  // dsum (optional): += the column sums of dx as written. dx is the residual stream's gradient there, so
  // that is the bias gradient of the linear that fed the stream just before (a Linear with a residual).
  struct LayerNorm {
    static constexpr const char* kind = "layer_norm";
    A* out; S* mean; S* rstd; const A* x; const P* w; const P* b; i64 rows; int C; double eps;
    A* dout; A* dx; G* dw; G* db; bool acc;
    G* dsum = nullptr;
    void forward(Ops& o) { o.layernorm_forward(out, mean, rstd, x, w, b, rows, C, eps); }
    void backward(Ops& o) { o.layernorm_backward(dx, dw, db, dout, x, w, mean, rstd, rows, C, acc, dsum); }
  };
  // residual (optional): out = x·Wᵀ + b + residual in one pass, a residual branch's last linear fused with
  // its skip connection. The skip's gradient is dout itself (the residual stream's buffer), so backward is
  // the plain linear's.
  struct Linear {
    static constexpr const char* kind = "linear";
    A* out; const A* x; const P* w; const P* b; i64 M; int K, N;
    A* dout; A* dx; G* dw; G* db; bool acc;
    const A* residual = nullptr;
    void forward(Ops& o) { o.linear_forward(out, x, w, b, M, K, N, residual); }
    void backward(Ops& o) { o.linear_backward(dx, dw, db, dout, x, w, M, K, N, acc); }
  };
  // drop: attention dropout (p = 0: none); its mask is regenerated in backward. dbias (optional): the qkv
  // linear's bias gradient (column sums of dqkv), summed by the attention backward (that linear skips its own).
  struct Attention {
    static constexpr const char* kind = "attention";
    A* out; S* lse; const A* qkv; int B, Tn, H, d; double scale;
    A* dout; A* dqkv; AttnDropout drop;
    G* dbias = nullptr;
    void forward(Ops& o) { o.attention_forward(out, lse, qkv, B, Tn, H, d, scale, drop); }
    void backward(Ops& o) { o.attention_backward(dqkv, dout, qkv, out, lse, B, Tn, H, d, scale, drop, dbias); }
  };
  // dbias (optional): the preceding linear's bias gradient, summed over the cols-wide rows of dx in the
  // GELU backward's own pass (that linear then skips its column sums).
  struct Gelu {
    static constexpr const char* kind = "gelu";
    A* out; const A* x; i64 n; bool tanh;
    A* dout; A* dx;
    G* dbias = nullptr; int cols = 0;
    void forward(Ops& o) { o.gelu_forward(out, x, n, tanh); }
    void backward(Ops& o) {
      if (dbias) return o.gelu_backward_bias(dx, dbias, dout, x, n / cols, cols, tanh);
      o.gelu_backward(dx, dout, x, n, tanh);
    }
  };
  // out = a + b. The model aliases the residual stream's gradient buffers (da == dout), so usually only the
  // branch side (db) needs work, and often not even that (db == dout too).
  struct Add {
    static constexpr const char* kind = "add";
    A* out; const A* a; const A* b; i64 n;
    A* dout; A* da; A* db;
    void forward(Ops& o) { o.add(out, a, b, n); }
    void backward(Ops& o) {
      if (da && da != dout) o.copy(da, dout, sizeof(A) * n);
      if (db && db != dout) o.copy(db, dout, sizeof(A) * n);
    }
  };
  struct LayerScale {
    static constexpr const char* kind = "layer_scale";
    A* out; const A* x; const P* g; i64 rows; int C;
    A* dout; A* dx; G* dg;
    void forward(Ops& o) { o.layer_scale_forward(out, x, g, rows, C); }
    void backward(Ops& o) { o.layer_scale_backward(dx, dg, dout, x, g, rows, C); }
  };
  struct Dropout {  // may run in place (out == x, dx == dout): the mask is regenerated, not stored
    static constexpr const char* kind = "dropout";
    A* out; const A* x; i64 n; float p; uint64_t seed, site;
    A* dout; A* dx;
    void forward(Ops& o) { o.dropout_forward(out, x, n, p, seed, site); }
    void backward(Ops& o) { o.dropout_backward(dx, dout, n, p, seed, site); }
  };
  struct DropPath {  // may run in place
    static constexpr const char* kind = "drop_path";
    A* out; const A* x; int B; i64 per; float p; uint64_t seed, site;
    A* dout; A* dx;
    void forward(Ops& o) { o.drop_path_forward(out, x, B, per, p, seed, site); }
    void backward(Ops& o) { o.drop_path_backward(dx, dout, B, per, p, seed, site); }
  };
  struct Pool {
    static constexpr const char* kind = "pool";
    A* out; const A* x; int B, Tn, D; PoolMode mode; int n_prefix;
    A* dout; A* dx;
    void forward(Ops& o) { o.pool_forward(out, x, B, Tn, D, mode, n_prefix); }
    void backward(Ops& o) { o.pool_backward(dx, dout, B, Tn, D, mode, n_prefix); }
  };
  // Loss and its gradient in one fused pass (forward computes dlogits; backward has nothing left to do).
  struct SoftmaxXent {
    static constexpr const char* kind = "softmax_xent";
    S* losses; A* dlogits; const A* logits; const int* labels; int B, K; double smoothing, dscale;
    void forward(Ops& o) { o.softmax_xent(losses, dlogits, logits, labels, B, K, smoothing, dscale); }
    void backward(Ops&) {}
  };

  // timm PatchDropout: keep a random subset of each sample's patch tokens (indices drawn in forward).
  struct PatchDrop {
    static constexpr const char* kind = "patch_drop";
    A* out; const A* x; int* idx; int B, prefix, Np, keep, D; uint64_t seed, site;
    A* dout; A* dx;
    void forward(Ops& o) {
      o.patch_keep_indices(idx, B, Np, keep, seed, site);
      o.patch_drop_forward(out, x, idx, B, prefix, Np, keep, D);
    }
    void backward(Ops& o) { o.patch_drop_backward(dx, dout, idx, B, prefix, Np, keep, D); }
  };
  // timm qk_norm: LayerNorm over the head dim of q and k inside the qkv tensor (v passes through).
  struct QkNorm {
    static constexpr const char* kind = "qk_norm";
    A* out; S* mean; S* rstd; const A* qkv; const P* qw; const P* qb; const P* kw; const P* kb; i64 BT; int H, hd;
    A* dout; A* dqkv; G* dqw; G* dqb; G* dkw; G* dkb;
    void forward(Ops& o) { o.qk_norm_forward(out, mean, rstd, qkv, qw, qb, kw, kb, BT, H, hd); }
    void backward(Ops& o) { o.qk_norm_backward(dqkv, dqw, dqb, dkw, dkb, dout, qkv, qw, kw, mean, rstd, BT, H, hd); }
  };
  // Learned rows shared by every sample (the map head's latent): out = src repeated B times; dsrc += Σ_b.
  struct Broadcast {
    static constexpr const char* kind = "broadcast";
    A* out; const P* src; int B, L, C;
    A* dout; G* dsrc;
    void forward(Ops& o) { o.broadcast_rows_forward(out, src, B, L, C); }
    void backward(Ops& o) { o.broadcast_rows_backward(dsrc, dout, B, L, C); }
  };
  // L latent queries per sample attend over Tn tokens (q (B, L, H, d), kv (B, Tn, 2, H, d)).
  struct CrossAttention {
    static constexpr const char* kind = "cross_attention";
    A* out; S* lse; const A* q; const A* kv; int B, L, Tn, H, d; double scale;
    A* dout; A* dq; A* dkv;
    void forward(Ops& o) { o.cross_attention_forward(out, lse, q, kv, B, L, Tn, H, d, scale); }
    void backward(Ops& o) { o.cross_attention_backward(dq, dkv, dout, q, kv, out, lse, B, L, Tn, H, d, scale); }
  };
  // out (B, T - first, C) = x[:, first:, :]; backward writes the whole dx (zeros in the skipped rows).
  struct TokenSlice {
    static constexpr const char* kind = "token_slice";
    A* out; const A* x; int B, Tn, first, C;
    A* dout; A* dx;
    void forward(Ops& o) {
      const size_t row = sizeof(A) * C;
      o.copy2d(out, row * (Tn - first), x + (i64)first * C, row * Tn, row * (Tn - first), B);
    }
    void backward(Ops& o) {
      const size_t row = sizeof(A) * C;
      if (first > 0) o.zero2d(dx, row * Tn, row * first, B);
      o.copy2d(dx + (i64)first * C, row * Tn, dout, row * (Tn - first), row * (Tn - first), B);
    }
  };

  using Node = std::variant<Unit, PatchEmbed, Embed, LayerNorm, Linear, Attention, Gelu, Add, LayerScale, Dropout,
                            DropPath, Pool, SoftmaxXent, Broadcast, CrossAttention, TokenSlice, QkNorm, PatchDrop>;
};

template <class Ops>
class Tape {
 public:
  using N = Nodes<Ops>;
  using Node = typename N::Node;

  explicit Tape(Ops& ops) : ops_(ops) { nodes_.reserve(1024); }

  // Called before every node runs, forward and backward, with the node's kind (bench_train --ops marks the
  // stream there to time each kind of op). Empty: nothing is called.
  using NodeHook = std::function<void(const char* kind)>;
  void set_node_hook(NodeHook h) { hook_ = std::move(h); }

  // Forward-only (evaluation) when recording is off: ops run, nothing is kept.
  void start(bool recording) {
    nodes_.clear();  // keeps capacity: no allocation after the first step
    recording_ = recording;
  }
  template <class NodeT>
  void run(NodeT n) {
    if (hook_) hook_(NodeT::kind);
    n.forward(ops_);
    if (recording_) nodes_.emplace_back(std::move(n));
  }
  void backward() {
    for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it)
      std::visit(
          [&](auto& n) {
            if (hook_) hook_(n.kind);
            n.backward(ops_);
          },
          *it);
  }
  size_t size() const { return nodes_.size(); }
  Ops& ops() { return ops_; }

 private:
  Ops& ops_;
  std::vector<Node> nodes_;
  bool recording_ = true;
  NodeHook hook_;
};

}  // namespace vit
