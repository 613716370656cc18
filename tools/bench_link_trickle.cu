// Does NVLink activity itself cost a power-capped GPU its clock? (issue 5: on 2 GPUs the step is ~3% slower than
// the same GPUs training alone, the slower GPU's SM clock is ~3% lower at the same 683 W, and halving the bytes
// moved changes nothing: docs/benchmarks.md run 97.) This program runs beside independent one-GPU trainings
// (`gpu_suite.sh comm`, conditions F and G) and keeps every GPU pair's link busy with copy-engine copies only
// (cudaMemcpyPeerAsync, no kernel, no SM): `bytes` into every peer, then a host sleep of `period_us`, for
// `seconds` or until SIGTERM (then it prints what it moved). If the trainings' clock drops as in the 2-GPU job,
// the job's cost is the links' power, paid whatever the transport; if not, it is something else in the job.
// Answer (run 98): a 0.3 GB/s trickle costs as much as the job's full 5.5 GB/s, about 2.3% of the step.
// MODE host is the control: the same copies into every GPU from pinned host memory (copy engines over PCIe, no
// NVLink, no peer access), telling the links' cost from the copy engines' waking.
//   bench_link_trickle SECONDS BYTES PERIOD_US [peer|host]      (one process, every visible GPU)
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/check.h"
#include "engine/cuda_buffer.h"

namespace {

using namespace vit;

// Pinned host memory, freed on destruction.
class HostBuffer {
 public:
  explicit HostBuffer(size_t n) { CUDA_CHECK(cudaMallocHost(&p_, n)); }
  ~HostBuffer() { cudaFreeHost(p_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  char* get() const { return static_cast<char*>(p_); }

 private:
  void* p_ = nullptr;
};

// One GPU's side: a stream and a source buffer on it, a destination buffer per peer on the peer.
struct Gpu {
  int dev = 0;
  cudaStream_t stream = nullptr;
  gpu::DeviceBuffer<char> src, dst;  // dst: what the peers write into (one slot per peer)
  Gpu() = default;
  Gpu(const Gpu&) = delete;
  Gpu& operator=(const Gpu&) = delete;
  ~Gpu() {
    if (stream) {
      cudaSetDevice(dev);
      cudaStreamDestroy(stream);
    }
  }
};

long parse(const char* s, const char* what, long lo) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  VIT_REQUIRE(end != s && *end == 0 && v >= lo, what, " must be an integer >= ", lo, ", got '",
              s, "'");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    // SIGTERM (the suite's stop) is blocked, before the CUDA runtime starts its threads so that they inherit the
    // mask, and polled: the loop ends cleanly and reports.
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    VIT_REQUIRE(pthread_sigmask(SIG_BLOCK, &term, nullptr) == 0, "cannot block SIGTERM");
    VIT_REQUIRE(argc == 4 || argc == 5, "usage: bench_link_trickle SECONDS BYTES PERIOD_US [peer|host]");
    const long seconds = parse(argv[1], "SECONDS", 1), bytes = parse(argv[2], "BYTES", 1),
               period_us = parse(argv[3], "PERIOD_US", 0);
    const std::string mode = argc == 5 ? argv[4] : "peer";
    VIT_REQUIRE(mode == "peer" || mode == "host", "MODE must be peer or host, got '", mode, "'");
    const bool host = mode == "host";
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    VIT_REQUIRE(host || n >= 2, "needs >= 2 visible GPUs, found ", n);
    std::vector<std::unique_ptr<Gpu>> g;
    for (int d = 0; d < n; ++d) {
      auto x = std::make_unique<Gpu>();
      x->dev = d;
      CUDA_CHECK(cudaSetDevice(d));
      CUDA_CHECK(cudaStreamCreateWithFlags(&x->stream, cudaStreamNonBlocking));
      x->src = gpu::DeviceBuffer<char>((size_t)bytes);
      x->dst = gpu::DeviceBuffer<char>((size_t)bytes * std::max(1, n - 1));  // host mode: one slot
      CUDA_CHECK(cudaMemset(x->src.get(), d + 1, (size_t)bytes));
      for (int p = 0; p < n && !host; ++p) {
        if (p == d) continue;
        int ok = 0;
        CUDA_CHECK(cudaDeviceCanAccessPeer(&ok, d, p));
        VIT_REQUIRE(ok, "GPU ", d, " cannot access GPU ", p, " (no peer path)");
        CUDA_CHECK(cudaDeviceEnablePeerAccess(p, 0));
      }
      g.push_back(std::move(x));
    }
    HostBuffer from_host(host ? (size_t)bytes : 1);  // the control's source only
    if (host) std::memset(from_host.get(), 3, (size_t)bytes);
    auto stopped = [&] {
      sigset_t pending;
      return sigpending(&pending) == 0 && sigismember(&pending, SIGTERM) == 1;
    };
    const auto start = std::chrono::steady_clock::now();
    long rounds = 0;
    while (std::chrono::steady_clock::now() - start < std::chrono::seconds(seconds) && !stopped()) {
      for (int d = 0; d < n && host; ++d)  // the control: into every GPU's first slot from the host
        CUDA_CHECK(cudaMemcpyAsync(g[d]->dst.get(), from_host.get(), (size_t)bytes, cudaMemcpyHostToDevice, g[d]->stream));
      for (int d = 0; d < n && !host; ++d) {
        for (int p = 0; p < n; ++p) {
          if (p == d) continue;
          // GPU d writes into its slot of GPU p's destination, on d's copy engine.
          char* into = g[p]->dst.get() + (size_t)bytes * (d < p ? d : d - 1);
          CUDA_CHECK(cudaMemcpyPeerAsync(into, p, g[d]->src.get(), d, (size_t)bytes, g[d]->stream));
        }
      }
      for (auto& x : g) CUDA_CHECK(cudaStreamSynchronize(x->stream));
      ++rounds;
      if (period_us) std::this_thread::sleep_for(std::chrono::microseconds(period_us));
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("TRICKLE mode=%s gpus=%d bytes=%ld period_us=%ld rounds=%ld seconds=%.1f into_each_gpu_GB_s=%.2f\n",
                mode.c_str(), n, bytes, period_us, rounds, s, (double)rounds * bytes * (host ? 1 : n - 1) / s / 1e9);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_link_trickle: error: %s\n", e.what());
    return 1;
  }
}
