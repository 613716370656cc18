// Data loader throughput: JPEG folder vs packed shards, one core and N worker threads, with the
// transforms of ../shared/anchors/anchor_loader.py (RandomResizedCrop 224 bilinear, horizontal flip,
// ImageNet normalize). Run it on the anchor's corpus for a like-for-like comparison:
//   python3 anchor_loader.py seedimg /tmp/corpus 6000      # prints the PyTorch numbers
//   bench_loader --folder /tmp/corpus --workers 16
// Without --folder it generates --generate N JPEGs (400-520 × 330-400, quality 90) in a temp folder.
//   bench_loader [--folder DIR | --generate N] [--workers N] [--batch 256] [--seconds 4] [--size 224]
//                [--pack-images N] [--pack-short-side S] [--tmp DIR]
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "data/loader.h"
#include "data/packed.h"
#include "data/resample.h"
#include "engine/check.h"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

using namespace vit;
using namespace vit::data;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Photo-like test pictures: smooth colour fields, a few soft shapes, mild texture.
void generate_corpus(const std::string& dir, int n) {
  std::mt19937 r(0);
  std::uniform_int_distribution<int> W(400, 520), H(330, 400);
  std::uniform_real_distribution<double> U(0, 1);
  for (int c = 0; c < 5; ++c) fs::create_directories(dir + "/c" + std::to_string(c));
  std::vector<uint8_t> px;
  for (int i = 0; i < n; ++i) {
    const int w = W(r), h = H(r);
    double f[6], ph[6];
    for (int k = 0; k < 6; ++k) f[k] = 0.004 + 0.05 * U(r), ph[k] = 6.28 * U(r);
    const double cx = w * U(r), cy = h * U(r), rad = 40 + 120 * U(r);
    px.resize((size_t)w * h * 3);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const double d = std::hypot(x - cx, y - cy) / rad;
        for (int ch = 0; ch < 3; ++ch) {
          double v = 128 + 60 * std::sin(f[ch] * x + ph[ch]) * std::cos(f[ch + 3] * y + ph[ch + 3]) +
                     50 * std::exp(-d * d) * (ch == i % 3 ? 1 : -0.5) + 12 * std::sin(0.9 * x + 0.7 * y + ch) +
                     8 * (U(r) - 0.5);
          px[((size_t)y * w + x) * 3 + ch] = (uint8_t)std::clamp(v, 0.0, 255.0);
        }
      }
    const std::string path = dir + "/c" + std::to_string(i % 5) + "/img" + std::to_string(i) + ".jpg";
    VIT_REQUIRE(stbi_write_jpg(path.c_str(), w, h, 3, px.data(), 90), "cannot write ", path);
  }
}

DataConfig bench_config(const std::string& format, const std::string& path, int workers) {
  DataConfig dc;
  dc.format = format;
  dc.train_path = path;
  dc.num_workers = workers;
  dc.prefetch = 4;
  dc.transforms.interpolation = "bilinear";  // torchvision RandomResizedCrop's default
  dc.transforms.hflip = 0.5;
  return dc;
}

