// Datasets: folder discovery, class maps and filters, Tiny ImageNet val annotations, packed files,
// Fashion-MNIST IDX conversion, the synthetic set.
#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "data/classes.h"
#include "data/dataset.h"
#include "data/file_dataset.h"
#include "data/fmnist.h"
#include "data/packed.h"
#include "data/synthetic.h"
#include "engine/check.h"
#include "test_data_files.h"

using namespace vit::data;
using namespace vit::testing;
namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> small_png(int v) {
  return stb_png(4, 3, 3, make_pixels(4, 3, 3, [&](int x, int y, int c) { return (v + x + 2 * y + 3 * c) % 256; }));
}

void write_text(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

struct Logs {
  std::vector<std::string> lines;
  LogFn fn() {
    return [this](const std::string& s) { lines.push_back(s); };
  }
  bool has(const std::string& part) const {
    for (const auto& l : lines)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }
};

// The shared data folder (../shared/data next to the source tree, or $VIT_SHARED_DIR).
std::string shared_tiny() {
  const char* env = std::getenv("VIT_SHARED_DIR");
  const std::string base = env && *env ? env : std::string(VIT_SOURCE_DIR) + "/../shared/data";
  const std::string p = base + "/super-tiny-imagenet-5";
  return fs::is_directory(p) ? p : "";
}

}  // namespace

TEST_CASE("data folders: recursive discovery, extensions in any case, hidden and other files skipped") {
  TempDir t;
  write_bytes(t / "b_cls/x.JPG", small_png(1));
  write_bytes(t / "b_cls/sub/deeper/y.png", small_png(2));
  write_bytes(t / "a_cls/z.jpeg", small_png(3));
  write_bytes(t / "a_cls/w.PnG", small_png(4));
  write_text(t / "a_cls/notes.txt", "not an image");
  write_bytes(t / "a_cls/.hidden.jpg", small_png(5));
  write_bytes(t / "a_cls/.cache/q.jpg", small_png(6));
  write_bytes(t / ".git/c.png", small_png(7));
  Logs logs;
  vit::DataConfig dc;
  dc.format = "folder";
  dc.train_path = t.path + "/";
  auto ds = make_dataset(dc, Split::train, 8, 8, logs.fn());
  REQUIRE(ds->size() == 4);
  CHECK(ds->num_classes() == 2);
  CHECK(ds->class_names() == std::vector<std::string>{"a_cls", "b_cls"});
  // Label order, then path order.
  CHECK(ds->describe(0) == t / "a_cls/w.PnG");
  CHECK(ds->describe(1) == t / "a_cls/z.jpeg");
  CHECK(ds->describe(2) == t / "b_cls/sub/deeper/y.png");
  CHECK(ds->describe(3) == t / "b_cls/x.JPG");
  CHECK(std::vector<int>{ds->label(0), ds->label(1), ds->label(2), ds->label(3)} == std::vector<int>{0, 0, 1, 1});
  CHECK(logs.has("ignored 1 non-image file"));
  SampleScratch s;
  ImageView v;
  std::string why, note;
  REQUIRE(ds->load(2, 3, s, v, why, note));
  CHECK(v.w == 4);
  CHECK(v.h == 3);
  CHECK(v.data[0] == 2);

  // A class map orders the labels; classes it lacks are skipped (with a warning), its extras dropped.
  write_text(t / "map.txt", "b_cls\tthe b class\n\nzzz extra\n");
  dc.train_path = t.path;
  dc.class_map = t / "map.txt";
  Logs l2;
  auto m = make_dataset(dc, Split::train, 8, 8, l2.fn());
  CHECK(m->class_names() == std::vector<std::string>{"b_cls"});
  CHECK(m->size() == 2);
  CHECK(l2.has("1 class folder(s)"));
  CHECK(l2.has("1 skipped"));
  // A filter keeps listed classes; an unknown one is an error naming it.
  dc.class_map = "";
  dc.classes = {"b_cls"};
  CHECK(make_dataset(dc, Split::train, 8, 8, {})->size() == 2);
  dc.classes = {"b_cls", "nope"};
  CHECK_THROWS_WITH_AS(make_dataset(dc, Split::train, 8, 8, {}), doctest::Contains("\"nope\""), vit::Error);
  // No images at all: an error that says so.
  TempDir e;
  write_text(e / "cls/readme.txt", "x");
  dc.classes = {};
  dc.train_path = e.path;
  CHECK_THROWS_WITH_AS(make_dataset(dc, Split::train, 8, 8, {}), doctest::Contains("no images"), vit::Error);
  // Val folder: labels from the training tree; a val class without training data is skipped.
  TempDir v2;
  write_bytes(v2 / "b_cls/v.png", small_png(9));
  write_bytes(v2 / "q_cls/v.png", small_png(9));
  dc.train_path = t.path;
  dc.val_path = v2.path;
  auto val = make_dataset(dc, Split::val, 8, 8, {});
  REQUIRE(val->size() == 1);
  CHECK(val->label(0) == 1);
  CHECK(val->num_classes() == 2);
}

