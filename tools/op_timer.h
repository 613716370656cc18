// Times every tape node of a training step on the compute stream, summed by the node's kind within each phase of
// the step (bench_train --ops): which kinds of op a multi-GPU step's extra time lands on. An event goes on the
// stream before every node and at every StepPhase; the time between two events is the earlier one's. Unit nodes
// are FSDP's boundaries (waits for gathers and reduce-scatters, zeroing the gradient slot), so exposed
// communication shows there. The step is synchronised at its end so the events can be reused: rates measured
// with --ops are not comparable with rates measured without.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/cuda_check.h"
#include "engine/train_step.h"
#include "tools/bench_util.h"

namespace vit::bench {

class OpTimer {
 public:
  explicit OpTimer(cudaStream_t stream) : stream_(stream) {}

  void begin_step() {
    n_ = 0;
    phase_ = 0;
    mark("(other)");
  }
  void node(const char* kind) { mark(kind); }
  void phase(StepPhase p) {
    phase_ = std::min((int)p + 1, kPhases - 1);  // forward_done starts backward, and so on
    mark("(other)");
  }
  // After the step's last phase: wait for it and add its intervals.
  void end_step() {
    CUDA_CHECK(cudaEventSynchronize(ev_[n_ - 1].get()));
    for (size_t i = 0; i + 1 < n_; ++i) {
      float ms = 0;
      CUDA_CHECK(cudaEventElapsedTime(&ms, ev_[i].get(), ev_[i + 1].get()));
      auto& [sum, count] = totals_[phase_of_[i]][kind_[i]];
      sum += ms;
      ++count;
    }
    ++steps_;
  }
  // OPS lines, one per phase: each kind's ms per step (and nodes per step), largest first.
  void report(int rank, int world) const {
    static constexpr const char* kNames[kPhases] = {"forward", "backward", "reduction_tail", "optimizer", "after"};
    for (int p = 0; p + 1 < kPhases; ++p) {
      std::vector<std::pair<std::string, std::pair<double, long>>> v(totals_[p].begin(), totals_[p].end());
      std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
      double all = 0;
      for (const auto& [k, t] : v) all += t.first;
      std::printf("OPS rank=%d/%d %s %.2f ms per step:", rank, world, kNames[p], all / steps_);
      for (const auto& [k, t] : v) std::printf(" %s %.3f (%ld)", k.c_str(), t.first / steps_, t.second / steps_);
      std::printf("\n");
    }
  }

 private:
  static constexpr int kPhases = 5;
  void mark(const char* kind) {
    if (n_ == ev_.size()) {
      ev_.emplace_back();
      kind_.emplace_back();
      phase_of_.emplace_back();
    }
    CUDA_CHECK(cudaEventRecord(ev_[n_].get(), stream_));
    kind_[n_] = kind;
    phase_of_[n_] = phase_;
    ++n_;
  }

  cudaStream_t stream_;
  std::vector<Event> ev_;
  std::vector<std::string> kind_;
  std::vector<int> phase_of_;
  size_t n_ = 0;
  int phase_ = 0;
  long steps_ = 0;
  std::map<std::string, std::pair<double, long>> totals_[kPhases];
};

}  // namespace vit::bench
