// Weights in and out in timm's naming: export a checkpoint's master weights to safetensors (the layout
// callback of engine/checkpoint_export.h), and import a timm VisionTransformer state dict
// (model.init_from) into the sharded master weights — each rank fills only the ranges it owns.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/checkpoint_export.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "model/vit_layout.h"

namespace vit {

// timm names, shapes, units and offsets of a model, for ckpt::export_safetensors.
ckpt::ExportLayout export_layout(const ParamLayout& layout);
// Same, from a checkpoint's resolved config (meta.toml).
ckpt::ExportLayout export_layout_from_config(const std::string& config_toml);

// A timm state dict in safetensors, checked against the model before anything is read:
//  - every model parameter must be in the file with the same shape, except
//      head.weight / head.bias of another num_classes: left at their fresh init (a new head), with a note;
//      pos_embed of another grid: resampled bicubic (antialiased, as timm's resample_abs_pos_embed),
//      prefix-token rows copied, with a note;
//  - tensors in the file that the model has no place for are an error (strict, like load_state_dict);
//  - dtypes F32, F16, BF16 (and F64) are accepted.
// All problems are reported together in one error naming the tensors.
class TimmImport {
 public:
  TimmImport(const std::string& path, const ModelConfig& mc, const ParamLayout& layout);
  ~TimmImport();
  const std::vector<std::string>& notes() const { return notes_; }
  // Overwrites elements [begin, end) of unit u in dst (which holds the fresh init, so parameters the file
  // does not provide keep it) with the imported values.
  void fill(int u, int64_t begin, int64_t end, float* dst) const;

 private:
  std::vector<float> values_of(const ParamSpec& p) const;
  std::unique_ptr<safetensors::Reader> reader_;
  const ModelConfig mc_;
  const ParamLayout& L_;
  std::map<std::string, std::string> action_;  // param name -> "copy" | "resample" | "skip"
  std::vector<std::string> notes_;
  mutable std::map<std::string, std::vector<float>> cache_;  // one tensor at a time is enough
};

// Bicubic resampling of a (h, w, C) grid to (H, W, C), antialiased like torch's
// interpolate(mode="bicubic", antialias=True, align_corners=False). Exposed for tests.
std::vector<float> resample_grid(const std::vector<float>& src, int h, int w, int C, int H, int W);

}  // namespace vit
