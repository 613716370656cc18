// The configuration system: defaults, every key through an override, the to_toml round trip, every
// kind of bad input with the message it must give, the shipped configs, and the command line.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/check.h"
#include "engine/cli_args.h"
#include "engine/config.h"
#include "engine/config_schema.h"

using namespace vit;
namespace cs = vit::config_schema;

namespace {

Config parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return parse_config(text, "x.toml", overrides);
}

// The message `fn` throws as vit::Error ("" if it does not throw).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Checks that parsing fails with a one-line message containing every fragment.
void check_error(const std::string& text, const std::vector<std::string>& overrides,
                 const std::vector<std::string>& fragments) {
  const std::string msg = error_of([&] { parse(text, overrides); });
  INFO("input: ", text, " overrides: ", overrides.size(), " message: ", msg);
  REQUIRE(!msg.empty());
  CHECK(msg.find('\n') == std::string::npos);
  for (const auto& f : fragments) {
    INFO("fragment: ", f);
    CHECK(msg.find(f) != std::string::npos);
  }
}

std::map<std::string, std::string> toml_lines_by_key(const std::string& toml) {
  std::map<std::string, std::string> out;
  std::istringstream in(toml);
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.front() == '[') {
      section = line.substr(1, line.size() - 2);
      continue;
    }
    const auto eq = line.find(" = ");
    REQUIRE(eq != std::string::npos);
    out[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
  }
  return out;
}

}  // namespace

TEST_CASE("config: an empty file gives the struct defaults, and the defaults pass every check") {
  const Config c = parse("");
  CHECK(c == Config{});
  CHECK(c.model.embed_dim == 768);
  CHECK(c.model.img_size == std::array<int, 2>{224, 224});
  CHECK(c.training.checkpoint.resume_from_metric.empty());
}

TEST_CASE("config: overrides of each value type") {
  const Config c = parse("[model]\ndepth = 6\n",
                         {"model.depth=4", "optimizer.lr=1e-4", "model.qk_norm=true", "run.device=cpu",
                          "run.name=\"my run\"", "optimizer.betas=[0.9, 0.95]", "model.img_size=[32, 48]",
                          "model.patch_size=16", "data.classes=[\"n01\", \"n02\"]", "optimizer.weight_decay=1",
                          "model.fc_norm=false", "model.pos_embed=false", "run.output_dir=2024",
                          " training.steps = 77 ", "model.global_pool=avg", "training.checkpoint.path="});
  CHECK(c.model.depth == 4);  // the override wins over the file
  CHECK(c.optimizer.lr == 1e-4);
  CHECK(c.model.qk_norm);
  CHECK(c.run.device == "cpu");      // a bare word is a string
  CHECK(c.run.name == "my run");     // a quoted string
  CHECK(c.optimizer.betas == std::array<double, 2>{0.9, 0.95});
  CHECK(c.model.img_size == std::array<int, 2>{32, 48});
  CHECK(c.data.classes == std::vector<std::string>{"n01", "n02"});
  CHECK(c.optimizer.weight_decay == 1.0);  // an integer where a number is expected
  CHECK(c.model.fc_norm == "false");       // a boolean for the auto/true/false key
  CHECK(c.model.pos_embed == "none");      // the recipe's pos_embed = false
  CHECK(c.run.output_dir == "2024");       // a string key takes the text as written
  CHECK(c.training.steps == 77);           // spaces around key and value
  CHECK(c.model.global_pool == "avg");
  CHECK(c.training.checkpoint.path.empty());  // key= clears a string
  // A later override of the same key wins.
  CHECK(parse("", {"model.depth=3", "model.depth=5"}).model.depth == 5);
  // An int img_size means a square.
  CHECK(parse("[model]\nimg_size = 64\n").model.img_size == std::array<int, 2>{64, 64});
}

