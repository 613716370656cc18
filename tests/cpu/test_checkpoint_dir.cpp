// The checkpoint directory protocol: commit markers, resume choice (newest or best by metric) with
// fallback past damaged steps, crash simulations, retention, and reading shards written by a different
// rank count.
#include <doctest/doctest.h>

#include <numeric>

#include "engine/checkpoint_dir.h"
#include "engine/checkpoint_export.h"
#include "engine/safetensors.h"
#include "tests/cpu/ckpt_test_util.h"

using namespace vit;
using namespace vit::ckpt;
using vit::test::TempDir;

namespace {

constexpr uint64_t kLayout = 0xfeedULL;
// Two units of different sizes; values are a function of (unit, element) so any slice is checkable.
constexpr uint64_t kUnitSize[2] = {1000, 333};
float value(int unit, uint64_t i) { return static_cast<float>(unit * 100000 + i) * 0.5f; }

const char* kConfig = "[run]\nname = \"test\"\nseed = 3\n\n[model]\ndepth = 2\n";

// Rank r of `world` owns a contiguous, uneven slice (the first ranks get one more element).
std::pair<uint64_t, uint64_t> slice(uint64_t n, int r, int world) {
  const uint64_t base = n / world, extra = n % world;
  const uint64_t b = r * base + std::min<uint64_t>(r, extra);
  return {b, b + base + (static_cast<uint64_t>(r) < extra ? 1 : 0)};
}

void write_rank(const fs::path& root, int64_t step, int r, int world,
                const std::function<std::pair<uint64_t, uint64_t>(int unit, int r)>& range_of) {
  std::vector<std::vector<float>> master(2), adam(2);
  std::vector<std::vector<int64_t>> ranges(2);
  CheckpointWriter w(rank_path(root, step, r), {r, world, kLayout, step}, 4096);
  for (int u = 0; u < 2; ++u) {
    const auto [b, e] = range_of(u, r);
    for (uint64_t i = b; i < e; ++i) {
      master[u].push_back(value(u, i));
      adam[u].push_back(-value(u, i));
    }
    ranges[u] = {static_cast<int64_t>(b), static_cast<int64_t>(e)};
    w.add<float>(unit_section(u, "master"), master[u]);
    w.add<float>(unit_section(u, "adam_m"), adam[u]);
    w.add<int64_t>(unit_section(u, "range"), ranges[u]);
  }
  const std::vector<uint8_t> rng(16, static_cast<uint8_t>(r));
  w.add<uint8_t>("rng", rng);
  w.write();
}

// A complete save as the trainer drives it (the barriers are the sequence itself here).
void save(const fs::path& root, int64_t step, int world, std::map<std::string, double> metrics = {}) {
  begin_step(root, step);
  for (int r = 0; r < world; ++r)
    write_rank(root, step, r, world, [&](int u, int rr) { return slice(kUnitSize[u], rr, world); });
  write_meta(root, step, kConfig, metrics);
  commit(root, step);
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  for (const std::string& x : v)
    if (x.find(s) != std::string::npos) return true;
  return false;
}

void truncate_file(const fs::path& p, uint64_t drop) { fs::resize_file(p, fs::file_size(p) - drop); }

}  // namespace

TEST_CASE("checkpoint dir: save, commit, list, latest and meta round trip") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  CHECK(list_committed(root).empty());  // no root yet: nothing, no error
  CHECK_FALSE(choose_resume(root, "").step);
  save(root, 10, 2, {{"val_top1", 0.1}, {"val_loss", 2.5}, {"lr", 1e-300}});
  save(root, 20, 2, {{"val_top1", 1.0 / 3.0}});
  save(root, 30, 2);
  CHECK(list_committed(root) == std::vector<int64_t>{10, 20, 30});
  CHECK(read_latest(root) == 30);
  const ResumeChoice c = choose_resume(root, "");
  CHECK(c.step == 30);
  CHECK(c.warnings.empty());

  const StepMeta m = read_meta(root, 10);
  CHECK(m.step == 10);
  CHECK(m.metrics.size() == 3);
  CHECK(m.metrics.at("val_top1") == 0.1);  // doubles survive the text round trip exactly
  CHECK(m.metrics.at("val_loss") == 2.5);
  CHECK(m.metrics.at("lr") == 1e-300);
  CHECK(read_meta(root, 20).metrics.at("val_top1") == 1.0 / 3.0);
  CHECK(read_meta(root, 30).metrics.empty());
  CHECK(m.config_toml.find("test") != std::string::npos);
  CHECK(m.config_toml.find("depth = 2") != std::string::npos);
  CHECK(m.config_toml.find("checkpoint") == std::string::npos);

  CHECK_ERROR(write_meta(root, 30, "[metrics]\nx = 1\n", {}), "reserves");
  CHECK_ERROR(write_meta(root, 30, kConfig, {{"bad key", 1.0}}), "metric name 'bad key'");
  CHECK_ERROR(write_meta(root, 30, "not = = toml", {}), "not valid TOML");
}

