#include "engine/trainer.h"

#include <cstdarg>
#include <fstream>

namespace vit {

std::atomic<int>& stop_signal() {
  static std::atomic<int> flag{0};  // the one piece of process state a signal handler may touch
  return flag;
}

namespace {
extern "C" void on_stop_signal(int) { stop_signal().store(1); }
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

double train_flops_per_image(const ParamLayout& layout) {
  const ModelDims& d = layout.dims();
  double matrix_params = 0;
  for (const ParamSpec& p : layout.params())
    if (p.shape.size() >= 2 && p.name.find("token") == std::string::npos && p.name != "pos_embed" &&
        p.name.find("latent") == std::string::npos)
      matrix_params += (double)p.numel;
  return 6.0 * matrix_params * d.T + 12.0 * d.depth * (double)d.T * d.T * d.D;
}

void log0(int rank, const std::string& line) {
  if (rank != 0) return;
  std::fprintf(stdout, "%s\n", line.c_str());
  std::fflush(stdout);
}

std::string fmt(const char* f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

}  // namespace vit
