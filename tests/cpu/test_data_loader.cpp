// Sampler and loader: coverage per epoch over ranks, determinism over thread counts, exact resume,
// validity in evaluation, bad files skipped and counted, the allocator callback.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <set>

#include "data/loader.h"
#include "data/packed.h"
#include "data/sampler.h"
#include "engine/check.h"
#include "test_data_files.h"

using namespace vit::data;
using namespace vit::testing;
namespace fs = std::filesystem;

namespace {

struct Copy {
  std::vector<float> images;
  std::vector<int> labels;
  std::vector<unsigned char> valid;
  int64_t epoch, step;
  bool operator==(const Copy&) const = default;
};

Copy copy(const Batch& b, size_t sample_floats) {
  return Copy{std::vector<float>(b.images, b.images + b.size * sample_floats), std::vector<int>(b.labels, b.labels + b.size),
              std::vector<unsigned char>(b.valid, b.valid + b.size), b.epoch, b.step};
}

std::vector<Copy> take(Loader& l, int n, size_t sf) {
  std::vector<Copy> out;
  for (int i = 0; i < n; ++i) out.push_back(copy(l.next(), sf));
  return out;
}

// A pack of n tiny images whose label is their index (so batches show which samples they hold).
std::string index_pack(const TempDir& t, int n) {
  std::vector<std::string> names;
  for (int i = 0; i < n; ++i) names.push_back("c" + std::to_string(i));
  const std::string path = t / "idx.vitpack";
  PackWriter w(path, 3, names);
  for (int i = 0; i < n; ++i) {
    const auto px = make_pixels(6, 5, 3, [&](int x, int y, int c) { return (i * 13 + x * 5 + y * 3 + c * 50) % 256; });
    w.add(ImageView{px.data(), 5, 6, 3}, i);
  }
  w.finish();
  return path;
}

vit::DataConfig augmenting(const std::string& format) {
  vit::DataConfig dc;
  dc.format = format;
  dc.transforms.color_jitter = 0.4;
  dc.transforms.random_erasing = 0.5;
  dc.transforms.vflip = 0.3;
  return dc;
}

const LogFn quiet = [](const std::string&) {};

}  // namespace

TEST_CASE("data sampler: every sample once per epoch over all ranks (train drops the last partial global batch)") {
  for (int64_t n : {1, 5, 37, 40, 1001})
    for (int world : {1, 2, 3, 4})
      for (int batch : {1, 3, 4}) {
        CAPTURE(n);
        CAPTURE(world);
        CAPTURE(batch);
        const int64_t g = (int64_t)world * batch;
        // Val: ceil(n / g) steps, every index exactly once, the rest padding.
        std::vector<int> seen(n, 0);
        int64_t pad = 0;
        const int64_t vsteps = Sampler(n, 0, world, batch, Split::val, 1).steps_per_epoch();
        CHECK(vsteps == (n + g - 1) / g);
        for (int r = 0; r < world; ++r) {
          Sampler s(n, r, world, batch, Split::val, 1);
          for (int64_t st = 0; st < vsteps; ++st)
            for (int j = 0; j < batch; ++j) {
              const int64_t i = s.index(0, st, j);
              if (i < 0) ++pad;
              else seen[i]++;
            }
        }
        CHECK(std::count(seen.begin(), seen.end(), 1) == n);
        CHECK(pad == vsteps * g - n);
        if (n < g) {
          CHECK_THROWS_AS(Sampler(n, 0, world, batch, Split::train, 1), vit::Error);
          continue;
        }
        // Train: floor(n / g) steps; distinct indices, a different order each epoch.
        const int64_t steps = n / g;
        std::vector<std::vector<int64_t>> order(2);
        for (int epoch : {0, 1}) {
          std::vector<int> hit(n, 0);
          for (int r = 0; r < world; ++r) {
            Sampler s(n, r, world, batch, Split::train, 42);
            CHECK(s.steps_per_epoch() == steps);
            for (int64_t st = 0; st < steps; ++st)
              for (int j = 0; j < batch; ++j) {
                const int64_t i = s.index(epoch, st, j);
                REQUIRE(i >= 0);
                REQUIRE(i < n);
                hit[i]++;
              }
          }
          CHECK(std::count(hit.begin(), hit.end(), 1) == steps * g);
          CHECK(std::count(hit.begin(), hit.end(), 0) == n - steps * g);
          Sampler s(n, 0, 1, 1, Split::train, 42);
          for (int64_t p = 0; p < n; ++p) order[epoch].push_back(s.at(epoch, p));
          auto sorted = order[epoch];
          std::sort(sorted.begin(), sorted.end());
          for (int64_t p = 0; p < n; ++p) REQUIRE(sorted[p] == p);  // a permutation
        }
        if (n >= 37) CHECK(order[0] != order[1]);
      }
  // The global batch does not depend on how it is split over ranks.
  for (auto [world, batch] : {std::pair{2, 6}, {3, 4}, {12, 1}})
    for (int64_t st = 0; st < 3; ++st)
      for (int r = 0; r < world; ++r)
        for (int j = 0; j < batch; ++j)
          CHECK(Sampler(100, r, world, batch, Split::train, 9).index(2, st, j) ==
                Sampler(100, 0, 1, 12, Split::train, 9).index(2, st, r * batch + j));
}

