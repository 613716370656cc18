// Weights through safetensors in timm naming: checkpoint (any rank count) -> export -> import is bit exact;
// a new head and a resampled pos_embed are handled; every mismatch is refused with the tensors named.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <vector>

#include "engine/checkpoint_dir.h"
#include "engine/checkpoint_export.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "model/timm_weights.h"
#include "tests/cpu/ckpt_test_util.h"

using namespace vit;

namespace {

Config tiny_config() {
  Config c;
  c.model.img_size = {16, 16};
  c.model.patch_size = 4;
  c.model.num_classes = 5;
  c.model.embed_dim = 16;
  c.model.depth = 2;
  c.model.num_heads = 2;
  c.model.reg_tokens = 2;
  c.model.init_values = 0.1;
  c.data.format = "synthetic";
  return c;
}

std::vector<std::vector<float>> random_units(const ParamLayout& L, uint64_t seed) {
  std::vector<std::vector<float>> u(L.units().size());
  for (size_t i = 0; i < u.size(); ++i) {
    u[i].assign(L.units()[i].numel, 0.f);
    // Only parameter elements carry values; the alignment gaps stay zero as in the engine.
    for (const ParamSpec& p : L.params())
      if (p.unit == (int)i)
        for (int64_t k = 0; k < p.numel; ++k) u[i][p.offset + k] = (float)rng::normal(seed, i, p.offset + k);
  }
  return u;
}

// A committed checkpoint of `world` ranks, each holding a contiguous slice of every unit.
void write_checkpoint(const std::filesystem::path& root, const Config& c, const ParamLayout& L,
                      const std::vector<std::vector<float>>& units, int world) {
  ckpt::begin_step(root, 7);
  std::vector<std::array<int64_t, 2>> ranges(units.size() * world);
  for (int r = 0; r < world; ++r) {
    ckpt::CheckpointWriter w(ckpt::rank_path(root, 7, r), {r, world, L.hash(), 7});
    for (size_t u = 0; u < units.size(); ++u) {
      const int64_t n = (int64_t)units[u].size(), per = (n + world - 1) / world;
      const int64_t b = std::min(n, r * per), e = std::min(n, b + per);
      auto& rg = ranges[u * world + r];
      rg = {b, e};
      const std::string un = "unit." + std::to_string(u);
      w.add<int64_t>(un + ".range", std::span<const int64_t>(rg.data(), 2));
      for (const char* k : {"master", "adam_m", "adam_v"})
        w.add<float>(un + "." + k, std::span<const float>(units[u].data() + b, e - b));
    }
    w.write();
  }
  ckpt::write_meta(root, 7, to_toml(c), {});
  ckpt::commit(root, 7);
}

std::vector<std::vector<float>> import_all(const std::string& file, const Config& c, const ParamLayout& L,
                                           const std::vector<std::vector<float>>& start) {
  TimmImport imp(file, c.model, L);
  auto out = start;
  for (size_t u = 0; u < out.size(); ++u) imp.fill((int)u, 0, (int64_t)out[u].size(), out[u].data());
  return out;
}

}  // namespace

TEST_CASE("timm weights: checkpoint -> safetensors -> import is bit exact, from 1 and 3 ranks") {
  Config c = tiny_config();
  ParamLayout L(c.model);
  auto units = random_units(L, 11);
  for (int world : {1, 3}) {
    CAPTURE(world);
    test::TempDir t;
    write_checkpoint(t / "ck", c, L, units, world);
    const std::string file = (t / "w.safetensors").string();
    ckpt::export_safetensors(t / "ck", 7, [](const ckpt::StepMeta& m) { return export_layout_from_config(m.config_toml); },
                             file);
    safetensors::Reader r(file);
    CHECK(r.tensors().size() == L.params().size());
    CHECK(r.tensor("blocks.1.attn.qkv.weight").shape == std::vector<int64_t>{48, 16});
    std::vector<std::vector<float>> zeros(units.size());
    for (size_t u = 0; u < units.size(); ++u) zeros[u].assign(units[u].size(), 0.f);
    auto back = import_all(file, c, L, zeros);
    for (size_t u = 0; u < units.size(); ++u)
      CHECK(std::memcmp(back[u].data(), units[u].data(), units[u].size() * sizeof(float)) == 0);
  }
}