TEST_CASE("config: to_toml round-trips, lists every key once in a fixed order, and feeds the hash") {
  Config c = parse("", {"model.img_size=[32, 64]", "model.patch_size=8", "model.embed_dim=96", "model.num_heads=3",
                        "model.fc_norm=true", "model.global_pool=map", "model.class_token=false",
                        "model.reg_tokens=4", "optimizer.lr=3.0000000000000004e-4", "optimizer.eps=1e-12",
                        "data.transforms.ratio=[0.75, 1.3333333333333333]", "run.name=\"a \\\"quoted\\\" \\\\ name\"",
                        "data.classes=[\"a\", \"b\"]", "training.checkpoint.resume_from_metric=-val_loss",
                        "model.weight_init=jax", "run.seed=9223372036854775807", "model.mlp_ratio=2.6666666666666665"});
  const std::string text = to_toml(c);
  const Config back = parse_config(text, "resolved.toml", {});
  CHECK(back == c);
  CHECK(to_toml(back) == text);
  CHECK(parse_config(to_toml(Config{}), "d.toml", {}) == Config{});

  // Every schema key appears exactly once, sections in the schema's order.
  const auto lines = toml_lines_by_key(text);
  CHECK(lines.size() == cs::fields().size());
  for (const auto& f : cs::fields()) CHECK(lines.count(f.key) == 1);
  size_t pos = 0;
  for (const auto& s : cs::sections()) {
    const size_t at = text.find("[" + s + "]\n");
    REQUIRE(at != std::string::npos);
    CHECK(at >= pos);
    pos = at;
  }
  CHECK(lines.at("model.img_size") == "[32, 64]");
  CHECK(lines.at("model.fc_norm") == "true");
  CHECK(lines.at("model.mlp_ratio") == "2.6666666666666665");

  // The hash is a function of the resolved values.
  CHECK(config_hash(c) == config_hash(back));
  Config d = c;
  d.optimizer.lr = std::nextafter(d.optimizer.lr, 1.0);  // the smallest change still shows
  CHECK(config_hash(d) != config_hash(c));
  CHECK(config_hash(Config{}) != config_hash(c));
}