TEST_CASE("data loader: identical batches with 0, 1 and 4 workers - ranks get slices of the global batch") {
  auto dc = augmenting("synthetic");
  dc.synthetic_samples = 50;
  dc.synthetic_classes = 5;
  const size_t sf = 3 * 16 * 16;
  std::vector<Copy> ref;
  for (auto [workers, prefetch] : {std::pair{0, 1}, {1, 2}, {4, 3}, {4, 1}}) {
    CAPTURE(workers);
    dc.num_workers = workers;
    dc.prefetch = prefetch;
    Loader l(dc, 3, 16, 16, Split::train, 0, 1, 6, 1234, {}, quiet);
    CHECK(l.steps_per_epoch() == 8);
    auto got = take(l, 19, sf);  // crosses two epoch boundaries
    CHECK(got[8].epoch == 1);
    CHECK(got[8].step == 0);
    if (ref.empty()) ref = got;
    else CHECK(got == ref);
  }
  // 2 ranks × batch 3 see the halves of 1 rank × batch 6.
  dc.num_workers = 2;
  for (int r = 0; r < 2; ++r) {
    Loader l(dc, 3, 16, 16, Split::train, r, 2, 3, 1234, {}, quiet);
    auto got = take(l, 10, sf);
    for (int i = 0; i < 10; ++i) {
      CHECK(std::equal(got[i].images.begin(), got[i].images.end(), ref[i].images.begin() + r * 3 * sf));
      CHECK(std::equal(got[i].labels.begin(), got[i].labels.end(), ref[i].labels.begin() + r * 3));
    }
  }
  // Another seed gives other batches.
  Loader other(dc, 3, 16, 16, Split::train, 0, 1, 6, 99, {}, quiet);
  CHECK(copy(other.next(), sf).images != ref[0].images);
}

TEST_CASE("data loader: state() and restore() resume exactly") {
  auto dc = augmenting("synthetic");
  dc.synthetic_samples = 40;
  dc.num_workers = 3;
  dc.prefetch = 3;
  const size_t sf = 3 * 8 * 8;
  Loader a(dc, 3, 8, 8, Split::train, 0, 1, 7, 5, {}, quiet);  // 5 steps per epoch
  CHECK(a.state() == LoaderState{0, 0});
  take(a, 7, sf);
  const LoaderState s = a.state();
  CHECK(s == LoaderState{1, 2});
  const auto after = take(a, 6, sf);
  CHECK(after[0].epoch == 1);
  CHECK(after[0].step == 2);
  Loader b(dc, 3, 8, 8, Split::train, 0, 1, 7, 5, {}, quiet);
  b.next();
  b.restore(s);
  CHECK(b.state() == s);
  CHECK(take(b, 6, sf) == after);
  a.restore(s);  // rewinding the same loader
  CHECK(take(a, 6, sf) == after);
  CHECK_THROWS_AS(a.restore(LoaderState{0, 5}), vit::Error);
  CHECK_THROWS_AS(a.restore(LoaderState{-1, 0}), vit::Error);
}