TEST_CASE("checkpoint dir: a crash at any point leaves the previous good step chosen") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 100, 2);
  save(root, 200, 2);

  SUBCASE("partial step: one rank written, no meta, no marker") {
    begin_step(root, 300);
    write_rank(root, 300, 0, 2, [](int u, int r) { return slice(kUnitSize[u], r, 2); });
    test::write_all(io::tmp_path(rank_path(root, 300, 1)), std::string("half a file"));
    CHECK(list_committed(root) == std::vector<int64_t>{100, 200});
    const ResumeChoice c = choose_resume(root, "");
    CHECK(c.step == 200);
    CHECK(c.warnings.empty());  // uncommitted dirs are not even candidates
    write_meta(root, 300, kConfig, {});
    CHECK_ERROR(commit(root, 300), "rank_1.bin is missing", "step_300");
    CHECK_FALSE(fs::exists(step_dir(root, 300) / kCommittedName));
    CHECK(read_latest(root) == 200);
  }
  SUBCASE("all rank files written, crash before meta and marker") {
    begin_step(root, 300);
    for (int r = 0; r < 2; ++r) write_rank(root, 300, r, 2, [](int u, int rr) { return slice(kUnitSize[u], rr, 2); });
    CHECK_ERROR(commit(root, 300), "no meta.toml");
    CHECK(choose_resume(root, "").step == 200);
  }
  SUBCASE("newest committed step truncated later") {
    truncate_file(rank_path(root, 200, 1), 50);
    const ResumeChoice c = choose_resume(root, "");
    CHECK(c.step == 100);
    REQUIRE(c.warnings.size() == 1);
    CHECK(contains(c.warnings, "skipping step 200"));
    CHECK(contains(c.warnings, "rank_1.bin"));
    CHECK(contains(c.warnings, "truncated"));
  }
  SUBCASE("newest committed step with one flipped payload bit") {
    const CheckpointReader r(rank_path(root, 200, 0));
    const uint64_t at = r.section("unit.1.adam_m").offset + 7;
    test::flip_bit(rank_path(root, 200, 0), at);
    // Cheap validation does not read payloads, so only the full check catches it.
    CHECK(choose_resume(root, "", Verify::headers).step == 200);
    const ResumeChoice c = choose_resume(root, "", Verify::full);
    CHECK(c.step == 100);
    CHECK(contains(c.warnings, "section 'unit.1.adam_m' checksum mismatch"));
    CHECK(contains(c.warnings, "step_200 or resume from another step"));
  }
  SUBCASE("newest committed step lost a rank file") {
    fs::remove(rank_path(root, 200, 1));
    const ResumeChoice c = choose_resume(root, "", Verify::headers);
    CHECK(c.step == 100);
    CHECK(contains(c.warnings, "rank_1.bin is missing"));
  }
  SUBCASE("newest committed step holds a rank file of another save") {
    fs::copy_file(rank_path(root, 100, 1), rank_path(root, 200, 1), fs::copy_options::overwrite_existing);
    const ResumeChoice c = choose_resume(root, "", Verify::headers);
    CHECK(c.step == 100);
    CHECK(contains(c.warnings, "files from different saves mixed"));
  }
  SUBCASE("newest committed step with damaged meta.toml or marker") {
    test::write_all(step_dir(root, 200) / kMetaName, std::string("[checkpoint]\nstep = "));
    ResumeChoice c = choose_resume(root, "");
    CHECK(c.step == 100);
    CHECK(contains(c.warnings, "not valid TOML"));
    save(root, 200, 2);
    test::write_all(step_dir(root, 200) / kCommittedName, std::string("step = 7\nworld_size = 2\nlayout_hash = \"0x000000000000feed\"\n"));
    c = choose_resume(root, "");
    CHECK(c.step == 100);
    CHECK(contains(c.warnings, "marker says step 7"));
  }
  SUBCASE("every step damaged: start fresh with one warning per step") {
    truncate_file(rank_path(root, 100, 0), 1);
    truncate_file(rank_path(root, 200, 0), 1);
    const ResumeChoice c = choose_resume(root, "");
    CHECK_FALSE(c.step);
    CHECK(c.warnings.size() == 2);
  }
}