TEST_CASE("config: every key is reachable by an override that changes only that key") {
  // One non-default value per key (plus the companions some values need).
  const std::map<std::string, std::vector<std::string>> cases = {
      {"run.device", {"run.device=cuda"}},
      {"run.seed", {"run.seed=7"}},
      {"run.output_dir", {"run.output_dir=runs/x"}},
      {"run.name", {"run.name=x"}},
      {"model.img_size", {"model.img_size=[192, 256]"}},
      {"model.patch_size", {"model.patch_size=32"}},
      {"model.in_chans", {"model.in_chans=1"}},
      {"model.num_classes", {"model.num_classes=10"}},
      {"model.global_pool", {"model.global_pool=map"}},
      {"model.embed_dim", {"model.embed_dim=384"}},
      {"model.depth", {"model.depth=2"}},
      {"model.num_heads", {"model.num_heads=6"}},
      {"model.mlp_ratio", {"model.mlp_ratio=2.5"}},
      {"model.qkv_bias", {"model.qkv_bias=false"}},
      {"model.qk_norm", {"model.qk_norm=true"}},
      {"model.scale_attn_norm", {"model.scale_attn_norm=true"}},
      {"model.scale_mlp_norm", {"model.scale_mlp_norm=true"}},
      {"model.proj_bias", {"model.proj_bias=false"}},
      {"model.init_values", {"model.init_values=1e-5"}},
      {"model.class_token", {"model.class_token=false", "model.global_pool=avg"}},
      {"model.reg_tokens", {"model.reg_tokens=4"}},
      {"model.pos_embed", {"model.pos_embed=none"}},
      {"model.no_embed_class", {"model.no_embed_class=true"}},
      {"model.pre_norm", {"model.pre_norm=true"}},
      {"model.final_norm", {"model.final_norm=false"}},
      {"model.fc_norm", {"model.fc_norm=true"}},
      {"model.drop_rate", {"model.drop_rate=0.1"}},
      {"model.pos_drop_rate", {"model.pos_drop_rate=0.1"}},
      {"model.patch_drop_rate", {"model.patch_drop_rate=0.1"}},
      {"model.proj_drop_rate", {"model.proj_drop_rate=0.1"}},
      {"model.attn_drop_rate", {"model.attn_drop_rate=0.1"}},
      {"model.drop_path_rate", {"model.drop_path_rate=0.1"}},
      {"model.weight_init", {"model.weight_init=moco"}},
      {"model.init_variance_rescale", {"model.init_variance_rescale=true"}},
      {"model.act", {"model.act=gelu_tanh"}},
      {"model.init_from", {"model.init_from=w.safetensors"}},
      {"data.format", {"data.format=folder", "data.train_path=imgs"}},
      {"data.train_path", {"data.train_path=imgs"}},
      {"data.val_path", {"data.val_path=val"}},
      {"data.class_map", {"data.class_map=words.txt"}},
      {"data.classes", {"data.classes=[\"n1\"]"}},
      {"data.num_workers", {"data.num_workers=0"}},
      {"data.prefetch", {"data.prefetch=1"}},
      {"data.synthetic_samples", {"data.synthetic_samples=10"}},
      {"data.synthetic_classes", {"data.synthetic_classes=3"}},
      {"data.convert_odd_images", {"data.convert_odd_images=true"}},
      {"data.synthetic_val_samples", {"data.synthetic_val_samples=7"}},
      {"data.transforms.scale", {"data.transforms.scale=[0.5, 1.0]"}},
      {"data.transforms.ratio", {"data.transforms.ratio=[1, 1]"}},
      {"data.transforms.interpolation", {"data.transforms.interpolation=bilinear"}},
      {"data.transforms.hflip", {"data.transforms.hflip=0"}},
      {"data.transforms.vflip", {"data.transforms.vflip=0.5"}},
      {"data.transforms.color_jitter", {"data.transforms.color_jitter=0.4"}},
      {"data.transforms.random_erasing", {"data.transforms.random_erasing=0.25"}},
      {"data.transforms.mean", {"data.transforms.mean=[0.5, 0.5, 0.5]"}},
      {"data.transforms.std", {"data.transforms.std=[0.5, 0.5, 0.5]"}},
      {"data.transforms.crop_pct", {"data.transforms.crop_pct=0.9"}},
      {"training.micro_batch_size", {"training.micro_batch_size=32"}},
      {"training.grad_accum", {"training.grad_accum=4"}},
      {"training.steps", {"training.steps=10"}},
      {"training.epochs", {"training.epochs=3", "training.steps=0"}},
      {"training.val_interval", {"training.val_interval=100"}},
      {"training.log_interval", {"training.log_interval=1"}},
      {"training.label_smoothing", {"training.label_smoothing=0.1"}},
      {"training.grad_clip", {"training.grad_clip=0"}},
      {"training.stop_after_steps", {"training.stop_after_steps=5"}},
      {"training.checkpoint.path", {"training.checkpoint.path=ckpt"}},
      {"training.checkpoint.interval", {"training.checkpoint.interval=50"}},
      {"training.checkpoint.keep_last", {"training.checkpoint.keep_last=0"}},
      {"training.checkpoint.resume_from_metric", {"training.checkpoint.resume_from_metric=+val_top1"}},
      {"training.checkpoint.resume", {"training.checkpoint.resume=false"}},
      {"optimizer.lr", {"optimizer.lr=5e-4"}},
      {"optimizer.betas", {"optimizer.betas=[0.9, 0.98]"}},
      {"optimizer.eps", {"optimizer.eps=1e-6"}},
      {"optimizer.weight_decay", {"optimizer.weight_decay=0.01"}},
      {"scheduler.name", {"scheduler.name=linear"}},
      {"scheduler.warmup_steps", {"scheduler.warmup_steps=10"}},
      {"scheduler.min_lr", {"scheduler.min_lr=1e-6"}},
      {"distributed.strategy", {"distributed.strategy=optim"}},
      {"distributed.dp_shard", {"distributed.dp_shard=2"}},
      {"distributed.dp_outer", {"distributed.dp_outer=2"}},
      {"distributed.outer_strategy", {"distributed.outer_strategy=shard"}},
      {"distributed.grad_reduce_dtype", {"distributed.grad_reduce_dtype=bf16"}},
      {"distributed.reshard_after_forward", {"distributed.reshard_after_forward=false"}},
      {"distributed.comm_burst", {"distributed.comm_burst=4"}},
      {"distributed.timeout_s", {"distributed.timeout_s=30"}},
      {"distributed.transport", {"distributed.transport=nccl"}},
      {"logging.metrics_file", {"logging.metrics_file=m.jsonl"}},
      {"logging.peak_tflops", {"logging.peak_tflops=989.5"}},
  };
  CHECK(cases.size() == cs::fields().size());
  const auto base = toml_lines_by_key(to_toml(Config{}));
  for (const auto& f : cs::fields()) {
    INFO("key: ", f.key);
    REQUIRE(cases.count(f.key) == 1);
    const auto& ovs = cases.at(f.key);
    const Config c = parse("", ovs);
    CHECK(c != Config{});
    CHECK(parse_config(to_toml(c), "rt.toml", {}) == c);
    // The key's own line changed, and no line changed but those of the keys overridden: two keys
    // never share a member.
    const auto lines = toml_lines_by_key(to_toml(c));
    CHECK(lines.at(f.key) != base.at(f.key));
    for (const auto& [k, v] : lines) {
      if (v == base.at(k)) continue;
      const bool overridden = std::any_of(ovs.begin(), ovs.end(), [&](const std::string& o) { return o.rfind(k + "=", 0) == 0; });
      INFO("changed: ", k);
      CHECK(overridden);
    }
    // The same value written in a file gives the same config.
    const std::string file = "[" + f.section() + "]\n" + f.leaf() + " = " + lines.at(f.key) + "\n";
    std::vector<std::string> companions(ovs.begin() + 1, ovs.end());
    CHECK(parse(file, companions) == c);
  }
}

