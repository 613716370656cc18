#include "model/timm_weights.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/check.h"

namespace vit {

ckpt::ExportLayout export_layout(const ParamLayout& layout) {
  ckpt::ExportLayout out;
  out.layout_hash = layout.hash();
  for (const ParamSpec& p : layout.params())
    out.tensors.push_back({p.name, p.shape, "unit." + std::to_string(p.unit), (uint64_t)p.offset});
  return out;
}

ckpt::ExportLayout export_layout_from_config(const std::string& config_toml) {
  Config c = parse_config(config_toml, "checkpoint meta.toml", {});
  ParamLayout layout(c.model);
  return export_layout(layout);
}

namespace {

// Keys cubic kernel with a = -0.5, the antialiased path's filter (PIL / torch _upsample_bicubic2d_aa).
double cubic(double x) {
  const double a = -0.5;
  x = std::abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

// Weights of output index i over input indices [lo, lo + w.size()) for a 1-D resize in -> out.
void weights_1d(int in, int out, std::vector<int>& lo, std::vector<std::vector<double>>& w) {
  const double scale = (double)in / out;
  const double support = 2.0 * std::max(1.0, scale);
  const double inv = 1.0 / std::max(1.0, scale);
  lo.resize(out);
  w.assign(out, {});
  for (int i = 0; i < out; ++i) {
    const double center = scale * (i + 0.5);
    const int xmin = std::max(0, (int)(center - support + 0.5));
    const int xmax = std::min(in, (int)(center + support + 0.5));
    double total = 0;
    for (int x = xmin; x < xmax; ++x) {
      const double v = cubic((x - center + 0.5) * inv);
      w[i].push_back(v);
      total += v;
    }
    for (double& v : w[i]) v = total != 0 ? v / total : 0;
    lo[i] = xmin;
  }
}

}  // namespace

std::vector<float> resample_grid(const std::vector<float>& src, int h, int w, int C, int H, int W) {
  std::vector<int> loy, lox;
  std::vector<std::vector<double>> wy, wx;
  weights_1d(h, H, loy, wy);
  weights_1d(w, W, lox, wx);
  // Horizontal pass then vertical pass, in double.
  std::vector<double> tmp((size_t)h * W * C, 0.0);
  for (int y = 0; y < h; ++y)
    for (int X = 0; X < W; ++X)
      for (size_t k = 0; k < wx[X].size(); ++k)
        for (int c = 0; c < C; ++c)
          tmp[((size_t)y * W + X) * C + c] += wx[X][k] * src[((size_t)y * w + lox[X] + k) * C + c];
  std::vector<float> out((size_t)H * W * C);
  for (int Y = 0; Y < H; ++Y)
    for (int X = 0; X < W; ++X)
      for (int c = 0; c < C; ++c) {
        double s = 0;
        for (size_t k = 0; k < wy[Y].size(); ++k) s += wy[Y][k] * tmp[((size_t)(loy[Y] + k) * W + X) * C + c];
        out[((size_t)Y * W + X) * C + c] = (float)s;
      }
  return out;
}

TimmImport::TimmImport(const std::string& path, const ModelConfig& mc, const ParamLayout& layout)
    : reader_(std::make_unique<safetensors::Reader>(path)), mc_(mc), L_(layout) {
  std::vector<std::string> problems;
  const std::string where = "model.init_from = \"" + path + "\": ";
  for (const ParamSpec& p : layout.params()) {
    const safetensors::TensorInfo* t = reader_->find(p.name);
    if (!t) {
      problems.push_back("missing " + p.name);
      continue;
    }
    if (t->dtype != safetensors::Dtype::F32 && t->dtype != safetensors::Dtype::F16 &&
        t->dtype != safetensors::Dtype::BF16 && t->dtype != safetensors::Dtype::F64) {
      problems.push_back(p.name + " has dtype " + safetensors::dtype_name(t->dtype) + " (need F32, F16, BF16 or F64)");
      continue;
    }
    if (t->shape == p.shape) {
      action_[p.name] = "copy";
      continue;
    }
    auto shape_str = [](const std::vector<int64_t>& s) {
      std::ostringstream o;
      o << "[";
      for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
      return o.str() + "]";
    };
    if (p.name == "head.weight" || p.name == "head.bias") {
      action_[p.name] = "skip";
      if (p.name == "head.weight")
        notes_.push_back(where + "head has " + std::to_string(t->shape[0]) + " classes, the model " +
                         std::to_string(p.shape[0]) + ": the head starts from a fresh init");
      continue;
    }
    if (p.name == "pos_embed" && t->shape.size() == 3 && t->shape[0] == 1 && t->shape[2] == p.shape[2]) {
      const int prefix = mc.no_embed_class ? 0 : layout.dims().prefix;
      const int64_t old_grid = t->shape[1] - prefix;
      const int64_t side = (int64_t)std::llround(std::sqrt((double)old_grid));
      if (old_grid > 0 && side * side == old_grid) {
        action_[p.name] = "resample";
        notes_.push_back(where + "pos_embed resampled from a " + std::to_string(side) + "x" + std::to_string(side) +
                         " grid to " + std::to_string(layout.dims().Hp) + "x" + std::to_string(layout.dims().Wp) +
                         " (bicubic)");
        continue;
      }
    }
    problems.push_back(p.name + " has shape " + shape_str(t->shape) + " in the file, " + shape_str(p.shape) +
                       " in the model");
  }
  for (const safetensors::TensorInfo& t : reader_->tensors())
    if (layout.find(t.name) < 0) problems.push_back("unexpected " + t.name);
  if (!problems.empty()) {
    std::string msg = where + std::to_string(problems.size()) + " mismatch(es) with the model: ";
    for (size_t i = 0; i < problems.size() && i < 12; ++i) msg += (i ? "; " : "") + problems[i];
    if (problems.size() > 12) msg += "; ...";
    fail(msg, " — check model.* against the checkpoint's config (timm names, timm shapes)");
  }
}

TimmImport::~TimmImport() = default;

std::vector<float> TimmImport::values_of(const ParamSpec& p) const {
  std::vector<float> v = reader_->read_f32(p.name);
  if (action_.at(p.name) != "resample") return v;
  const ModelDims& d = L_.dims();
  const int prefix = mc_.no_embed_class ? 0 : d.prefix;
  const int D = d.D;
  const int64_t old_grid = (int64_t)v.size() / D - prefix;
  const int side = (int)std::llround(std::sqrt((double)old_grid));
  std::vector<float> grid(v.begin() + (int64_t)prefix * D, v.end());
  std::vector<float> g = resample_grid(grid, side, side, D, d.Hp, d.Wp);
  std::vector<float> out(v.begin(), v.begin() + (int64_t)prefix * D);
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

void TimmImport::fill(int u, int64_t begin, int64_t end, float* dst) const {
  const UnitSpec& U = L_.units()[u];
  for (int i = U.first_param; i < U.first_param + U.num_params; ++i) {
    const ParamSpec& P = L_.params()[i];
    const int64_t b = std::max(begin, P.offset), e = std::min(end, P.offset + P.numel);
    if (b >= e || action_.at(P.name) == "skip") continue;
    auto it = cache_.find(P.name);
    if (it == cache_.end()) {
      cache_.clear();
      it = cache_.emplace(P.name, values_of(P)).first;
    }
    std::copy(it->second.begin() + (b - P.offset), it->second.begin() + (e - P.offset), dst + (b - begin));
  }
}

}  // namespace vit
