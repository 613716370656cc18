#include "data/loader.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine/check.h"

namespace vit::data {

namespace {

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

Allocator default_allocator() {
  return Allocator{[](size_t n) { return std::aligned_alloc(4096, round_up(n, 4096)); }, [](void* p) { std::free(p); }};
}

// The data pipeline's RNG seed, separate from the model's streams of the same run seed.
uint64_t data_seed(uint64_t seed) { return rng::mix64(seed ^ 0x646174612d6c6f61ULL); }

}  // namespace

Loader::Loader(const DataConfig& dc, int in_chans, int img_h, int img_w, Split split, int rank, int world, int batch,
               uint64_t seed, Allocator a, LogFn log_fn)
    : log_(log_fn ? std::move(log_fn) : LogFn([](const std::string& s) { std::fprintf(stderr, "data: %s\n", s.c_str()); })),
      ds_(make_dataset(dc, split, img_h, img_w, rank == 0 ? LogFn([this](const std::string& s) { this->log(s); }) : LogFn{})),
      sampler_(ds_->size(), rank, world, batch, split, data_seed(seed)),
      tf_(dc.transforms, split, in_chans, img_h, img_w),
      split_(split),
      batch_(batch),
      channels_(in_chans),
      workers_(std::max(0, dc.num_workers)),
      prefetch_(std::max(1, dc.prefetch)),
      seed_(data_seed(seed)),
      alloc_(a.alloc && a.free ? std::move(a) : default_allocator()) {
  const int64_t n = ds_->size();
  status_ = std::make_unique<std::atomic<uint8_t>[]>((size_t)n);
  // One allocation per ring slot: images, then labels, then validity flags.
  const size_t img_bytes = round_up((size_t)batch * tf_.sample_floats() * sizeof(float), 256);
  const size_t lab_bytes = round_up((size_t)batch * sizeof(int), 256);
  const size_t bytes = img_bytes + lab_bytes + (size_t)batch;
  slots_.resize(prefetch_);
  for (auto& s : slots_) {
    void* p = alloc_.alloc(bytes);
    VIT_REQUIRE(p, "cannot allocate ", bytes >> 20, " MiB for a batch buffer (data.prefetch = ", prefetch_,
                " buffers of batch ", batch, "): lower data.prefetch or the batch size");
    s.mem = std::unique_ptr<void, std::function<void(void*)>>(p, alloc_.free);
    auto* base = static_cast<unsigned char*>(p);
    s.batch = Batch{reinterpret_cast<float*>(base), reinterpret_cast<int*>(base + img_bytes), base + img_bytes + lab_bytes,
                    batch, 0, 0};
  }
  remaining_.assign(prefetch_, batch_);
  ready_.assign(prefetch_, -1);
  if (rank == 0) {
    const int64_t g = sampler_.global_batch(), spe = sampler_.steps_per_epoch();
    std::string policy = split == Split::train
                             ? (n % g ? detail::cat(", the last ", n % g, " images of each epoch's shuffle dropped") : "")
                             : (n % g ? detail::cat(", last step padded with ", spe * g - n, " invalid slots") : "");
    log(detail::cat(split == Split::train ? "train" : "val", " loader: ", n, " images, ", ds_->num_classes(),
                    " classes, ", world, " rank(s) x batch ", batch, " = ", g, " per step, ", spe, " steps/epoch",
                    policy, "; ", workers_, " worker(s), prefetch ", prefetch_));
  }
  start_workers();
}

Loader::~Loader() { stop_workers(); }

void Loader::log(const std::string& line) const {
  std::lock_guard lk(log_mu_);
  log_(line);
}

int Loader::num_classes() const { return ds_->num_classes(); }
int64_t Loader::dataset_size() const { return ds_->size(); }
int64_t Loader::steps_per_epoch() const { return sampler_.steps_per_epoch(); }
int64_t Loader::bad_files() const { return bad_.load(); }
int64_t Loader::converted_files() const { return converted_.load(); }
const std::vector<std::string>& Loader::class_names() const { return ds_->class_names(); }

LoaderState Loader::state() const {
  std::lock_guard lk(mu_);
  const int64_t g = base_ + returned_, spe = sampler_.steps_per_epoch();
  return LoaderState{g / spe, g % spe};
}

void Loader::restore(const LoaderState& s) {
  const int64_t spe = sampler_.steps_per_epoch();
  VIT_REQUIRE(s.epoch >= 0 && s.step_in_epoch >= 0 && s.step_in_epoch < spe, "data loader position (epoch ", s.epoch,
              ", step ", s.step_in_epoch, ") is outside this loader's ", spe,
              " steps per epoch: was it saved with another dataset, batch size or rank count?");
  stop_workers();
  base_ = s.epoch * spe + s.step_in_epoch;
  returned_ = released_ = next_task_ = 0;
  remaining_.assign(prefetch_, batch_);
  ready_.assign(prefetch_, -1);
  error_ = nullptr;
  stop_ = false;
  start_workers();
}

void Loader::start_workers() {
  for (int i = 0; i < workers_; ++i) threads_.emplace_back([this] { worker_main(); });
}

void Loader::stop_workers() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

int64_t Loader::produce_limit() const {
  int64_t lim = released_ + prefetch_;
  if (split_ == Split::val) {
    // Val stops at the end of the epoch being consumed: the next pass starts when it is asked for.
    const int64_t spe = sampler_.steps_per_epoch();
    const int64_t g = base_ + released_;
    lim = std::min(lim, (g / spe + 1) * spe - base_);
  }
  return lim;
}

void Loader::worker_main() {
  SampleScratch ss;
  TransformScratch ts;
  // Samples are handed out a few at a time (fewer lock round trips for small images), consecutive
  // within one batch; which thread makes which sample does not change any result.
  const int64_t chunk = std::max<int64_t>(1, batch_ / (4 * std::max(1, workers_)));
  for (;;) {
    int64_t t0, t1;
    {
      std::unique_lock lk(mu_);
      work_cv_.wait(lk, [&] { return stop_ || next_task_ / batch_ < produce_limit(); });
      if (stop_) return;
      t0 = next_task_;
      t1 = std::min((t0 / batch_ + 1) * batch_, t0 + chunk);
      next_task_ = t1;
    }
    const int64_t q = t0 / batch_;
    try {
      for (int64_t t = t0; t < t1; ++t) produce(q, (int)(t % batch_), ss, ts);
    } catch (...) {
      std::lock_guard lk(mu_);
      if (!error_) error_ = std::current_exception();
      stop_ = true;
      work_cv_.notify_all();
      ready_cv_.notify_all();
      return;
    }
    std::lock_guard lk(mu_);
    const size_t s = (size_t)(q % prefetch_);
    remaining_[s] -= (int)(t1 - t0);
    if (remaining_[s] == 0) {
      ready_[s] = q;
      ready_cv_.notify_all();
    }
  }
}

void Loader::set_position(int64_t q, Batch& b) const {
  const int64_t g = base_ + q, spe = sampler_.steps_per_epoch();
  b.epoch = g / spe;
  b.step = g % spe;
  b.size = batch_;
}

const Batch& Loader::next() {
  if (workers_ == 0) {
    const int64_t q = returned_;
    Slot& s = slots_[(size_t)(q % prefetch_)];
    for (int j = 0; j < batch_; ++j) produce(q, j, inline_ss_, inline_ts_);
    set_position(q, s.batch);
    std::lock_guard lk(mu_);
    ++returned_;
    return s.batch;
  }
  std::unique_lock lk(mu_);
  if (returned_ > released_) {
    // Hand the caller's previous batch back: its slot may now take batch returned_ - 1 + prefetch.
    const size_t s = (size_t)((returned_ - 1) % prefetch_);
    remaining_[s] = batch_;
    ready_[s] = -1;
    released_ = returned_;
    work_cv_.notify_all();
  }
  const int64_t q = returned_;
  const size_t s = (size_t)(q % prefetch_);
  ready_cv_.wait(lk, [&] { return error_ || ready_[s] == q; });
  if (error_) std::rethrow_exception(error_);
  set_position(q, slots_[s].batch);
  ++returned_;
  return slots_[s].batch;
}

void Loader::mark_bad(int64_t idx, const std::string& why) {
  if (status_[idx].fetch_or(1) & 1) return;  // already known and reported
  const int64_t nb = ++bad_;
  log(detail::cat("warning: skipping ", ds_->describe(idx), ": ", why, " (", nb, " bad file(s) so far)"));
  VIT_REQUIRE(nb < ds_->size(), "no usable image in ", ds_->summary(), ": all ", ds_->size(),
              " files failed to load (see the warnings above)");
}

void Loader::note_converted(int64_t idx, const std::string& note) {
  if (status_[idx].fetch_or(2) & 2) return;
  ++converted_;
  log(detail::cat("note: ", ds_->describe(idx), ": ", note));
}

void Loader::produce(int64_t q, int j, SampleScratch& ss, TransformScratch& ts) {
  const int64_t g = base_ + q, spe = sampler_.steps_per_epoch();
  const int64_t epoch = g / spe, step = g % spe;
  const Batch& b = slots_[(size_t)(q % prefetch_)].batch;
  float* img = b.images + (size_t)j * tf_.sample_floats();
  const int64_t n = ds_->size();
  const int64_t pos = sampler_.position(step, j);
  ImageView view;
  std::string why, note;
  auto fill = [&](int64_t idx, int64_t hop) {
    if (!note.empty()) note_converted(idx, note);
    tf_.apply(view, SampleRng(seed_, epoch, idx, hop), img, ts);
    b.labels[j] = ds_->label(idx);
    b.valid[j] = 1;
  };
  if (split_ == Split::val) {
    if (pos < n && !(status_[pos].load() & 1)) {
      if (ds_->load(pos, channels_, ss, view, why, note)) return fill(pos, 0);
      mark_bad(pos, why);
    }
    std::fill_n(img, tf_.sample_floats(), 0.0f);
    b.labels[j] = -1;
    b.valid[j] = 0;
    return;
  }
  // Train: a bad file's slot takes the next usable sample of the permutation (with its own draws).
  for (int64_t hop = 0; hop < n; ++hop) {
    const int64_t idx = sampler_.at(epoch, (pos + hop) % n);
    if (status_[idx].load() & 1) continue;
    if (ds_->load(idx, channels_, ss, view, why, note)) return fill(idx, hop);
    mark_bad(idx, why);
  }
  fail("no usable image in ", ds_->summary(), " (see the warnings above)");
}

}  // namespace vit::data