TEST_CASE("checkpoint dir: resume from the best step by metric") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 10, 1, {{"val_top1", 0.50}, {"val_loss", 1.0}});
  save(root, 20, 1, {{"val_top1", 0.70}, {"val_loss", 0.9}});
  save(root, 30, 1, {{"val_top1", 0.60}, {"val_loss", 0.8}});
  save(root, 40, 1, {{"val_top1", 0.70}, {"val_loss", 0.85}});  // ties with step 20 on top1
  save(root, 50, 1, {});                                         // no metrics at all

  CHECK(choose_resume(root, "+val_top1").step == 40);  // tie goes to the newer step
  CHECK(choose_resume(root, "-val_loss").step == 30);
  CHECK(choose_resume(root, "-val_top1").step == 10);
  const ResumeChoice none = choose_resume(root, "+val_top5");
  CHECK(none.step == 50);
  CHECK(contains(none.warnings, "records metric 'val_top5'"));

  truncate_file(rank_path(root, 30, 0), 8);  // the best by val_loss is damaged: next best
  const ResumeChoice c = choose_resume(root, "-val_loss");
  CHECK(c.step == 40);
  CHECK(contains(c.warnings, "skipping step 30"));

  CHECK_ERROR(choose_resume(root, "val_top1"), "must be '+name'", "'-val_loss'");
  CHECK_ERROR(choose_resume(root, "+"), "must be '+name'");
  CHECK_ERROR(choose_resume(root, "+val top1"), "must be '+name'");
}

TEST_CASE("checkpoint dir: retention keeps the newest, the last k and the best") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  const double top1[] = {0.1, 0.9, 0.3, 0.4, 0.5, 0.2};
  for (int i = 0; i < 6; ++i) save(root, 10 * (i + 1), 1, {{"val_top1", top1[i]}});
  begin_step(root, 35);  // a crashed save older than the newest commit: stale
  write_rank(root, 35, 0, 1, [](int u, int r) { return slice(kUnitSize[u], r, 1); });
  begin_step(root, 70);  // newer than the newest commit: may be in progress, kept
  fs::create_directories(root / "step_abc");  // not ours: untouched

  PruneResult r = prune(root, 0, "");  // keep_last 0 keeps every committed step
  CHECK(r.deleted_steps.empty());
  CHECK(r.removed_stale.size() == 1);
  CHECK_FALSE(fs::exists(step_dir(root, 35)));

  r = prune(root, 2, "+val_top1");
  CHECK(r.deleted_steps == std::vector<int64_t>{10, 30, 40});
  CHECK(r.warnings.empty());
  CHECK(list_committed(root) == std::vector<int64_t>{20, 50, 60});
  CHECK(fs::exists(step_dir(root, 70)));
  CHECK(fs::exists(root / "step_abc"));
  CHECK(choose_resume(root, "").step == 60);
  CHECK(choose_resume(root, "+val_top1").step == 20);

  r = prune(root, 1, "-val_top1");  // best by lowest is 60, also the newest
  CHECK(r.deleted_steps == std::vector<int64_t>{20, 50});
  CHECK(list_committed(root) == std::vector<int64_t>{60});
  CHECK(read_latest(root) == 60);
}

TEST_CASE("checkpoint dir: re-saving an existing step un-commits it first") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 10, 2);
  save(root, 20, 2);
  begin_step(root, 20);  // e.g. resumed from 10 and reached step 20 again
  CHECK_FALSE(fs::exists(step_dir(root, 20) / kCommittedName));
  CHECK(fs::is_empty(step_dir(root, 20)));
  CHECK(choose_resume(root, "").step == 10);
  save(root, 20, 3);  // a different world size this time
  CHECK(StepReader(root, 20).world_size() == 3);
}

