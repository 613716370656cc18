#include "data/classes.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include "engine/check.h"

namespace vit::data {

std::vector<std::string> read_class_map(const std::string& path) {
  std::ifstream f(path);
  VIT_REQUIRE(f, "data.class_map = \"", path, "\": cannot open the file");
  std::vector<std::string> ids;
  std::unordered_set<std::string> seen;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ls(line);
    std::string id;
    if (!(ls >> id)) continue;
    if (seen.insert(id).second) ids.push_back(id);
  }
  VIT_REQUIRE(!ids.empty(), "data.class_map = \"", path, "\": no class ids in the file");
  return ids;
}

ClassList resolve_classes(std::vector<std::string> present, const std::string& class_map_path,
                          const std::vector<std::string>& filter, const std::string& origin, const LogFn& log) {
  std::sort(present.begin(), present.end());
  VIT_REQUIRE(!present.empty(), "no class folders in ", origin,
              " (expected one sub-folder of images per class)");
  const std::unordered_set<std::string> have(present.begin(), present.end());
  std::vector<std::string> order;
  if (!class_map_path.empty()) {
    const auto map = read_class_map(class_map_path);
    const std::unordered_set<std::string> in_map(map.begin(), map.end());
    int64_t absent = 0, unlisted = 0;
    for (const auto& id : map) {
      if (have.count(id)) order.push_back(id);
      else ++absent;
    }
    for (const auto& id : present) unlisted += in_map.count(id) ? 0 : 1;
    if (absent && log)
      log(detail::cat("class map ", class_map_path, ": ", map.size(), " classes, ", absent,
                      " skipped (no training folder in ", origin, ")"));
    if (unlisted && log)
      log(detail::cat("warning: ", unlisted, " class folder(s) in ", origin, " are not in the class map ",
                      class_map_path, " and are skipped"));
  } else {
    order = present;
  }
  if (!filter.empty()) {
    std::unordered_set<std::string> keep;
    for (const auto& id : filter) {
      VIT_REQUIRE(have.count(id), "data.classes: class \"", id, "\" has no folder in ", origin, " (",
                  present.size(), " classes there, e.g. \"", present.front(), "\")");
      keep.insert(id);
    }
    std::vector<std::string> kept;
    for (const auto& id : order)
      if (keep.count(id)) kept.push_back(id);
    VIT_REQUIRE(!kept.empty(), "data.classes: none of the listed classes is in the class map ", class_map_path);
    order = std::move(kept);
  }
  VIT_REQUIRE(!order.empty(), "no class of ", origin, " is in the class map ", class_map_path);
  ClassList cl;
  cl.names = std::move(order);
  for (int i = 0; i < (int)cl.names.size(); ++i) cl.label_of[cl.names[i]] = i;
  return cl;
}

}  // namespace vit::data