TEST_CASE("data tiny imagenet: the shared super-tiny-imagenet-5 (class maps, filter, val annotations)") {
  const std::string root = shared_tiny();
  if (root.empty()) {
    MESSAGE("super-tiny-imagenet-5 not found (set VIT_SHARED_DIR): skipped");
    return;
  }
  vit::DataConfig dc;
  dc.format = "tiny_imagenet";
  dc.train_path = root;
  Logs logs;
  auto tr = make_dataset(dc, Split::train, 64, 64, logs.fn());
  CHECK(tr->size() == 250);
  CHECK(tr->class_names() ==
        std::vector<std::string>{"n03404251", "n03976657", "n04507155", "n06596364", "n09193705"});
  auto va = make_dataset(dc, Split::val, 64, 64, logs.fn());
  CHECK(va->size() == 250);
  CHECK(logs.has("10000 entries listed; skipped 9750 of classes not in the training set, 0 listed but absent"));
  std::vector<int> per_class(5, 0);
  for (int64_t i = 0; i < va->size(); ++i) per_class[va->label(i)]++;
  CHECK(per_class == std::vector<int>(5, 50));
  // The val labels agree with val_annotations.txt.
  std::ifstream ann(root + "/val/val_annotations.txt");
  std::map<std::string, std::string> cls_of;
  std::string file, id, rest;
  while (ann >> file >> id && std::getline(ann, rest)) cls_of[file] = id;
  int agree = 0;
  for (int64_t i = 0; i < va->size(); ++i)
    agree += va->class_names()[va->label(i)] == cls_of[fs::path(va->describe(i)).filename().string()];
  CHECK(agree == 250);
  // A train image decodes to 64×64 RGB.
  SampleScratch s;
  ImageView v;
  std::string why, note;
  REQUIRE(tr->load(17, 3, s, v, why, note));
  CHECK(v.w == 64);
  CHECK(v.h == 64);
  CHECK(v.c == 3);

  // wnids.txt (and words.txt) order the labels: the file order of the five present ids.
  for (const char* map : {"/wnids.txt", "/words.txt"}) {
    std::vector<std::string> order;
    for (const auto& w : read_class_map(root + map))
      if (std::count(tr->class_names().begin(), tr->class_names().end(), w)) order.push_back(w);
    if (std::string(map) == "/wnids.txt")
      CHECK(order == std::vector<std::string>{"n04507155", "n03404251", "n09193705", "n06596364", "n03976657"});
    dc.class_map = root + map;
    Logs l;
    auto m = make_dataset(dc, Split::train, 64, 64, l.fn());
    CHECK(m->class_names() == order);
    CHECK(m->size() == 250);
    CHECK(l.has("skipped (no training folder"));
    auto mv = make_dataset(dc, Split::val, 64, 64, {});
    CHECK(mv->class_names() == order);
    agree = 0;
    for (int64_t i = 0; i < mv->size(); ++i)
      agree += mv->class_names()[mv->label(i)] == cls_of[fs::path(mv->describe(i)).filename().string()];
    CHECK(agree == 250);
  }
  // A class filter.
  dc.class_map = root + "/wnids.txt";
  dc.classes = {"n03404251", "n04507155"};
  auto f = make_dataset(dc, Split::train, 64, 64, {});
  CHECK(f->size() == 100);
  CHECK(f->class_names() == std::vector<std::string>{"n04507155", "n03404251"});  // wnids.txt order
  CHECK(make_dataset(dc, Split::val, 64, 64, {})->size() == 100);
  // train_path may also name train/ itself, with val_path explicit.
  dc = {};
  dc.format = "tiny_imagenet";
  dc.train_path = root + "/train";
  dc.val_path = root + "/val";
  CHECK(make_dataset(dc, Split::val, 64, 64, {})->size() == 250);
}

