#include "data/dataset.h"

#include <filesystem>

#include "data/classes.h"
#include "data/file_dataset.h"
#include "data/packed.h"
#include "data/synthetic.h"
#include "engine/check.h"

namespace fs = std::filesystem;

namespace vit::data {

namespace {

// The classes of the training tree `train_dir` (its class folders, ordered/filtered by the config).
ClassList train_classes(const DataConfig& dc, const std::string& train_dir, const LogFn& log) {
  return resolve_classes(list_class_folders(train_dir, "data.train_path"), dc.class_map, dc.classes, train_dir, log);
}

}  // namespace

std::unique_ptr<Dataset> make_dataset(const DataConfig& dc, Split split, int img_h, int img_w, const LogFn& log) {
  const bool train = split == Split::train;
  DecodeLimits lim;
  lim.convert_odd = dc.convert_odd_images;
  if (dc.format == "synthetic")
    return make_synthetic_dataset(train ? dc.synthetic_samples : dc.synthetic_val_samples, dc.synthetic_classes,
                                  img_h, img_w, split);
  if (dc.format == "packed") {
    VIT_REQUIRE(dc.classes.empty() && dc.class_map.empty(),
                "data.classes / data.class_map do not apply to packed data (labels are fixed when packing: pass "
                "them to tools/pack_dataset)");
    return open_packed_dataset(train ? dc.train_path : dc.val_path, train ? "data.train_path" : "data.val_path", log);
  }
  if (dc.format == "folder") {
    VIT_REQUIRE(!dc.train_path.empty() || !train, "data.train_path is empty: set it to a folder of class folders");
    if (train) return open_folder_dataset(dc.train_path, train_classes(dc, dc.train_path, log), lim, log);
    VIT_REQUIRE(!dc.val_path.empty(), "data.val_path is empty: set it to a folder of class folders");
    // Labels come from the training tree, so a val folder of a class without training data is skipped.
    const std::string cls_root = dc.train_path.empty() ? dc.val_path : dc.train_path;
    return open_folder_dataset(dc.val_path, train_classes(dc, cls_root, LogFn{}), lim, log);
  }
  if (dc.format == "tiny_imagenet") {
    // train_path is either the train/ folder or the dataset root holding train/ and val/.
    VIT_REQUIRE(!dc.train_path.empty(), "data.train_path is empty: set it to Tiny ImageNet's root or its train/ folder");
    std::error_code ec;
    const bool root = fs::is_directory(fs::path(dc.train_path) / "train", ec);
    const std::string train_dir = root ? (fs::path(dc.train_path) / "train").string() : dc.train_path;
    const ClassList cl = train_classes(dc, train_dir, train ? log : LogFn{});
    if (train) return open_folder_dataset(train_dir, cl, lim, log);
    std::string val_dir = dc.val_path;
    if (val_dir.empty() && root) val_dir = (fs::path(dc.train_path) / "val").string();
    VIT_REQUIRE(!val_dir.empty(), "data.val_path is empty: set it to Tiny ImageNet's val/ folder");
    return open_annotated_dataset(val_dir, cl, lim, log);
  }
  fail("data.format = \"", dc.format, "\": expected synthetic, folder, tiny_imagenet or packed");
}

}  // namespace vit::data
