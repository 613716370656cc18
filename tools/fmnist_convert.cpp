// Converts Fashion-MNIST (the IDX files of the Debian package dataset-fashion-mnist) to .vitpack files,
// the data `make run` trains on by default.
//   fmnist_convert [--in DIR] [--train OUT] [--test OUT] [--if-missing]
// Defaults: --in /usr/share/datasets/fashion-mnist, --train runs/data/fmnist_train.vitpack,
// --test runs/data/fmnist_test.vitpack. --if-missing: do nothing when both outputs exist.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>

#include "data/fmnist.h"
#include "engine/check.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  std::string in = vit::data::kFmnistDir, train = "runs/data/fmnist_train.vitpack", test = "runs/data/fmnist_test.vitpack";
  bool if_missing = false;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        VIT_REQUIRE(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--in") in = value();
      else if (a == "--train") train = value();
      else if (a == "--test") test = value();
      else if (a == "--if-missing") if_missing = true;
      else if (a == "-h" || a == "--help") {
        std::printf("usage: fmnist_convert [--in DIR] [--train OUT] [--test OUT] [--if-missing]\n");
        return 0;
      } else vit::fail("unknown argument ", a, " (try --help)");
    }
    if (if_missing && fs::exists(train) && fs::exists(test)) {
      std::printf("fmnist_convert: %s and %s exist\n", train.c_str(), test.c_str());
      return 0;
    }
    for (auto [split, out] : {std::pair{"train", train}, std::pair{"t10k", test}}) {
      const auto t0 = std::chrono::steady_clock::now();
      const fs::path dir = fs::path(out).parent_path();
      if (!dir.empty()) fs::create_directories(dir);
      const int64_t n = vit::data::convert_fmnist(in, split, out);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("fmnist_convert: wrote %s (%lld images, 28x28, 1 channel, 10 classes) in %.2f s\n", out.c_str(),
                  (long long)n, s);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fmnist_convert: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