TEST_CASE("data tiny imagenet layout: listed-but-absent entries and unknown classes are counted") {
  TempDir t;
  write_bytes(t / "train/n1/images/a.JPEG", small_png(1));
  write_bytes(t / "train/n2/images/b.JPEG", small_png(2));
  write_bytes(t / "val/images/val_0.JPEG", small_png(3));
  write_bytes(t / "val/images/val_2.JPEG", small_png(4));
  write_text(t / "val/val_annotations.txt",
             "val_0.JPEG\tn2\t0\t0\t1\t1\nval_1.JPEG\tn1\t0\t0\t1\t1\nval_2.JPEG\tn9\t0\t0\t1\t1\n");
  vit::DataConfig dc;
  dc.format = "tiny_imagenet";
  dc.train_path = t.path;
  Logs logs;
  auto va = make_dataset(dc, Split::val, 8, 8, logs.fn());
  REQUIRE(va->size() == 1);
  CHECK(va->label(0) == 1);
  CHECK(logs.has("3 entries listed; skipped 1 of classes not in the training set, 1 listed but absent"));
  write_text(t / "val/val_annotations.txt", "val_1.JPEG\tn1\n");
  CHECK_THROWS_WITH_AS(make_dataset(dc, Split::val, 8, 8, {}), doctest::Contains("no usable entry"), vit::Error);
}

