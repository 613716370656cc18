// Datasets of image files decoded on load: class-per-folder trees (ImageNet train style, recursive) and
// Tiny ImageNet's val folder (val_annotations.txt + images/).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "data/classes.h"
#include "data/dataset.h"

namespace vit::data {

// Names of the class folders (non-hidden sub-directories) of `root`, sorted. Throws if `root` is not a
// readable directory.
std::vector<std::string> list_class_folders(const std::string& root, const char* key);

// Every .jpg/.jpeg/.png (any case) under root/<class>/ (recursively) for the classes of `cl`; folders of
// other classes are skipped (counted in the log). Order: by label, then by path.
std::unique_ptr<Dataset> open_folder_dataset(const std::string& root, const ClassList& cl, const DecodeLimits& lim,
                                             const LogFn& log);

// Tiny ImageNet val layout: dir/val_annotations.txt ("file<TAB>class_id<TAB>box...") with the images in
// dir/images/. Entries of classes not in `cl` and entries whose file is absent are skipped with counts.
std::unique_ptr<Dataset> open_annotated_dataset(const std::string& dir, const ClassList& cl,
                                                const DecodeLimits& lim, const LogFn& log);

}  // namespace vit::data
