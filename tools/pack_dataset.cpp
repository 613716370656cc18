// Packs an image dataset into .vitpack files of pre-decoded 8-bit images, so training does no decoding.
//   pack_dataset --format folder|tiny_imagenet --train PATH [--val PATH] [--split train|val]
//                [--class-map FILE] [--classes a,b,...] --out PATH [--shard-images N]
//                [--short-side S] [--channels 1|3] [--threads T]
// --short-side S: images whose shorter side exceeds S are resized (bicubic, antialiased) so it is S
// (0 = keep the original size). --shard-images N: write PATH/shard-00000.vitpack, ... with N images each
// (0 = one file PATH). Bad files are skipped with a warning naming them. Labels (and the class list
// stored in the pack) come from the training tree, as the loader's would.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/packed.h"
#include "data/resample.h"
#include "engine/check.h"

using namespace vit;
using namespace vit::data;
namespace fs = std::filesystem;

namespace {

struct Item {
  bool ok = false;
  std::string why, note;
  std::vector<uint8_t> px;
  int h = 0, w = 0;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    DataConfig dc;
    dc.format = "";
    std::string split = "train", out;
    int64_t shard_images = 0;
    int short_side = 0, channels = 3, threads = (int)std::max(1u, std::thread::hardware_concurrency());
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        VIT_REQUIRE(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--format") dc.format = value();
      else if (a == "--train") dc.train_path = value();
      else if (a == "--val") dc.val_path = value();
      else if (a == "--split") split = value();
      else if (a == "--class-map") dc.class_map = value();
      else if (a == "--classes") {
        std::stringstream ss(value());
        for (std::string c; std::getline(ss, c, ',');)
          if (!c.empty()) dc.classes.push_back(c);
      } else if (a == "--out") out = value();
      else if (a == "--shard-images") shard_images = std::stoll(value());
      else if (a == "--short-side") short_side = std::stoi(value());
      else if (a == "--channels") channels = std::stoi(value());
      else if (a == "--threads") threads = std::stoi(value());
      else if (a == "-h" || a == "--help") {
        std::printf("usage: pack_dataset --format folder|tiny_imagenet --train PATH [--val PATH] [--split train|val]\n"
                    "       [--class-map FILE] [--classes a,b] --out PATH [--shard-images N] [--short-side S]\n"
                    "       [--channels 1|3] [--threads T]\n");
        return 0;
      } else fail("unknown argument ", a, " (try --help)");
    }
    VIT_REQUIRE(dc.format == "folder" || dc.format == "tiny_imagenet", "--format must be folder or tiny_imagenet");
    VIT_REQUIRE(split == "train" || split == "val", "--split must be train or val");
    VIT_REQUIRE(!out.empty(), "--out is required");
    VIT_REQUIRE(channels == 1 || channels == 3, "--channels must be 1 or 3");
    VIT_REQUIRE(short_side >= 0 && shard_images >= 0 && threads >= 1, "--short-side, --shard-images, --threads: bad value");
    const LogFn log = [](const std::string& s) { std::fprintf(stderr, "pack_dataset: %s\n", s.c_str()); };
    const auto ds = make_dataset(dc, split == "train" ? Split::train : Split::val, 0, 0, log);
    const int64_t n = ds->size();
    if (shard_images > 0) fs::create_directories(out);
    else if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());

    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<PackWriter> w;
    int shard = 0;
    int64_t written = 0, bad = 0, in_shard = 0;
    uint64_t bytes = 0;
    auto open_next = [&] {
      if (w) w->finish();
      char name[64];
      std::snprintf(name, sizeof name, "shard-%05d.vitpack", shard++);
      w = std::make_unique<PackWriter>(shard_images > 0 ? (fs::path(out) / name).string() : out, channels,
                                       ds->class_names());
      in_shard = 0;
    };
    open_next();
    // Decode a window of images in parallel, then append them in dataset order.
    const int64_t window = 64 * (int64_t)threads;
    std::vector<Item> items(window);
    for (int64_t base = 0; base < n; base += window) {
      const int64_t m = std::min(window, n - base);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          SampleScratch s;
          ResampleScratch rs;
          for (int64_t k = t; k < m; k += threads) {
            Item& it = items[k];
            ImageView v;
            it.ok = ds->load(base + k, channels, s, v, it.why, it.note);
            if (!it.ok) continue;
            const int shorter = std::min(v.w, v.h), longer = std::max(v.w, v.h);
            if (short_side > 0 && shorter > short_side) {
              const int nl = (int)((double)short_side * longer / shorter);
              v = resize_u8(v, v.w <= v.h ? short_side : nl, v.w <= v.h ? nl : short_side, Interp::bicubic, it.px, rs);
            } else {
              it.px.assign(v.data, v.data + v.bytes());
            }
            it.h = v.h;
            it.w = v.w;
          }
        });
      for (auto& th : pool) th.join();
      for (int64_t k = 0; k < m; ++k) {
        const Item& it = items[k];
        if (!it.ok) {
          ++bad;
          log(detail::cat("warning: skipping ", ds->describe(base + k), ": ", it.why));
          continue;
        }
        if (!it.note.empty()) log(detail::cat("note: ", ds->describe(base + k), ": ", it.note));
        if (shard_images > 0 && in_shard == shard_images) open_next();
        w->add(ImageView{it.px.data(), it.h, it.w, channels}, ds->label(base + k));
        ++in_shard;
        ++written;
        bytes += it.px.size();
      }
    }
    w->finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("pack_dataset: %s: %lld images (%.1f MiB of pixels) in %d file(s), %lld bad file(s) skipped, %.1f s "
                "(%.0f img/s)\n",
                out.c_str(), (long long)written, bytes / 1048576.0, shard, (long long)bad, s, written / s);
    VIT_REQUIRE(written > 0, "no usable image in ", ds->summary());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pack_dataset: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