TEST_CASE("data loader: evaluation covers every sample once over ranks, padding marked invalid") {
  TempDir t;
  const int n = 23;
  vit::DataConfig dc;
  dc.format = "packed";
  dc.val_path = index_pack(t, n);
  dc.transforms.crop_pct = 1.0;
  const size_t sf = 3 * 4 * 4;
  for (int workers : {0, 2}) {
    dc.num_workers = workers;
    std::vector<int> seen(n, 0);
    int invalid = 0;
    for (int r = 0; r < 3; ++r) {
      Loader l(dc, 3, 4, 4, Split::val, r, 3, 4, 0, {}, quiet);
      REQUIRE(l.steps_per_epoch() == 2);
      for (int pass = 0; pass < 2; ++pass)  // the second pass repeats the first
        for (int st = 0; st < 2; ++st) {
          const Batch& b = l.next();
          CHECK(b.epoch == pass);
          for (int j = 0; j < b.size; ++j) {
            if (b.valid[j]) {
              REQUIRE(b.labels[j] >= 0);
              if (pass == 0) seen[b.labels[j]]++;
            } else {
              CHECK(b.labels[j] == -1);
              CHECK(std::all_of(b.images + j * sf, b.images + (j + 1) * sf, [](float v) { return v == 0.0f; }));
              invalid += pass == 0;
            }
          }
        }
    }
    CHECK(std::count(seen.begin(), seen.end(), 1) == n);
    CHECK(invalid == 2 * 12 - n);
  }
  // Train over the same pack: an epoch's labels are distinct; 23 = 2 × (3 × 4) - 1 -> 1 step of 12.
  dc.train_path = dc.val_path;
  Loader l(dc, 3, 4, 4, Split::train, 0, 1, 5, 0, {}, quiet);
  CHECK(l.steps_per_epoch() == 4);
  std::set<int> labels;
  for (int st = 0; st < 4; ++st) {
    const Batch& b = l.next();
    for (int j = 0; j < 5; ++j) {
      CHECK(b.valid[j] == 1);
      labels.insert(b.labels[j]);
    }
  }
  CHECK(labels.size() == 20);
}

