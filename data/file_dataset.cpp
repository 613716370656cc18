#include "data/file_dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "engine/check.h"

namespace fs = std::filesystem;

namespace vit::data {

namespace {

bool hidden(const fs::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

// Relative paths packed into one string (ImageNet has 1.28M of them).
class FileDataset final : public Dataset {
 public:
  FileDataset(std::string root, std::string what, ClassList classes, const DecodeLimits& lim)
      : root_(std::move(root)), what_(std::move(what)), classes_(std::move(classes)), lim_(lim) {}

  void add(const std::string& rel, int label) {
    off_.push_back(blob_.size());
    blob_ += rel;
    labels_.push_back(label);
  }
  void finish() { off_.push_back(blob_.size()); }

  int64_t size() const override { return (int64_t)labels_.size(); }
  int num_classes() const override { return (int)classes_.names.size(); }
  const std::vector<std::string>& class_names() const override { return classes_.names; }
  int label(int64_t i) const override { return labels_[i]; }
  std::string describe(int64_t i) const override {
    return root_ + "/" + blob_.substr(off_[i], off_[i + 1] - off_[i]);
  }
  std::string summary() const override {
    return detail::cat(what_, " ", root_, ": ", size(), " images, ", num_classes(), " classes");
  }

  bool load(int64_t i, int channels, SampleScratch& s, ImageView& view, std::string& why,
            std::string& note) const override {
    const std::string path = describe(i);
    if (!read_file(path, s.file, lim_.max_file_bytes, why)) return false;
    if (!decode_image(s.file.data(), s.file.size(), channels, lim_, s.decoded, why, &note)) return false;
    // A file whose content is not what its name says (ImageNet has a PNG named .JPEG): decoded by content.
    const ImageFormat named = format_from_name(path), actual = sniff_format(s.file.data(), s.file.size());
    if (named != ImageFormat::unknown && named != actual)
      note = detail::cat(format_name(actual), " data in a file named as ", format_name(named),
                         ", decoded by content", note.empty() ? "" : "; ", note);
    if (!note.empty() && !lim_.convert_odd) {
      why = note + ": skipped (set data.convert_odd_images = true to decode such files)";
      note.clear();
      return false;
    }
    view = s.decoded.view();
    return true;
  }

 private:
  std::string root_, what_;
  ClassList classes_;
  DecodeLimits lim_;
  std::string blob_;
  std::vector<size_t> off_;
  std::vector<int> labels_;
};

}  // namespace

std::vector<std::string> list_class_folders(const std::string& root, const char* key) {
  std::error_code ec;
  VIT_REQUIRE(fs::is_directory(root, ec), key, " = \"", root, "\": not a directory");
  std::vector<std::string> out;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
    if (!hidden(it->path()) && it->is_directory(ec)) out.push_back(it->path().filename().string());
  VIT_REQUIRE(!ec, key, " = \"", root, "\": cannot list the directory (", ec.message(), ")");
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Dataset> open_folder_dataset(const std::string& root_in, const ClassList& cl,
                                             const DecodeLimits& lim, const LogFn& log) {
  std::string root = root_in;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  auto ds = std::make_unique<FileDataset>(root, "folder", cl, lim);
  std::vector<std::vector<std::string>> files(cl.names.size());
  int64_t other = 0, skipped_classes = 0;
  std::error_code ec;
  for (const auto& name : list_class_folders(root, "data path")) {
    const int label = cl.find(name);
    if (label < 0) {
      ++skipped_classes;
      continue;
    }
    const fs::path dir = root + "/" + name;
    for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (hidden(it->path())) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_directory(ec)) continue;
      const std::string p = it->path().string();
      if (format_from_name(p) == ImageFormat::unknown) {
        ++other;
        continue;
      }
      files[label].push_back(p.substr(root.size() + 1));
    }
    VIT_REQUIRE(!ec, "cannot list ", dir.string(), " (", ec.message(), ")");
  }
  for (size_t l = 0; l < files.size(); ++l) {
    std::sort(files[l].begin(), files[l].end());
    for (const auto& f : files[l]) ds->add(f, (int)l);
  }
  ds->finish();
  if (log) {
    std::string extra;
    if (skipped_classes) extra += detail::cat("; skipped ", skipped_classes, " folder(s) of other classes");
    if (other) extra += detail::cat("; ignored ", other, " non-image file(s)");
    log(ds->summary() + extra);
  }
  VIT_REQUIRE(ds->size() > 0, "no images in ", root, " (looked for .jpg, .jpeg, .png files in ",
              cl.names.size(), " class folder(s))");
  return ds;
}

std::unique_ptr<Dataset> open_annotated_dataset(const std::string& dir, const ClassList& cl, const DecodeLimits& lim,
                                                const LogFn& log) {
  const fs::path ann = fs::path(dir) / "val_annotations.txt";
  const fs::path images = fs::path(dir) / "images";
  std::ifstream f(ann);
  VIT_REQUIRE(f, "data.val_path = \"", dir, "\": cannot open ", ann.string(),
              " (Tiny ImageNet layout: val_annotations.txt and images/)");
  std::unordered_set<std::string> present;
  std::error_code ec;
  for (fs::directory_iterator it(images, ec), end; !ec && it != end; it.increment(ec))
    present.insert(it->path().filename().string());
  VIT_REQUIRE(!ec, "cannot list ", images.string(), " (", ec.message(), ")");
  auto ds = std::make_unique<FileDataset>(dir, "annotated", cl, lim);
  int64_t listed = 0, other_class = 0, absent = 0;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    std::string file, id;
    if (!(ls >> file >> id)) continue;
    ++listed;
    const int label = cl.find(id);
    if (label < 0) {
      ++other_class;
      continue;
    }
    if (!present.count(file)) {
      ++absent;
      continue;
    }
    ds->add("images/" + file, label);
  }
  ds->finish();
  if (log)
    log(detail::cat(ds->summary(), " (", ann.string(), ": ", listed, " entries listed; skipped ", other_class,
                    " of classes not in the training set, ", absent, " listed but absent)"));
  VIT_REQUIRE(ds->size() > 0, "no usable entry in ", ann.string(), ": ", listed, " listed, ", other_class,
              " of classes not in the training set, ", absent, " absent from ", images.string());
  return ds;
}

}  // namespace vit::data