TEST_CASE("timm weights: another num_classes keeps a fresh head - another img_size resamples pos_embed") {
  Config c = tiny_config();
  ParamLayout L(c.model);
  auto units = random_units(L, 5);
  test::TempDir t;
  write_checkpoint(t / "ck", c, L, units, 1);
  const std::string file = (t / "w.safetensors").string();
  ckpt::export_safetensors(t / "ck", 7, [](const ckpt::StepMeta& m) { return export_layout_from_config(m.config_toml); },
                           file);
  Config c2 = c;
  c2.model.num_classes = 9;
  c2.model.img_size = {32, 24};  // 8x6 grid from a 4x4 one
  ParamLayout L2(c2.model);
  auto fresh = random_units(L2, 99);
  TimmImport imp(file, c2.model, L2);
  REQUIRE(imp.notes().size() == 2);
  const std::string notes = imp.notes()[0] + "|" + imp.notes()[1];
  CHECK(notes.find("head has 5 classes, the model 9: the head starts from a fresh init") != std::string::npos);
  CHECK(notes.find("resampled from a 4x4 grid to 8x6") != std::string::npos);
  auto got = import_all(file, c2, L2, fresh);
  const ParamSpec& hw = L2.param("head.weight");
  for (int64_t k = 0; k < hw.numel; ++k) CHECK(got[hw.unit][hw.offset + k] == fresh[hw.unit][hw.offset + k]);
  const ParamSpec& q1 = L.param("blocks.0.attn.qkv.weight");
  const ParamSpec& q2 = L2.param("blocks.0.attn.qkv.weight");
  for (int64_t k = 0; k < q1.numel; ++k) CHECK(got[q2.unit][q2.offset + k] == units[q1.unit][q1.offset + k]);
  // pos_embed: the 3 prefix rows (class token + 2 registers) copied, the grid resampled.
  const ParamSpec& p1 = L.param("pos_embed");
  const ParamSpec& p2 = L2.param("pos_embed");
  const int D = 16, prefix = 3;
  for (int64_t k = 0; k < prefix * D; ++k) CHECK(got[p2.unit][p2.offset + k] == units[p1.unit][p1.offset + k]);
  std::vector<float> grid(units[p1.unit].begin() + p1.offset + prefix * D, units[p1.unit].begin() + p1.offset + p1.numel);
  auto expect = resample_grid(grid, 4, 4, D, 8, 6);
  for (size_t k = 0; k < expect.size(); ++k) CHECK(got[p2.unit][p2.offset + prefix * D + k] == expect[k]);
}

TEST_CASE("timm weights: bicubic resampling keeps constants, is the identity at equal size, interpolates") {
  std::vector<float> ramp(5 * 7 * 2);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 7; ++x) {
      ramp[(y * 7 + x) * 2] = 3.5f;
      ramp[(y * 7 + x) * 2 + 1] = (float)(x + 10 * y);
    }
  auto same = resample_grid(ramp, 5, 7, 2, 5, 7);
  for (size_t i = 0; i < ramp.size(); ++i) CHECK(same[i] == doctest::Approx(ramp[i]).epsilon(1e-6));
  auto up = resample_grid(ramp, 5, 7, 2, 10, 14);
  for (int i = 0; i < 10 * 14; ++i) CHECK(up[i * 2] == doctest::Approx(3.5).epsilon(1e-6));
  // Interior of a linear ramp: cubic convolution reproduces linear functions away from the borders.
  CHECK(up[(4 * 14 + 6) * 2 + 1] == doctest::Approx(((6 + 0.5) / 2 - 0.5) + 10 * ((4 + 0.5) / 2 - 0.5)).epsilon(1e-5));
  auto down = resample_grid(ramp, 5, 7, 2, 3, 3);
  for (int i = 0; i < 9; ++i) CHECK(down[i * 2] == doctest::Approx(3.5).epsilon(1e-6));
}

TEST_CASE("timm weights: mismatched files are refused naming the tensors") {
  Config c = tiny_config();
  ParamLayout L(c.model);
  test::TempDir t;
  auto units = random_units(L, 3);
  // Built by hand: drop one tensor, add a stranger, break a shape, use an integer dtype.
  safetensors::Writer w;
  std::vector<std::vector<float>> keep;
  std::vector<int64_t> ints(16, 1);
  for (const ParamSpec& p : L.params()) {
    if (p.name == "blocks.0.norm1.bias") continue;
    std::vector<int64_t> shape = p.shape;
    if (p.name == "blocks.1.mlp.fc1.weight") shape = {shape[1], shape[0]};
    if (p.name == "blocks.0.norm2.weight") {
      w.add(p.name, safetensors::Dtype::I64, {16}, std::as_bytes(std::span<const int64_t>(ints)));
      continue;
    }
    keep.emplace_back(units[p.unit].begin() + p.offset, units[p.unit].begin() + p.offset + p.numel);
    w.add_f32(p.name, shape, keep.back());
  }
  std::vector<float> extra(4, 1.f);
  w.add_f32("dist_token", {1, 1, 4}, extra);
  const std::string file = (t / "bad.safetensors").string();
  w.write(file);
  try {
    TimmImport imp(file, c.model, L);
    FAIL("accepted a mismatched file");
  } catch (const Error& e) {
    const std::string m = e.what();
    CHECK(m.find("missing blocks.0.norm1.bias") != std::string::npos);
    CHECK(m.find("unexpected dist_token") != std::string::npos);
    CHECK(m.find("blocks.1.mlp.fc1.weight has shape [16, 64] in the file, [64, 16] in the model") != std::string::npos);
    CHECK(m.find("blocks.0.norm2.weight has dtype I64") != std::string::npos);
    CHECK(m.find('\n') == std::string::npos);
  }
}
