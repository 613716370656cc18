#include "engine/checkpoint_export.h"


#include "engine/check.h"
#include "engine/safetensors.h"

namespace vit::ckpt {

void export_safetensors(const fs::path& root, int64_t step, const ExportLayoutFn& layout, const fs::path& out) {
  VIT_REQUIRE(layout, "checkpoint export: no model layout was given (the model code provides it)");
  const StepReader reader(root, step);
  const ExportLayout l = layout(read_meta(root, step));
  VIT_REQUIRE(l.layout_hash == reader.layout_hash(), "checkpoint ", reader.dir().string(),
              ": written for model layout ", reader.layout_hash(), " but the layout derived from its config is ",
              l.layout_hash, " (the model code changed since the save): export with the build that wrote it");
  // All tensors are held in memory until the single write; fine for one model's fp32 weights.
  std::vector<std::vector<float>> data;
  data.reserve(l.tensors.size());
  safetensors::Writer w;
  for (const ExportTensor& t : l.tensors) {
    uint64_t n = 1;
    for (int64_t d : t.shape) {
      VIT_REQUIRE(d >= 0, "checkpoint export: tensor '", t.name, "' has a negative dimension");
      n *= static_cast<uint64_t>(d);
    }
    data.emplace_back(n);
    reader.read_unit_f32(t.unit, "master", t.offset, data.back());
    w.add_f32(t.name, t.shape, data.back());
  }
  w.set_metadata("format", "pt");
  w.set_metadata("step", std::to_string(step));
  w.write(out);
}

}  // namespace vit::ckpt