TEST_CASE("data packed: write, mmap, read back exactly - shards - corrupt files are refused") {
  TempDir t;
  const std::vector<std::string> names{"cat", "dog", "emu"};
  std::vector<std::vector<uint8_t>> imgs;
  const int dims[4][2] = {{5, 3}, {1, 1}, {17, 9}, {2, 30}};
  {
    PackWriter w(t / "a.vitpack", 3, names);
    for (int i = 0; i < 4; ++i) {
      imgs.push_back(make_pixels(dims[i][0], dims[i][1], 3, [&](int x, int y, int c) { return (i * 50 + x * 7 + y * 3 + c) % 256; }));
      w.add(ImageView{imgs.back().data(), dims[i][1], dims[i][0], 3}, i % 3);
    }
    CHECK_FALSE(fs::exists(t / "a.vitpack"));  // only after finish()
    w.finish();
  }
  PackReader r(t / "a.vitpack");
  REQUIRE(r.size() == 4);
  CHECK(r.class_names() == names);
  for (int i = 0; i < 4; ++i) {
    const ImageView v = r.image(i);
    CHECK(v.w == dims[i][0]);
    CHECK(v.h == dims[i][1]);
    CHECK(std::vector<uint8_t>(v.data, v.data + v.bytes()) == imgs[i]);
    CHECK(r.label(i) == i % 3);
    CHECK(r.verify(i));
  }
  // Shards in a directory, in name order; channel conversion on load (RGB -> gray, BT.601).
  fs::create_directories(t / "shards");
  fs::copy_file(t / "a.vitpack", t / "shards/part-1.vitpack");
  {
    PackWriter w(t / "shards/part-0.vitpack", 3, names);
    w.add(ImageView{imgs[2].data(), dims[2][1], dims[2][0], 3}, 2);
    w.finish();
  }
  auto ds = open_packed_dataset(t / "shards", "data.train_path", {});
  REQUIRE(ds->size() == 5);
  CHECK(ds->label(0) == 2);
  CHECK(ds->label(4) == 0);
  SampleScratch s;
  ImageView v;
  std::string why, note;
  REQUIRE(ds->load(1, 1, s, v, why, note));
  CHECK(v.c == 1);
  CHECK(v.data[0] == luma601(imgs[0][0], imgs[0][1], imgs[0][2]));
  // A shard with another class list is refused.
  {
    PackWriter w(t / "shards/part-2.vitpack", 3, {"x"});
    w.add(ImageView{imgs[1].data(), 1, 1, 3}, 0);
    w.finish();
  }
  CHECK_THROWS_WITH_AS(open_packed_dataset(t / "shards", "k", {}), doctest::Contains("class list"), vit::Error);

  // Corruptions.
  std::ifstream in(t / "a.vitpack", std::ios::binary);
  const std::vector<uint8_t> good((std::istreambuf_iterator<char>(in)), {});
  auto try_open = [&](const std::vector<uint8_t>& b) {
    write_bytes(t / "bad.vitpack", b);
    PackReader rr(t / "bad.vitpack");
  };
  CHECK_NOTHROW(try_open(good));
  CHECK_THROWS_WITH_AS(try_open({good.begin(), good.begin() + 40}), doctest::Contains("shorter than the header"), vit::Error);
  CHECK_THROWS_WITH_AS(try_open({good.begin(), good.end() - 30}), doctest::Contains("corrupt"), vit::Error);
  auto b = good;
  b[0] = 'X';
  CHECK_THROWS_WITH_AS(try_open(b), doctest::Contains("bad magic"), vit::Error);
  b = good;
  b[8] = 9;  // version
  CHECK_THROWS_WITH_AS(try_open(b), doctest::Contains("version"), vit::Error);
  PackHeader h;
  std::memcpy(&h, good.data(), sizeof h);
  b = good;
  reinterpret_cast<PackRecord*>(b.data() + h.index_offset)[1].label = 3;
  CHECK_THROWS_WITH_AS(try_open(b), doctest::Contains("label"), vit::Error);
  b = good;
  reinterpret_cast<PackRecord*>(b.data() + h.index_offset)[3].h = 1000;
  CHECK_THROWS_WITH_AS(try_open(b), doctest::Contains("outside the data"), vit::Error);
  b = good;
  b[h.data_offset + 2] ^= 1;
  write_bytes(t / "flip.vitpack", b);
  PackReader flipped(t / "flip.vitpack");
  CHECK_FALSE(flipped.verify(0));
  CHECK(flipped.verify(1));
}

