// The data loader: worker threads load, decode and augment samples ahead of the trainer into a ring of
// batch buffers allocated once through a caller-provided allocator (pinned memory on the GPU backend).
//
// Batch layout: images (B, C, H, W) float, normalized; labels (B) int; valid (B) 0/1. Train batches are
// always full (valid = 1). Val batches cover every sample exactly once over all ranks and steps; padding
// slots (and val files that fail to decode) have valid = 0, label = -1 and zero images: consumers must
// weight by `valid` (a loss may treat label -1 as ignore).
//
// Determinism: batch contents are a pure function of (seed, epoch, step, rank, world, batch, config, files)
// whatever the number of worker threads. A bad file (unreadable, corrupt, truncated, not an image, too
// large) is skipped with a warning naming it, counted once, and (train) its slot gets the next usable
// sample of the epoch's permutation.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/sampler.h"
#include "data/transforms.h"
#include "engine/config.h"

namespace vit::data {

struct Batch {
  float* images;          // (size, C, H, W)
  int* labels;            // (size)
  unsigned char* valid;   // (size)
  int size;
  int64_t epoch;
  int64_t step;           // within the epoch
};

// The position of the next batch to be returned; saved in checkpoints for exact resume.
struct LoaderState {
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;
  bool operator==(const LoaderState&) const = default;
};

// Host memory for the batch ring. Default: page-aligned host memory.
struct Allocator {
  std::function<void*(size_t)> alloc;
  std::function<void(void*)> free;
};

class Loader {
 public:
  // `dc.num_workers` threads (0: batches are made on the calling thread inside next()), `dc.prefetch`
  // batches in the ring. `log` receives summaries (rank 0) and warnings (default: stderr).
  Loader(const DataConfig& dc, int in_chans, int img_h, int img_w, Split split, int rank, int world, int batch,
         uint64_t seed, Allocator a = {}, LogFn log = {});
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Blocks until the next batch is ready; the previous batch's memory is recycled. Rethrows a worker's
  // error (e.g. a dataset with no usable image).
  const Batch& next();

  int num_classes() const;
  int64_t dataset_size() const;
  int64_t steps_per_epoch() const;
  LoaderState state() const;               // position of the next batch to be returned
  void restore(const LoaderState& s);      // continue from `s` (exactly as if never interrupted)
  int64_t bad_files() const;               // distinct files skipped so far
  int64_t converted_files() const;         // distinct usable files that needed a conversion (CMYK, ...)
  const std::vector<std::string>& class_names() const;
  const Dataset& dataset() const { return *ds_; }

 private:
  struct Slot {
    std::unique_ptr<void, std::function<void(void*)>> mem;
    Batch batch{};
  };
  void start_workers();
  void stop_workers();
  void worker_main();
  int64_t produce_limit() const;  // batches with sequence number below this may be produced (mu_ held)
  void produce(int64_t q, int j, SampleScratch& ss, TransformScratch& ts);
  void mark_bad(int64_t idx, const std::string& why);
  void note_converted(int64_t idx, const std::string& note);
  void set_position(int64_t q, Batch& b) const;
  void log(const std::string& line) const;

  LogFn log_;
  mutable std::mutex log_mu_;
  std::unique_ptr<Dataset> ds_;
  Sampler sampler_;
  Transform tf_;
  Split split_;
  int batch_, channels_, workers_, prefetch_;
  uint64_t seed_;
  Allocator alloc_;

  std::vector<Slot> slots_;
  std::unique_ptr<std::atomic<uint8_t>[]> status_;  // per dataset index: bit 0 bad, bit 1 noted
  std::atomic<int64_t> bad_{0}, converted_{0};

  // Ring state. Batch q (a sequence number from the last restore) lives in slot q % prefetch.
  int64_t base_ = 0;        // global batch number (epoch × steps + step) of q = 0
  int64_t returned_ = 0;    // batches returned by next(); the last one is still in use by the caller
  int64_t released_ = 0;    // batches handed back: q < released_ + prefetch may be produced
  mutable std::mutex mu_;
  std::condition_variable work_cv_, ready_cv_;
  int64_t next_task_ = 0;           // next (q, j) to hand out, as q × batch + j
  std::vector<int> remaining_;      // per slot: samples still to produce
  std::vector<int64_t> ready_;      // per slot: q of the complete batch in it, -1 if none
  bool stop_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
  TransformScratch inline_ts_;
  SampleScratch inline_ss_;
};

}  // namespace vit::data