TEST_CASE("config: unknown keys and sections name the closest valid key") {
  check_error("[model]\nembed_dimm = 3\n", {}, {"x.toml:2:1: unknown key 'model.embed_dimm' (did you mean 'model.embed_dim'?)"});
  check_error("[modle]\ndepth = 3\n", {}, {"unknown key 'modle.depth' (did you mean 'model.depth'?)"});
  check_error("[modle]\n", {}, {"x.toml:", "unknown section 'modle' (did you mean 'model'?)"});
  check_error("[training]\nembed_dim = 3\n", {}, {"unknown key 'training.embed_dim' (did you mean 'model.embed_dim'?)"});
  check_error("model.nm_heads = 3\n", {}, {"unknown key 'model.nm_heads' (did you mean 'model.num_heads'?)"});
  check_error("[training.chekpoint]\npath = \"x\"\n", {}, {"did you mean 'training.checkpoint.path'?"});
  check_error("[data]\ntransforms = 3\n", {}, {"'data.transforms' is a section, not a key"});
  check_error("", {"model.embed_dimm=3"},
              {"override 'model.embed_dimm=3': unknown key 'model.embed_dimm' (did you mean 'model.embed_dim'?)"});
  check_error("", {"optimiser.lr=1"}, {"did you mean 'optimizer.lr'?"});
  check_error("", {"model=3"}, {"override 'model=3': 'model' is a section, not a key: set one of its keys, e.g. model.img_size=..."});
  // The first problem in file order is the one reported, whatever toml++'s key order.
  check_error("[model]\nzzz = 1\naaa = 2\n", {}, {"'model.zzz'"});
}

