// ckpt_tool's inspect and verify reports: what they show and the exit codes scripts rely on.
#include <doctest/doctest.h>

#include <sstream>

#include "engine/checkpoint_dir.h"
#include "engine/checkpoint_inspect.h"
#include "tests/cpu/ckpt_test_util.h"

using namespace vit;
using namespace vit::ckpt;
using vit::test::TempDir;

namespace {

void save(const fs::path& root, int64_t step, int world, bool do_commit = true) {
  begin_step(root, step);
  const std::vector<float> w(3000, 1.5f);
  const std::vector<int64_t> range{0, 3000};
  for (int r = 0; r < world; ++r) {
    CheckpointWriter f(rank_path(root, step, r), {r, world, 99, step}, 4096);
    f.add<float>("unit.0.master", w);
    f.add<int64_t>("unit.0.range", range);
    f.write();
  }
  write_meta(root, step, "[run]\nname = \"x\"\n", {{"val_loss", 0.75}});
  if (do_commit) commit(root, step);
}

std::pair<int, std::string> run(int (*fn)(const fs::path&, std::ostream&), const fs::path& p) {
  std::ostringstream os;
  const int rc = fn(p, os);
  return {rc, os.str()};
}

bool has(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

}  // namespace

TEST_CASE("ckpt_tool reports: inspect and verify on good, partial and damaged checkpoints") {
  TempDir dir;
  const fs::path root = dir / "ckpts";
  save(root, 10, 2);
  save(root, 20, 2);
  save(root, 30, 1, /*do_commit=*/false);  // a crashed save

  auto [rc, out] = run(inspect_path, root);
  INFO(out);
  CHECK(rc == 0);
  CHECK(has(out, "3 step directories, 2 committed, latest = 20"));
  CHECK(has(out, "step 10: committed"));
  CHECK(has(out, "step 30: NOT committed (ignored by resume)"));
  CHECK(has(out, "val_loss=0.75"));
  CHECK(has(out, "rank_1.bin: rank 1 of 2, step 20"));
  CHECK(has(out, "unit.0.master"));
  CHECK(has(out, "3000 elements"));

  std::tie(rc, out) = run(verify_path, root);
  CHECK(rc == 0);
  CHECK(has(out, "step 10: OK (2 rank files"));
  CHECK(has(out, "step 30: not committed"));

  std::tie(rc, out) = run(verify_path, step_dir(root, 30));  // named explicitly: not a usable checkpoint
  CHECK(rc == 1);
  CHECK(has(out, "not committed"));

  std::tie(rc, out) = run(verify_path, rank_path(root, 20, 0));
  CHECK(rc == 0);
  CHECK(has(out, "OK (2 sections"));

  const CheckpointReader r(rank_path(root, 20, 1));
  test::flip_bit(rank_path(root, 20, 1), r.section("unit.0.master").offset + 5000);
  std::tie(rc, out) = run(verify_path, root);
  CHECK(rc == 1);
  CHECK(has(out, "step 10: OK"));
  CHECK(has(out, "step 20: FAILED"));
  CHECK(has(out, "checksum mismatch"));
  std::tie(rc, out) = run(verify_path, step_dir(root, 20).string() + "/");  // trailing slash: still a step dir
  CHECK(rc == 1);
  std::tie(rc, out) = run(inspect_path, step_dir(root, 20));  // inspect reads no payload: still fine
  CHECK(rc == 0);

  test::write_all(rank_path(root, 10, 0), std::string("junk"));
  std::tie(rc, out) = run(inspect_path, root);
  CHECK(rc == 1);
  CHECK(has(out, "only 4 bytes"));

  fs::create_directories(dir / "empty");
  CHECK(run(verify_path, dir / "empty").first == 1);
  CHECK(run(inspect_path, dir / "empty").first == 1);
  CHECK(run(verify_path, dir / "missing").first == 1);
}
