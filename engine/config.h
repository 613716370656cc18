// The run's configuration: TOML file (toml++) + dotted command-line overrides, checked against one
// schema (types, ranges, allowed values; unknown keys name the closest valid key), resolved into these
// structs. Defaults here are the schema's defaults.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace vit {

struct RunConfig {
  std::string device = "auto";   // auto | cuda | cpu
  int64_t seed = 0;
  std::string output_dir = "runs/default";
  std::string name = "vit";
  bool operator==(const RunConfig&) const = default;
};

struct ModelConfig {
  std::array<int, 2> img_size{224, 224};  // TOML: an int (square) or [H, W]
  int patch_size = 16;
  int in_chans = 3;
  int num_classes = 1000;
  std::string global_pool = "token";      // token | avg | map | none
  int embed_dim = 768;
  int depth = 12;
  int num_heads = 12;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  bool qk_norm = false;
  bool scale_attn_norm = false;
  bool scale_mlp_norm = false;
  bool proj_bias = true;
  double init_values = 0.0;               // layer scale; 0 = off (timm's None)
  bool class_token = true;
  int reg_tokens = 0;
  std::string pos_embed = "learn";        // learn | none
  bool no_embed_class = false;
  bool pre_norm = false;
  bool final_norm = true;
  std::string fc_norm = "auto";           // auto (timm's None: on iff global_pool == avg) | true | false
  double drop_rate = 0.0;
  double pos_drop_rate = 0.0;
  double patch_drop_rate = 0.0;
  double proj_drop_rate = 0.0;
  double attn_drop_rate = 0.0;
  double drop_path_rate = 0.0;
  std::string weight_init = "";           // "" | jax | jax_nlhb | moco | skip
  bool init_variance_rescale = false;
  std::string act = "gelu";               // gelu | gelu_tanh
  std::string init_from = "";             // safetensors file in timm naming ("" = random init)
  bool operator==(const ModelConfig&) const = default;
};

struct TransformConfig {
  std::array<double, 2> scale{0.08, 1.0};             // RandomResizedCrop
  std::array<double, 2> ratio{3.0 / 4.0, 4.0 / 3.0};
  std::string interpolation = "bicubic";              // bilinear | bicubic
  double hflip = 0.5;
  double vflip = 0.0;
  double color_jitter = 0.0;                          // brightness = contrast = saturation strength
  double random_erasing = 0.0;                        // probability
  std::array<double, 3> mean{0.485, 0.456, 0.406};
  std::array<double, 3> std{0.229, 0.224, 0.225};
  double crop_pct = 0.875;                            // eval: resize to img/crop_pct then center crop
  bool operator==(const TransformConfig&) const = default;
};

struct DataConfig {
  std::string format = "synthetic";  // synthetic | folder | tiny_imagenet | packed
  std::string train_path = "";
  std::string val_path = "";
  std::string class_map = "";        // words.txt / wnids.txt style file ("" = classes from the folders)
  std::vector<std::string> classes;  // class filter (empty = all)
  bool convert_odd_images = false;   // decode CMYK JPEG / 16-bit PNG / misnamed files instead of skipping
  int num_workers = 4;
  int prefetch = 4;                  // batches decoded ahead
  int synthetic_samples = 2048;      // synthetic: images per epoch
  int synthetic_classes = 10;        // synthetic: number of classes (labels 0..K-1)
  int synthetic_val_samples = 512;   // synthetic: images in the val split
  TransformConfig transforms;
  bool operator==(const DataConfig&) const = default;
};

struct CheckpointConfig {
  std::string path = "";             // "" = no checkpoints
  int64_t interval = 0;              // steps between checkpoints (0 = only at the end)
  int keep_last = 3;                 // committed checkpoints kept (0 = keep all)
  std::string resume_from_metric = "";  // "" = newest; "+val_top1" highest, "-val_loss" lowest
  bool resume = true;                // auto-resume from path if a committed checkpoint exists
  bool operator==(const CheckpointConfig&) const = default;
};

struct TrainingConfig {
  int micro_batch_size = 256;        // per rank, per micro-step
  int grad_accum = 1;
  int64_t steps = 1000;              // optimizer steps (0 = use epochs)
  int64_t epochs = 0;
  int64_t val_interval = 0;          // 0 = only at the end
  int64_t log_interval = 10;
  double label_smoothing = 0.0;
  double grad_clip = 1.0;            // max global norm; 0 = off
  int64_t stop_after_steps = 0;      // checkpoint and exit after this many steps of this run (0 = off)
  CheckpointConfig checkpoint;
  bool operator==(const TrainingConfig&) const = default;
};

struct OptimizerConfig {
  double lr = 1e-3;
  std::array<double, 2> betas{0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.05;
  bool operator==(const OptimizerConfig&) const = default;
};

struct SchedulerConfig {
  std::string name = "cosine";       // cosine | linear | constant
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  bool operator==(const SchedulerConfig&) const = default;
};

struct DistributedConfig {
  std::string strategy = "optim_grads_params";  // no_shard | optim | optim_grads | optim_grads_params
  int dp_shard = 0;                              // 0 = all ranks
  int dp_outer = 1;
  std::string outer_strategy = "replicate";      // replicate | shard (optimizer state over outer groups)
  std::string grad_reduce_dtype = "fp32";        // fp32 | bf16
  bool reshard_after_forward = true;             // ZeRO-3: false keeps every gathered unit from forward to backward
  int comm_burst = 1;                            // units whose all-gathers / reduce-scatters are issued together
  double timeout_s = 600;                        // a stalled collective ends the job after this long
  std::string transport = "auto";                // auto | nccl | copy_engine | host_memory (engine/comm_ce.h: shard_group_comm)
  bool operator==(const DistributedConfig&) const = default;
};

struct LoggingConfig {
  std::string metrics_file = "metrics.jsonl";    // relative to run.output_dir
  double peak_tflops = 790.0;                    // for MFU
  bool operator==(const LoggingConfig&) const = default;
};

struct Config {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainingConfig training;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  DistributedConfig distributed;
  LoggingConfig logging;
  bool operator==(const Config&) const = default;
};

// Loads `path` (TOML), applies `overrides` ("a.b.c=value", value parsed as a TOML value, bare words as
// strings), checks everything, returns the resolved config. Throws vit::Error with one line naming the
// file / key / value and the fix.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);
// Same, from TOML text (tests); `origin` names the source in messages.
Config parse_config(const std::string& toml_text, const std::string& origin, const std::vector<std::string>& overrides);
// The resolved config as TOML (printed at start, stored in checkpoints' meta.toml).
std::string to_toml(const Config& c);
// Stable hash of the resolved config (ranks compare it before any work).
uint64_t config_hash(const Config& c);

}  // namespace vit