TEST_CASE("config: wrong types, out-of-range values and values outside the allowed set") {
  check_error("[model]\ndepth = \"abc\"\n", {},
              {"x.toml:2:1: model.depth expects an integer, got string \"abc\" (e.g. model.depth = 12)"});
  check_error("[model]\ndepth = 1.5\n", {}, {"model.depth expects an integer, got float 1.5"});
  check_error("[model]\nqk_norm = 1\n", {}, {"model.qk_norm expects a boolean, got integer 1"});
  check_error("[optimizer]\nlr = \"fast\"\n", {}, {"optimizer.lr expects a number, got string \"fast\""});
  check_error("[run]\nname = 3\n", {}, {"run.name expects a string, got integer 3"});
  check_error("[run]\nseed = 1979-05-27\n", {}, {"run.seed expects an integer, got date 1979-05-27"});
  check_error("[model]\nimg_size = [1, 2, 3]\n", {}, {"model.img_size expects an integer or [H, W], got array [1, 2, 3]"});
  check_error("[model]\nimg_size = { h = 3 }\n", {}, {"model.img_size expects an integer or [H, W], got table { h = 3 }"});
  check_error("[optimizer]\nbetas = 0.9\n", {}, {"optimizer.betas expects an array of 2 numbers, got float 0.9"});
  check_error("[data]\nclasses = [\"a\", 1]\n", {}, {"data.classes expects an array of strings"});
  check_error("[data]\nclasses = [\"a\", \"a\"]\n", {}, {"data.classes lists \"a\" twice"});
  check_error("[model]\ndepth = 0\n", {}, {"model.depth = 0 is out of range [1, 256]"});
  check_error("[model]\nreg_tokens = -1\n", {}, {"model.reg_tokens = -1 is out of range [0, 1024]"});
  check_error("[training]\nmicro_batch_size = 0\n", {}, {"training.micro_batch_size = 0 is out of range [1, 1048576]"});
  check_error("[optimizer]\nbetas = [0.9, 1.0]\n", {}, {"optimizer.betas[1] = 1 is out of range [0, 1)"});
  check_error("[optimizer]\nbetas = [-0.1, 0.9]\n", {}, {"optimizer.betas[0] = -0.1 is out of range [0, 1)"});
  check_error("[optimizer]\nlr = nan\n", {}, {"optimizer.lr = nan is out of range (0, 10]"});
  check_error("[optimizer]\nlr = 0\n", {}, {"optimizer.lr = 0 is out of range (0, 10]"});
  check_error("[model]\ndrop_path_rate = 1.0\n", {}, {"model.drop_path_rate = 1 is out of range [0, 1)"});
  check_error("[data.transforms]\nscale = [1.0, 0.5]\n", {}, {"data.transforms.scale = [1.0, 0.5] must be ordered [min, max]"});
  check_error("[model]\nimg_size = [224, 0]\n", {}, {"model.img_size = [224, 0] is out of range [1, 8192]"});
  check_error("[model]\nglobal_pool = \"mean\"\n", {}, {"model.global_pool = \"mean\" is not one of: token, avg, map, none"});
  check_error("[model]\nweight_init = \"timm\"\n", {}, {"is not one of: \"\", jax, jax_nlhb, moco, skip"});
  check_error("[model]\nfc_norm = \"yes\"\n", {}, {"model.fc_norm = \"yes\" is not one of: auto, true, false"});
  check_error("[run]\nname = \"\"\n", {}, {"run.name must not be empty"});
  check_error("[training.checkpoint]\nresume_from_metric = \"val_loss\"\n", {},
              {"training.checkpoint.resume_from_metric = \"val_loss\" is not \"\" or +metric / -metric"});
  check_error("[training.checkpoint]\nresume_from_metric = \"-\"\n", {}, {"\"-val_loss\""});
}

TEST_CASE("config: malformed TOML, missing files and malformed overrides") {
  check_error("[model\ndepth = 3\n", {}, {"x.toml:1:", "malformed TOML"});
  check_error("[model]\ndepth = \n", {}, {"x.toml:2:", "malformed TOML"});
  check_error("[model]\ndepth = 3\ndepth = 4\n", {}, {"x.toml:3:", "malformed TOML"});
  CHECK(error_of([] { load_config("/nonexistent/x.toml", {}); }) ==
        "cannot open config '/nonexistent/x.toml': No such file or directory");
  CHECK(error_of([] { load_config(VIT_SOURCE_DIR "/configs", {}); }).find("Is a directory") != std::string::npos);
  check_error("", {"model.depth"}, {"override 'model.depth' needs the form key=value (e.g. model.depth=12)"});
  check_error("", {"optimizer.lr"}, {"override 'optimizer.lr' needs the form key=value (e.g. optimizer.lr=0.001)"});
  check_error("", {""}, {"override '' needs the form key=value"});
  check_error("", {"=3"}, {"override '=3' has no key"});
  check_error("", {"model.depth=abc"}, {"override 'model.depth=abc': model.depth expects an integer, got string \"abc\""});
  check_error("", {"model.depth=0"}, {"override 'model.depth=0': model.depth = 0 is out of range [1, 256]"});
  check_error("", {"data.classes=[a, b]"}, {"override 'data.classes=[a, b]': cannot parse the value", "need quotes"});
  check_error("", {"optimizer.betas=[0.9,"}, {"cannot parse the value [0.9, as TOML"});
  CHECK(error_of([] { parse("", {"optimizer.betas=[0.9,"}); }).find("need quotes") == std::string::npos);
  check_error("", {"model.qk_norm=yes"}, {"model.qk_norm expects a boolean, got string \"yes\""});
}