TEST_CASE("data fashion-mnist: IDX files (gz) converted to a pack - the real data set if installed") {
  TempDir t;
  auto gz = [&](const std::string& path, const std::vector<uint8_t>& bytes) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), (unsigned)bytes.size());
    gzclose(f);
  };
  std::vector<uint8_t> im = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
  for (int i = 0; i < 60; ++i) im.push_back((uint8_t)(i * 4));
  gz(t / "train-images-idx3-ubyte.gz", im);
  gz(t / "train-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9});
  CHECK(convert_fmnist(t.path, "train", t / "out.vitpack") == 3);
  PackReader r(t / "out.vitpack");
  REQUIRE(r.size() == 3);
  CHECK(r.channels() == 1);
  CHECK(r.class_names()[9] == "Ankle boot");
  CHECK(r.label(0) == 7);
  CHECK(r.label(2) == 9);
  const ImageView v = r.image(1);
  CHECK(v.h == 4);
  CHECK(v.w == 5);
  CHECK(v.data[0] == 80);
  CHECK(v.data[19] == 156);
  // Bad inputs: wrong magic, size mismatch, label count mismatch, label out of range.
  gz(t / "x-images-idx3-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 3});
  CHECK_THROWS_WITH_AS(read_idx_images(t / "x-images-idx3-ubyte.gz"), doctest::Contains("too short"), vit::Error);
  im.pop_back();
  gz(t / "y-images-idx3-ubyte.gz", im);
  CHECK_THROWS_WITH_AS(read_idx_images(t / "y-images-idx3-ubyte.gz"), doctest::Contains("header says"), vit::Error);
  gz(t / "train-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 2, 7, 0});
  CHECK_THROWS_WITH_AS(convert_fmnist(t.path, "train", t / "o2.vitpack"), doctest::Contains("2 labels for 3"), vit::Error);
  gz(t / "train-labels-idx1-ubyte.gz", {0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 10});
  CHECK_THROWS_WITH_AS(convert_fmnist(t.path, "train", t / "o3.vitpack"), doctest::Contains("not a Fashion-MNIST class"), vit::Error);
  CHECK_FALSE(fs::exists(t / "o3.vitpack"));
  CHECK_FALSE(fs::exists(t / "o3.vitpack.tmp"));

  const std::string real = std::string(kFmnistDir) + "/t10k-labels-idx1-ubyte.gz";
  if (!fs::exists(real)) {
    MESSAGE("dataset-fashion-mnist not installed: real-data check skipped");
    return;
  }
  // The real test split: 10,000 images of 28×28, 1,000 per class.
  CHECK(convert_fmnist(kFmnistDir, "t10k", t / "test.vitpack") == 10000);
  PackReader fr(t / "test.vitpack");
  std::vector<int> per(10, 0);
  for (int64_t i = 0; i < fr.size(); ++i) per[fr.label(i)]++;
  CHECK(per == std::vector<int>(10, 1000));
  CHECK(fr.image(0).h == 28);
  const IdxImages idx = read_idx_images(std::string(kFmnistDir) + "/t10k-images-idx3-ubyte.gz");
  CHECK(std::equal(idx.pixels.begin() + 784 * 1234, idx.pixels.begin() + 784 * 1235, fr.image(1234).data));
}

TEST_CASE("data synthetic: deterministic per index, balanced labels, classes distinguishable") {
  auto tr = make_synthetic_dataset(100, 4, 12, 10, Split::train);
  auto va = make_synthetic_dataset(20, 4, 12, 10, Split::val);
  SampleScratch s1, s2;
  ImageView a, b;
  std::string why, note;
  REQUIRE(tr->load(13, 3, s1, a, why, note));
  REQUIRE(tr->load(13, 3, s2, b, why, note));
  CHECK(a.h == 12);
  CHECK(a.w == 10);
  CHECK(std::equal(a.data, a.data + a.bytes(), b.data));
  REQUIRE(va->load(13, 3, s2, b, why, note));
  CHECK_FALSE(std::equal(a.data, a.data + a.bytes(), b.data));
  CHECK(tr->label(13) == 1);
  // Mean colour per class differs more between classes than within (learnable).
  std::vector<std::array<double, 3>> mean(4, {0, 0, 0});
  for (int i = 0; i < 100; ++i) {
    REQUIRE(tr->load(i, 3, s1, a, why, note));
    for (size_t p = 0; p < a.bytes(); ++p) mean[i % 4][p % 3] += a.data[p] / (25.0 * 120);
  }
  for (int i = 0; i < 4; ++i)
    for (int j = i + 1; j < 4; ++j) {
      double d = 0;
      for (int c = 0; c < 3; ++c) d += std::abs(mean[i][c] - mean[j][c]);
      CHECK(d > 1.0);
    }
  REQUIRE(tr->load(5, 1, s1, a, why, note));
  CHECK(a.c == 1);
}