TEST_CASE("data loader: bad files are skipped with a warning naming them, counted, and replaced deterministically") {
  TempDir t;
  auto pix = [](int seed) {
    return make_pixels(20, 14, 3, [&](int x, int y, int c) { return (seed * 40 + x * 9 + y * 5 + c * 60) % 256; });
  };
  // Good files (two classes).
  for (int i = 0; i < 3; ++i) write_bytes(t / ("a/good" + std::to_string(i) + ".png"), stb_png(20, 14, 3, pix(i)));
  for (int i = 0; i < 3; ++i) write_bytes(t / ("b/good" + std::to_string(i) + ".jpg"), stb_jpg(20, 14, 3, pix(i + 3)));
  // Usable oddities: decoded, with a note.
  write_bytes(t / "a/png_named.JPEG", stb_png(20, 14, 3, pix(7)));
  write_bytes(t / "b/cmyk.jpg", flat_jpeg(24, 16, 4, false, [](int c, int bx, int by) { return 100 + 30 * c + bx + by; }));
  write_bytes(t / "b/deep16.png", png16(20, 14, 3, [](int x, int y, int c) { return x * 3000 + y * 200 + c * 9000; }));
  // Bad files.
  const auto jpg = stb_jpg(20, 14, 3, pix(9));
  auto png = stb_png(20, 14, 3, pix(8));
  png[png.size() / 2] ^= 0x55;
  std::vector<std::string> bad = {t / "a/empty.jpg", t / "a/truncated.jpg", t / "b/corrupt.png", t / "b/text.jpeg",
                                  t / "b/huge.png"};
  write_bytes(bad[0], {});
  write_bytes(bad[1], {jpg.begin(), jpg.begin() + (long)jpg.size() / 2});
  write_bytes(bad[2], png);
  write_bytes(bad[3], {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  write_bytes(bad[4], png_raw(20000, 20000, 8, 2, {0}));
  const int n = 14, good = 9;

  vit::DataConfig dc;
  dc.format = "folder";
  dc.train_path = t.path;
  dc.val_path = t.path;
  dc.transforms.hflip = 0.5;
  dc.convert_odd_images = true;  // here the oddities are decoded; by default they are skipped (next test)
  const size_t sf = 3 * 12 * 12;
  std::vector<Copy> ref;
  for (int workers : {0, 3}) {
    CAPTURE(workers);
    dc.num_workers = workers;
    std::vector<std::string> logs;
    std::mutex mu;
    LogFn log = [&](const std::string& s) {
      std::lock_guard lk(mu);
      logs.push_back(s);
    };
    Loader l(dc, 3, 12, 12, Split::train, 0, 1, 7, 3, {}, log);
    REQUIRE(l.steps_per_epoch() == 2);
    auto got = take(l, 4, sf);  // two epochs: every position visited
    CHECK(l.bad_files() == 5);
    CHECK(l.converted_files() == 3);
    for (const auto& f : bad) {
      const int warned = (int)std::count_if(logs.begin(), logs.end(), [&](const std::string& s) {
        return s.find("warning") != std::string::npos && s.find(f) != std::string::npos;
      });
      CHECK_MESSAGE(warned == 1, f);  // once, naming the file
    }
    for (const char* f : {"png_named.JPEG", "cmyk.jpg", "deep16.png"})
      CHECK(std::count_if(logs.begin(), logs.end(), [&](const std::string& s) { return s.find(f) != std::string::npos; }) == 1);
    for (const auto& b : got) {
      CHECK(std::all_of(b.valid.begin(), b.valid.end(), [](unsigned char v) { return v == 1; }));
      CHECK(std::all_of(b.labels.begin(), b.labels.end(), [](int v) { return v == 0 || v == 1; }));
      CHECK(std::all_of(b.images.begin(), b.images.end(), [](float v) { return std::isfinite(v); }));
    }
    if (ref.empty()) ref = got;
    else CHECK(got == ref);
    // Val: bad files are invalid slots, every usable file counted once.
    Loader v(dc, 3, 12, 12, Split::val, 0, 1, 4, 3, {}, log);
    int valid = 0;
    for (int st = 0; st < v.steps_per_epoch(); ++st) {
      const Batch& b = v.next();
      for (int j = 0; j < b.size; ++j) valid += b.valid[j];
    }
    CHECK(valid == good);
    CHECK(v.bad_files() == 5);
  }
  (void)n;
  // No usable image at all: an error that says so.
  TempDir e;
  write_bytes(e / "c/x.jpg", {});
  write_bytes(e / "c/y.png", {1, 2, 3});
  dc.train_path = e.path;
  for (int workers : {0, 2}) {
    dc.num_workers = workers;
    Loader l(dc, 3, 12, 12, Split::train, 0, 1, 2, 0, {}, quiet);
    CHECK_THROWS_WITH_AS(l.next(), doctest::Contains("no usable image"), vit::Error);
  }
}

TEST_CASE("data loader: batch memory comes from the allocator callback, once per ring slot - gray in_chans") {
  std::atomic<int> allocs{0}, frees{0};
  Allocator a{[&](size_t n) {
                ++allocs;
                return std::malloc(n);
              },
              [&](void* p) {
                ++frees;
                std::free(p);
              }};
  {
    vit::DataConfig dc;
    dc.num_workers = 2;
    dc.prefetch = 3;
    dc.synthetic_samples = 20;
    Loader l(dc, 1, 8, 8, Split::train, 0, 1, 4, 0, a, quiet);
    CHECK(allocs == 3);
    for (int i = 0; i < 10; ++i) l.next();
    CHECK(allocs == 3);
    CHECK(l.num_classes() == 10);
    CHECK(l.dataset_size() == 20);
  }
  CHECK(frees == 3);
}

TEST_CASE("data loader: by default CMYK JPEG, 16-bit PNG and a PNG named .JPEG are skipped as bad files, named") {
  TempDir t;
  auto pix = [](int seed) {
    return make_pixels(20, 14, 3, [&](int x, int y, int c) { return (seed * 40 + x * 9 + y * 5 + c * 60) % 256; });
  };
  for (int i = 0; i < 2; ++i) write_bytes(t / ("a/good" + std::to_string(i) + ".png"), stb_png(20, 14, 3, pix(i)));
  write_bytes(t / "a/png_named.JPEG", stb_png(20, 14, 3, pix(7)));
  write_bytes(t / "a/cmyk.jpg", flat_jpeg(24, 16, 4, false, [](int c, int bx, int by) { return 100 + 30 * c + bx + by; }));
  write_bytes(t / "a/deep16.png", png16(20, 14, 3, [](int x, int y, int c) { return x * 3000 + y * 200 + c * 9000; }));
  vit::DataConfig dc;
  dc.format = "folder";
  dc.train_path = t.path;
  dc.num_workers = 0;
  std::vector<std::string> logs;
  LogFn log = [&](const std::string& s) { logs.push_back(s); };
  Loader l(dc, 3, 12, 12, Split::train, 0, 1, 5, 3, {}, log);
  for (int i = 0; i < 2; ++i) {
    const Batch& b = l.next();
    for (int j = 0; j < b.size; ++j) CHECK((b.valid[j] == 1 && b.labels[j] == 0));
  }
  CHECK(l.bad_files() == 3);
  CHECK(l.converted_files() == 0);
  for (const char* f : {"png_named.JPEG", "cmyk.jpg", "deep16.png"}) {
    CAPTURE(f);
    CHECK(std::count_if(logs.begin(), logs.end(), [&](const std::string& s) {
            return s.find("warning") != std::string::npos && s.find(f) != std::string::npos &&
                   s.find("data.convert_odd_images") != std::string::npos;
          }) == 1);
  }
}