// Images per second of the train loader in steady state: one batch to start, then `seconds` of batches.
double measure(const DataConfig& dc, int size, int batch, double seconds, int min_batches) {
  Loader l(dc, 3, size, size, Split::train, 0, 1, batch, 0, {}, [](const std::string&) {});
  l.next();
  const auto t0 = Clock::now();
  int k = 0;
  while (k < min_batches || since(t0) < seconds) {
    l.next();
    ++k;
  }
  return (double)k * batch / since(t0);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string folder, tmp = fs::temp_directory_path().string();
    int generate = 600, workers = (int)std::max(1u, std::thread::hardware_concurrency()), batch = 256, size = 224;
    int pack_images = 2000, pack_short = 0;
    double seconds = 4;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        VIT_REQUIRE(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--folder") folder = value();
      else if (a == "--generate") generate = std::stoi(value());
      else if (a == "--workers") workers = std::stoi(value());
      else if (a == "--batch") batch = std::stoi(value());
      else if (a == "--seconds") seconds = std::stod(value());
      else if (a == "--size") size = std::stoi(value());
      else if (a == "--pack-images") pack_images = std::stoi(value());
      else if (a == "--pack-short-side") pack_short = std::stoi(value());
      else if (a == "--tmp") tmp = value();
      else if (a == "-h" || a == "--help") {
        std::printf("usage: bench_loader [--folder DIR | --generate N] [--workers N] [--batch 256] [--seconds 4]\n"
                    "       [--size 224] [--pack-images N] [--pack-short-side S] [--tmp DIR]\n");
        return 0;
      } else fail("unknown argument ", a, " (try --help)");
    }
    const std::string work = (fs::path(tmp) / ("bench_loader_" + std::to_string(::getpid()))).string();
    struct Cleanup {
      std::string p;
      ~Cleanup() {
        std::error_code ec;
        fs::remove_all(p, ec);
      }
    } cleanup{work};
    fs::create_directories(work);
    if (folder.empty()) {
      folder = work + "/corpus";
      const auto t0 = Clock::now();
      generate_corpus(folder, generate);
      std::printf("LOADER generated %d JPEGs in %s (%.1f s)\n", generate, folder.c_str(), since(t0));
    }
    // The corpus.
    int64_t files = 0, bytes = 0;
    for (auto& e : fs::recursive_directory_iterator(folder))
      if (e.is_regular_file() && format_from_name(e.path().string()) != ImageFormat::unknown) ++files, bytes += (int64_t)e.file_size();
    std::printf("LOADER corpus %s: %lld images, mean %.0f KiB; %u hardware threads\n", folder.c_str(), (long long)files,
                files ? bytes / 1024.0 / files : 0.0, std::thread::hardware_concurrency());

    // Correctness first: N workers give the same batch as the calling thread alone.
    {
      auto dc = bench_config("folder", folder, 0);
      Loader a(dc, 3, size, size, Split::train, 0, 1, 16, 0, {}, [](const std::string&) {});
      dc.num_workers = workers;
      Loader b(dc, 3, size, size, Split::train, 0, 1, 16, 0, {}, [](const std::string&) {});
      const Batch &x = a.next(), &y = b.next();
      const bool same = std::equal(x.images, x.images + (size_t)16 * 3 * size * size, y.images) &&
                        std::equal(x.labels, x.labels + 16, y.labels);
      std::printf("LOADER check: 0 vs %d workers give %s batches\n", workers, same ? "identical" : "DIFFERENT");
      VIT_REQUIRE(same, "loader results depend on the worker count");
    }
    VIT_REQUIRE(files >= 32, "the corpus needs at least 32 images, ", folder, " has ", files);
    const int one_batch = 32;
    batch = (int)std::min<int64_t>(batch, files);
    double r1 = measure(bench_config("folder", folder, 0), size, one_batch, seconds, 4);
    std::printf("BENCH loader jpeg one core (calling thread, batch %d): %.0f img/s\n", one_batch, r1);
    double rn = measure(bench_config("folder", folder, workers), size, batch, seconds, 3);
    std::printf("BENCH loader jpeg workers=%d batch=%d: %.0f img/s\n", workers, batch, rn);

    // Pack (a subset of) the corpus, then the same measurements on the pack.
    const std::string pack = work + "/corpus.vitpack";
    int64_t packed_n = 0;
    {
      const auto t0 = Clock::now();
      auto ds = make_dataset(bench_config("folder", folder, 0), Split::train, size, size, {});
      const int64_t n = std::min<int64_t>(ds->size(), pack_images);
      PackWriter w(pack, 3, ds->class_names());
      SampleScratch s;
      ResampleScratch rs;
      std::vector<uint8_t> small;
      std::mt19937_64 r(1);
      uint64_t px = 0;
      for (int64_t k = 0; k < n; ++k) {
        const int64_t i = (int64_t)(r() % (uint64_t)ds->size());  // a sample of every class
        ImageView v;
        std::string why, note;
        if (!ds->load(i, 3, s, v, why, note)) continue;
        const int shorter = std::min(v.w, v.h), longer = std::max(v.w, v.h);
        if (pack_short > 0 && shorter > pack_short) {
          const int nl = (int)((double)pack_short * longer / shorter);
          v = resize_u8(v, v.w <= v.h ? pack_short : nl, v.w <= v.h ? nl : pack_short, Interp::bicubic, small, rs);
        }
        w.add(v, ds->label(i));
        px += v.bytes();
      }
      w.finish();
      packed_n = w.count();
      std::printf("LOADER packed %lld images (%s, %.0f MiB) in %.1f s\n", (long long)w.count(),
                  pack_short ? ("shorter side " + std::to_string(pack_short)).c_str() : "original size", px / 1048576.0,
                  since(t0));
    }
    double p1 = measure(bench_config("packed", pack, 0), size, one_batch, seconds, 4);
    std::printf("BENCH loader packed one core (calling thread, batch %d): %.0f img/s\n", one_batch, p1);
    VIT_REQUIRE(packed_n >= one_batch, "--pack-images: pack at least ", one_batch, " images");
    batch = (int)std::min<int64_t>(batch, packed_n);
    double pn = measure(bench_config("packed", pack, workers), size, batch, seconds, 3);
    std::printf("BENCH loader packed workers=%d batch=%d: %.0f img/s\n", workers, batch, pn);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