TEST_CASE("checkpoint dir: shards written by 3 ranks read back on 1, 2 and 5 ranks") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 7, 3);
  const StepReader s(root, 7);
  CHECK(s.world_size() == 3);
  CHECK(s.layout_hash() == kLayout);
  CHECK(s.range(1, "unit.0") == std::pair<uint64_t, uint64_t>{334, 667});
  for (int new_world : {1, 2, 5}) {
    for (int u = 0; u < 2; ++u) {
      for (int r = 0; r < new_world; ++r) {
        const auto [b, e] = slice(kUnitSize[u], r, new_world);
        std::vector<float> got(e - b);
        s.read_unit_f32("unit." + std::to_string(u), "master", b, got);
        uint64_t bad = 0;
        for (uint64_t i = b; i < e; ++i) bad += got[i - b] != value(u, i);
        CHECK_MESSAGE(bad == 0, "unit ", u, " new rank ", r, " of ", new_world);
        s.read_unit_f32("unit." + std::to_string(u), "adam_m", b, got);
        for (uint64_t i = b; i < e; ++i) bad += got[i - b] != -value(u, i);
        CHECK(bad == 0);
      }
    }
  }
  std::vector<float> past(5);
  CHECK_ERROR(s.read_unit_f32("unit.1", "master", 330, past), "elements [333, 335) of 'unit.1.master'",
              "held by no rank");
  CHECK_ERROR(s.read_unit_f32("unit.2", "master", 0, past), "no section 'unit.2.master'");
}

TEST_CASE("checkpoint dir: replicated shards (hybrid sharding) and gaps") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  // 4 ranks = 2 shards x 2 replicas: ranks 2 and 3 hold the same ranges as ranks 0 and 1.
  begin_step(root, 5);
  for (int r = 0; r < 4; ++r) write_rank(root, 5, r, 4, [](int u, int rr) { return slice(kUnitSize[u], rr % 2, 2); });
  write_meta(root, 5, kConfig, {});
  commit(root, 5);
  const StepReader s(root, 5);
  std::vector<float> all(kUnitSize[0]);
  s.read_unit_f32("unit.0", "master", 0, all);
  std::vector<float> want(kUnitSize[0]);
  for (uint64_t i = 0; i < want.size(); ++i) want[i] = value(0, i);
  CHECK(all == want);

  // A layout with a hole (elements 400..499 held by nobody) is refused, not zero-filled.
  begin_step(root, 6);
  write_rank(root, 6, 0, 2, [](int u, int) { return std::pair<uint64_t, uint64_t>{0, u == 0 ? 400 : 100}; });
  write_rank(root, 6, 1, 2, [](int u, int) { return std::pair<uint64_t, uint64_t>{u == 0 ? 500 : 100, u == 0 ? 1000 : 333}; });
  write_meta(root, 6, kConfig, {});
  commit(root, 6);
  const StepReader g(root, 6);
  std::vector<float> part(100);
  g.read_unit_f32("unit.0", "master", 300, part);  // inside rank 0's part: fine
  CHECK(part[0] == value(0, 300));
  CHECK_ERROR(g.read_unit_f32("unit.0", "master", 350, part), "elements [400, 450) of 'unit.0.master'",
              "held by no rank");
}

TEST_CASE("checkpoint dir: export gathers timm tensors through a layout callback") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 9, 3, {{"val_top1", 0.25}});
  const ExportLayoutFn layout = [](const StepMeta& m) {
    CHECK(m.step == 9);
    CHECK(m.metrics.at("val_top1") == 0.25);
    ExportLayout l;
    l.layout_hash = kLayout;
    l.tensors = {{"patch_embed.proj.weight", {10, 3, 4, 4}, "unit.0", 0},   // 480 elements, across ranks 0 and 1
                 {"cls_token", {1, 1, 20}, "unit.0", 480},
                 {"blocks.0.norm1.bias", {333}, "unit.1", 0}};
    return l;
  };
  export_safetensors(root, 9, layout, dir / "out.safetensors");
  const safetensors::Reader r(dir / "out.safetensors");
  CHECK(r.metadata().at("format") == "pt");
  CHECK(r.metadata().at("step") == "9");
  CHECK(r.tensor("patch_embed.proj.weight").shape == std::vector<int64_t>{10, 3, 4, 4});
  const std::vector<float> w = r.read_f32("patch_embed.proj.weight");
  const std::vector<float> cls = r.read_f32("cls_token");
  const std::vector<float> bias = r.read_f32("blocks.0.norm1.bias");
  uint64_t bad = 0;
  for (uint64_t i = 0; i < 480; ++i) bad += w[i] != value(0, i);
  for (uint64_t i = 0; i < 20; ++i) bad += cls[i] != value(0, 480 + i);
  for (uint64_t i = 0; i < 333; ++i) bad += bias[i] != value(1, i);
  CHECK(bad == 0);

  const ExportLayoutFn other = [&](const StepMeta& m) {
    ExportLayout l = layout(m);
    l.layout_hash = 1;
    return l;
  };
  CHECK_ERROR(export_safetensors(root, 9, other, dir / "x.safetensors"), "model code changed");
  CHECK_FALSE(fs::exists(dir / "x.safetensors"));
}