TEST_CASE("config: cross-field checks name the keys, their values and where they were set") {
  check_error("[model]\nembed_dim = 100\nnum_heads = 3\n", {},
              {"x.toml:3:1: model.embed_dim = 100 is not divisible by model.num_heads = 3 (e.g. model.num_heads = 2)"});
  check_error("", {"model.num_heads=5"}, {"override 'model.num_heads=5': model.embed_dim = 768 is not divisible by model.num_heads = 5"});
  check_error("[model]\nimg_size = 30\n", {}, {"model.img_size = 30 is not divisible by model.patch_size = 16", "model.img_size = 16"});
  check_error("[model]\nimg_size = [224, 200]\npatch_size = 16\n", {}, {"model.img_size = [224, 200] is not divisible", "e.g. model.img_size = [224, 192]"});
  check_error("[model]\npatch_size = 448\n", {}, {"is not divisible by model.patch_size = 448"});
  check_error("[model]\nclass_token = false\n", {}, {"model.global_pool = \"token\" needs model.class_token = true"});
  check_error("[training]\nsteps = 0\n", {}, {"training.steps and training.epochs are both 0"});
  check_error("[training]\nepochs = 3\n", {}, {"training.steps = 1000 and training.epochs = 3 are both set"});
  check_error("[scheduler]\nwarmup_steps = 2000\n", {}, {"scheduler.warmup_steps = 2000 exceeds training.steps = 1000"});
  check_error("[scheduler]\nmin_lr = 0.01\n", {}, {"scheduler.min_lr = 0.01 exceeds optimizer.lr = 0.001"});
  check_error("[data]\nformat = \"folder\"\n", {}, {"data.format = \"folder\" needs data.train_path"});
  // What timm accepts stays accepted: no class token with map / avg / none pooling, registers alone.
  for (const char* pool : {"avg", "map", "none"})
    CHECK(parse("[model]\nclass_token = false\nreg_tokens = 4\nglobal_pool = \"" + std::string(pool) + "\"\n").model.global_pool == pool);
  // dp_shard * dp_outer is checked against the world size at start-up, not here.
  CHECK(parse("", {"distributed.dp_shard=3", "distributed.dp_outer=5"}).distributed.dp_outer == 5);
}

TEST_CASE("config: every shipped config loads, and the reference recipe mirror has its values") {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(VIT_SOURCE_DIR "/configs")) {
    if (e.path().extension() != ".toml") continue;
    INFO("config: ", e.path().string());
    const std::string err = error_of([&] { load_config(e.path().string(), {}); });
    CHECK(err == "");
    if (err.empty()) {
      const Config c = load_config(e.path().string(), {});
      CHECK(parse_config(to_toml(c), "rt.toml", {}) == c);
    }
    ++n;
  }
  CHECK(n >= 8);
  const std::string dir = VIT_SOURCE_DIR "/configs/";
  const Config tiny = load_config(dir + "vit_tiny.toml", {});
  CHECK((tiny.model.embed_dim == 192 && tiny.model.depth == 12 && tiny.model.num_heads == 3));
  const Config small = load_config(dir + "vit_small.toml", {});
  CHECK((small.model.embed_dim == 384 && small.model.depth == 12 && small.model.num_heads == 6));
  const Config base = load_config(dir + "vit_base.toml", {});
  CHECK((base.model.embed_dim == 768 && base.model.depth == 12 && base.model.num_heads == 12));
  CHECK(base.training.micro_batch_size == 256);
  CHECK(base.training.label_smoothing == 0.1);
  const Config large = load_config(dir + "vit_large.toml", {});
  CHECK((large.model.embed_dim == 1024 && large.model.depth == 24 && large.model.num_heads == 16));
  const Config huge = load_config(dir + "vit_huge.toml", {});
  CHECK((huge.model.embed_dim == 1280 && huge.model.depth == 32 && huge.model.num_heads == 16 && huge.model.patch_size == 14));
  const Config fm = load_config(dir + "fmnist_cpu.toml", {});
  CHECK((fm.model.img_size[0] == 28 && fm.model.in_chans == 1 && fm.model.num_classes == 10));
  CHECK(fm.data.train_path == "runs/data/fmnist_train.vitpack");
  CHECK(fm.data.val_path == "runs/data/fmnist_test.vitpack");

  const Config r = load_config(dir + "vit_base_patch16_224.toml", {});
  CHECK(r.model.global_pool == "map");
  CHECK(r.model.reg_tokens == 8);
  CHECK((r.model.qk_norm && r.model.scale_attn_norm && r.model.scale_mlp_norm && r.model.pre_norm));
  CHECK((r.model.fc_norm == "true" && r.model.init_variance_rescale && r.model.drop_path_rate == 0.05));
  CHECK(r.optimizer.lr == 1e-4);
  CHECK(r.optimizer.betas == std::array<double, 2>{0.9, 0.98});
  CHECK((r.optimizer.eps == 1e-8 && r.optimizer.weight_decay == 0.01 && r.training.grad_clip == 1.0));
  CHECK(r.data.format == "tiny_imagenet");
  CHECK(r.data.class_map == "../shared/data/super-tiny-imagenet-5/words.txt");
  CHECK(r.training.checkpoint.resume_from_metric == "-val_loss");
  CHECK((r.training.steps == 500 && r.training.val_interval == 25 && r.run.seed == 42));
  // The recipe's command line works as overrides.
  const Config r8 = load_config(dir + "vit_base_patch16_224.toml", {"distributed.dp_shard=8", "training.checkpoint.path=./ckpts/vit"});
  CHECK((r8.distributed.dp_shard == 8 && r8.training.checkpoint.path == "./ckpts/vit"));
}

