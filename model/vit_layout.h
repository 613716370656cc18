// The ViT's parameter registry: every tensor with timm's name and shape, its initialiser and weight-decay
// flag, grouped into FSDP units (embedding, each block, head). Each unit is one flat buffer; a parameter is
// a contiguous range of it. Everything here is a pure function of the model config, so every rank (and a
// resumed run with another rank count) computes the same layout.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "model/vit_init.h"

namespace vit {

struct ParamSpec {
  std::string name;            // timm state_dict name, e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;  // timm shape
  int64_t numel = 0;
  int unit = 0;
  int64_t offset = 0;          // element offset inside the unit's flat buffer
  bool decay = false;          // weight decay applies (timm: not for 1-D params, pos embed, tokens)
  InitSpec init;
};

struct UnitSpec {
  std::string name;            // "embed", "blocks.3", "head"
  int64_t numel = 0;           // sum of its parameters (no padding)
  int first_param = 0, num_params = 0;
};

// Derived model dimensions used by the forward pass and the memory plan.
struct ModelDims {
  int C, H, W, p, Hp, Wp, Np;  // input channels, image size, patch, patch grid
  int D, depth, heads, hd, hidden, K;
  int prefix;                   // class token + register tokens
  int T;                        // tokens per image
  int Tpos;                     // rows of pos_embed (0 when pos_embed = none)
  bool cls;
};

ModelDims model_dims(const ModelConfig& m);

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& m);

  const std::vector<ParamSpec>& params() const { return params_; }
  const std::vector<UnitSpec>& units() const { return units_; }
  const ModelDims& dims() const { return dims_; }
  int64_t total_numel() const { return total_; }
  // Index of a parameter by name, or -1.
  int find(const std::string& name) const;
  const ParamSpec& param(const std::string& name) const;  // throws if absent
  // Hash of names, shapes and unit assignment: checkpoints of another model shape are refused with it.
  uint64_t hash() const;

  // Initial values of elements [begin, end) of unit u's flat buffer, from the counter RNG keyed by
  // (seed, parameter name, element index): identical whatever slice a rank initialises.
  template <class T>
  void init_range(T* dst, int u, int64_t begin, int64_t end, uint64_t seed) const;

  // Runs of elements [begin, end) of unit u that share a decay flag: fn(begin, end, decay).
  template <class F>
  void for_each_decay_run(int u, int64_t begin, int64_t end, F&& fn) const {
    const UnitSpec& U = units_[u];
    for (int i = U.first_param; i < U.first_param + U.num_params; ++i) {
      const ParamSpec& P = params_[i];
      int64_t b = std::max(begin, P.offset), e = std::min(end, P.offset + P.numel);
      if (b < e) fn(b, e, P.decay);
    }
  }

 private:
  void add(const std::string& name, std::vector<int64_t> shape, InitSpec init, bool decay);
  void begin_unit(const std::string& name);
  std::vector<ParamSpec> params_;
  std::vector<UnitSpec> units_;
  ModelDims dims_{};
  int64_t total_ = 0;
};

}  // namespace vit
