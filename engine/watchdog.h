// Bounded failure instead of a silent hang: every rank beats a watchdog as it makes progress; if a rank sees
// no progress for distributed.timeout_s (a peer died, a collective stalled), it prints one line naming
// itself and what it was doing, and exits non-zero, which makes mpirun end the whole job.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace vit {

class Watchdog {
 public:
  // timeout_s <= 0 disables it.
  Watchdog(double timeout_s, int rank);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Progress: `what` says what this rank does next (e.g. "step 12: forward/backward and gradient reduce-scatter").
  void beat(std::string what);

 private:
  void run();
  const double timeout_s_;
  const int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string what_ = "start-up";
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  bool stop_ = false;
  std::thread thread_;
};

// Test hook for the fault tests (tests/cli/faults.sh, tests/cli/train_resume.sh): VIT_TEST_FAULT=
// "stall:RANK:STEP" makes that rank hang at that step, "exit:RANK:STEP" makes it die there, and
// "ckptcrash:RANK:STEP" kills it inside the checkpoint of that step, after its file is written and before
// the commit. `where` is "step" or "checkpoint". No effect when the variable is unset.
void maybe_inject_fault(int rank, int64_t step, const char* where = "step");

}  // namespace vit