TEST_CASE("config: the schema's helpers") {
  CHECK(cs::edit_distance("embed_dim", "embed_dim") == 0);
  CHECK(cs::edit_distance("embed_dimm", "embed_dim") == 1);
  CHECK(cs::edit_distance("ebmed_dim", "embed_dim") == 1);  // a transposition is one edit
  CHECK(cs::edit_distance("", "abc") == 3);
  CHECK(cs::format_double(4) == "4.0");
  CHECK(cs::format_double(1e-8) == "1e-08");
  CHECK(cs::format_double(0.1) == "0.1");
  CHECK(cs::quote("a\"b\\c\n") == "\"a\\\"b\\\\c\\n\"");
  CHECK(cs::find_field("model.embed_dim") != nullptr);
  CHECK(cs::find_field("model") == nullptr);
  CHECK(cs::is_section("data.transforms"));
  const std::string ref = cs::reference();
  for (const auto& f : cs::fields()) CHECK(ref.find("\n" + f.leaf() + " = ") != std::string::npos);
  CHECK(ref.find("one of: token, avg, map, none") != std::string::npos);
}

TEST_CASE("cli: config path, overrides and flags") {
  auto a = parse_cli_args({"configs/x.toml", "model.depth=3", "--print-config", "run.device=cpu"}, "vit_train");
  CHECK(a.config_path == "configs/x.toml");
  CHECK(a.overrides == std::vector<std::string>{"model.depth=3", "run.device=cpu"});
  CHECK(a.print_config);
  CHECK(!a.help);
  CHECK(parse_cli_args({"--help"}, "vit_train").help);
  CHECK(parse_cli_args({"x.toml", "--bogus", "-h"}, "vit_train").help);  // help needs nothing else
  const char* argv[] = {"/path/to/vit_train", "c.toml", "optimizer.betas=[0.9,0.95]"};
  auto b = parse_cli_args(3, argv);
  CHECK(b.config_path == "c.toml");
  CHECK(b.overrides.size() == 1);
  CHECK(!b.print_config);

  CHECK(error_of([] { parse_cli_args({"x.toml", "--bogus"}, "vit_train"); }).find("unknown flag '--bogus'") != std::string::npos);
  CHECK(error_of([] { parse_cli_args({"x.toml", "--print-conifg"}, "vit_train"); }).find("did you mean '--print-config'?") != std::string::npos);
  CHECK(error_of([] { parse_cli_args({"x.toml", "--model.depth=3"}, "vit_train"); }).find("e.g. model.depth=3") != std::string::npos);
  CHECK(error_of([] { parse_cli_args({}, "vit_train"); }).find("missing config file (usage: vit_train CONFIG.toml") != std::string::npos);
  CHECK(error_of([] { parse_cli_args({"model.depth=3"}, "vit_train"); }).find("missing config file") != std::string::npos);
  CHECK(error_of([] { parse_cli_args({"a.toml", "b.toml"}, "vit_train"); }).find("unexpected argument 'b.toml'") != std::string::npos);
  // A key without '=' after the config goes on to the loader, which names the fix.
  CHECK(parse_cli_args({"a.toml", "model.depth"}, "vit_train").overrides == std::vector<std::string>{"model.depth"});
  CHECK(cli_usage("vit_train").find("--print-config") != std::string::npos);
}
