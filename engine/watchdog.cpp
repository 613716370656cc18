#include "engine/watchdog.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace vit {

Watchdog::Watchdog(double timeout_s, int rank) : timeout_s_(timeout_s), rank_(rank) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::beat(std::string what) {
  std::lock_guard<std::mutex> g(mu_);
  what_ = std::move(what);
  last_ = std::chrono::steady_clock::now();
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, std::chrono::milliseconds(500));
    if (stop_) break;
    const double idle = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_).count();
    if (idle > timeout_s_) {
      std::fprintf(stderr,
                   "vit_train: error: rank %d made no progress for %.0f s during \"%s\": another rank died or a "
                   "collective stalled; ending the job (raise distributed.timeout_s if steps are legitimately that slow)\n",
                   rank_, idle, what_.c_str());
      std::fflush(stderr);
      std::_Exit(3);  // the main thread is stuck in a collective: no clean shutdown is possible
    }
  }
}

void maybe_inject_fault(int rank, int64_t step, const char* where) {
  const char* f = std::getenv("VIT_TEST_FAULT");
  if (!f || !*f) return;
  char kind[16] = {};
  int r = -1;
  long long s = -1;
  if (std::sscanf(f, "%15[a-z]:%d:%lld", kind, &r, &s) != 3 || r != rank || s != step) return;
  const bool in_ckpt = std::strcmp(where, "checkpoint") == 0;
  if ((std::strcmp(kind, "ckptcrash") == 0) != in_ckpt) return;
  if (in_ckpt) {
    std::fprintf(stderr, "rank %d: VIT_TEST_FAULT: dying inside the checkpoint of step %lld\n", rank, s);
    std::_Exit(9);
  }
  if (std::strcmp(kind, "exit") == 0) {
    std::fprintf(stderr, "rank %d: VIT_TEST_FAULT: exiting at step %lld\n", rank, s);
    std::_Exit(9);
  }
  if (std::strcmp(kind, "stall") == 0) {
    std::fprintf(stderr, "rank %d: VIT_TEST_FAULT: stalling at step %lld\n", rank, s);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

}  // namespace vit
