// Class lists: which classes a dataset has and in what order (that order is the label).
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "data/dataset.h"

namespace vit::data {

// Reads a class map file: the first whitespace-separated token of every non-empty line, in file order
// (wnids.txt: one id a line; words.txt: "id<TAB>names"). Throws vit::Error if unreadable or empty.
std::vector<std::string> read_class_map(const std::string& path);

struct ClassList {
  std::vector<std::string> names;                // label -> class id
  std::unordered_map<std::string, int> label_of;  // class id -> label
  int find(const std::string& id) const {
    auto it = label_of.find(id);
    return it == label_of.end() ? -1 : it->second;
  }
};

// The classes of a training set whose class folders are `present`: ordered by the class map if one is
// given (else sorted by name), map entries without training data dropped, training folders missing from
// the map dropped, and only the classes in `filter` kept if it is non-empty (an unknown filter entry is
// an error). Logs what it dropped; throws if no class is left. `origin` names the training folder.
ClassList resolve_classes(std::vector<std::string> present, const std::string& class_map_path,
                          const std::vector<std::string>& filter, const std::string& origin, const LogFn& log);

}  // namespace vit::data
