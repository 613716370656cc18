// ckpt_tool: look into and check checkpoints written by vit_train.
//   ckpt_tool inspect DIR|FILE     steps, committed or not, latest, metrics, per-rank sections and sizes
//   ckpt_tool verify DIR|FILE      every checksum; exit code 1 on any damaged or incomplete checkpoint
//   ckpt_tool export DIR STEP OUT.safetensors   fp32 master weights in timm naming (needs the model layout)
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "engine/check.h"
#include "engine/checkpoint_export.h"
#include "model/timm_weights.h"
#include "engine/checkpoint_inspect.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: ckpt_tool inspect DIR|FILE\n"
               "       ckpt_tool verify DIR|FILE\n"
               "       ckpt_tool export ROOT STEP OUT.safetensors\n"
               "DIR is a checkpoint root (holding step_<N>/) or one step_<N> directory; FILE a rank_<r>.bin.\n");
  return 2;
}

// The model's export layout (timm names, shapes, unit and offset of every parameter), computed from the
// checkpoint's resolved config with the same registry the FSDP manager flattens into units.
vit::ckpt::ExportLayoutFn model_export_layout() {
  return [](const vit::ckpt::StepMeta& m) { return vit::export_layout_from_config(m.config_toml); };
}

int export_cmd(const std::string& root, const std::string& step_text, const std::string& out) {
  char* end = nullptr;
  const long long step = std::strtoll(step_text.c_str(), &end, 10);
  if (step_text.empty() || *end != '\0' || step < 0) {
    std::fprintf(stderr, "error: STEP '%s' is not a step number (see 'ckpt_tool inspect %s')\n", step_text.c_str(),
                 root.c_str());
    return 2;
  }
  const vit::ckpt::ExportLayoutFn layout = model_export_layout();
  if (!layout) {
    std::fprintf(stderr,
                 "error: export needs the model layout, which this build does not provide yet "
                 "(see the EXTENSION POINT in tools/ckpt_tool.cpp)\n");
    return 1;
  }
  vit::ckpt::export_safetensors(root, step, layout, out);
  std::printf("wrote %s from %s step %lld\n", out.c_str(), root.c_str(), step);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  try {
    if (cmd == "inspect" && argc == 3) return vit::ckpt::inspect_path(argv[2], std::cout);
    if (cmd == "verify" && argc == 3) return vit::ckpt::verify_path(argv[2], std::cout);
    if (cmd == "export" && argc == 5) return export_cmd(argv[2], argv[3], argv[4]);
  } catch (const vit::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return usage();
}
