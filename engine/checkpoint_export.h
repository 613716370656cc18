// Export of a committed checkpoint's fp32 master weights to safetensors in timm naming. The storage
// layer does not know the model: the caller supplies the layout (EXTENSION POINT, see ExportLayoutFn),
// which maps each timm parameter to a range of a unit's flat buffer.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/checkpoint_dir.h"

namespace vit::ckpt {

struct ExportTensor {
  std::string name;            // timm name, e.g. "blocks.3.attn.qkv.weight"
  std::vector<int64_t> shape;  // timm shape; its product is the element count
  std::string unit;            // the unit holding it, e.g. "unit.4" (sections "unit.4.master", "unit.4.range")
  uint64_t offset = 0;         // first element inside the unit's flat buffer
};

struct ExportLayout {
  uint64_t layout_hash = 0;  // must equal the checkpoint's, else the model code and the files disagree
  std::vector<ExportTensor> tensors;
};

// EXTENSION POINT: the model code provides this (from the checkpoint's resolved config, the same
// parameter registry the FSDP manager flattens into units). Until then ckpt_tool export refuses.
using ExportLayoutFn = std::function<ExportLayout(const StepMeta& meta)>;

// Reads step `step` under `root`, gathers every tensor of the layout from the ranks' master shards
// (any rank count) and writes `out` as F32 safetensors with metadata {"format": "pt", "step": N}.
void export_safetensors(const fs::path& root, int64_t step, const ExportLayoutFn& layout, const fs::path& out);

}  // namespace vit::ckpt
