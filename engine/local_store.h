// Parameter store for one process holding the whole model (the CPU backend without sharding, and the
// gradient checks): one flat parameter buffer and one gradient buffer per unit, nothing to gather.
#pragma once
#include <vector>

#include "model/vit.h"
#include "model/vit_layout.h"

namespace vit {

template <class Ops>
class LocalStore final : public ParamStore<Ops> {
  using P = typename Ops::Param;
  using G = typename Ops::Grad;

 public:
  LocalStore(const ParamLayout& layout, Ops& ops) : L_(layout), ops_(ops) {
    for (const UnitSpec& u : layout.units()) {
      params_.push_back(static_cast<P*>(ops.alloc(u.numel * sizeof(P), "parameters")));
      grads_.push_back(static_cast<G*>(ops.alloc(u.numel * sizeof(G), "gradients")));
      ops.zero(grads_.back(), u.numel * sizeof(G));
    }
  }
  ~LocalStore() override {
    for (P* p : params_) ops_.release(p);
    for (G* g : grads_) ops_.release(g);
  }
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  // Host-side initialisation (CPU backend only: parameters live in host memory).
  void init(uint64_t seed) {
    for (size_t u = 0; u < params_.size(); ++u) L_.init_range(params_[u], (int)u, 0, L_.units()[u].numel, seed);
  }
  void zero_grads() {
    for (size_t u = 0; u < grads_.size(); ++u) ops_.zero(grads_[u], L_.units()[u].numel * sizeof(G));
  }
  P* params(int u) { return params_[u]; }
  G* grads(int u) { return grads_[u]; }
  P* param(const std::string& name) { const ParamSpec& p = L_.param(name); return params_[p.unit] + p.offset; }
  G* grad(const std::string& name) { const ParamSpec& p = L_.param(name); return grads_[p.unit] + p.offset; }

  const P* unit_params(int u) override { return params_[u]; }
  G* unit_grads(int u) override { return grads_[u]; }
  void forward_begin(int) override {}
  void forward_end(int) override {}
  void backward_begin(int) override {}
  void backward_end(int) override {}

 private:
  const ParamLayout& L_;
  Ops& ops_;
  std::vector<P*> params_;
  std::vector<G*> grads_;
};

}  // namespace vit
