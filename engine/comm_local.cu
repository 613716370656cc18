#include "engine/comm_local.h"

#include <algorithm>

#include "engine/cuda_check.h"
#include "engine/cuda_driver.h"
#include "kernels/types.h"

namespace vit {

namespace {

struct Pieces {
  const void* p[kMaxLocalRanks];
  int n;
};
template <class T, class Acc>
__global__ void sum_pieces_in_order(T* out, Pieces in, size_t count) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
    Acc s = (Acc)static_cast<const T*>(in.p[0])[i];
    for (int r = 1; r < in.n; ++r) s += (Acc)static_cast<const T*>(in.p[r])[i];
    out[i] = (T)s;
  }
}

}  // namespace

StreamFlags::StreamFlags(const std::string& transport) {
  const std::string fix = "distributed.transport = \"" + transport + "\" needs it: update the driver or use \"nccl\"";
  write_ = reinterpret_cast<Op>(driver_entry_point("cuStreamWriteValue32", fix.c_str()));
  wait_ = reinterpret_cast<Op>(driver_entry_point("cuStreamWaitValue32", fix.c_str()));
}

void StreamFlags::write(cudaStream_t s, CUdeviceptr flag, uint32_t value) const {
  // Default flags: the driver fences the stream's earlier writes (copies) before the flag's.
  CU_CHECK(write_((CUstream)s, flag, value, CU_STREAM_WRITE_VALUE_DEFAULT));
}

void StreamFlags::wait_geq(cudaStream_t s, CUdeviceptr flag, uint32_t value) const {
  CU_CHECK(wait_((CUstream)s, flag, value, CU_STREAM_WAIT_VALUE_GEQ));
}

void sum_in_order(cudaStream_t s, void* out, const void* const* in, int n, size_t count, DType t) {
  VIT_ASSERT(n >= 1 && n <= kMaxLocalRanks, "sum of ", n, " pieces");
  Pieces p{};
  p.n = n;
  std::copy(in, in + n, p.p);
  const int blocks = (int)std::min<size_t>((count + 255) / 256, 1024);
  switch (t) {
    case DType::f32: sum_pieces_in_order<float, float><<<blocks, 256, 0, s>>>(static_cast<float*>(out), p, count); break;
    case DType::f64: sum_pieces_in_order<double, double><<<blocks, 256, 0, s>>>(static_cast<double*>(out), p, count); break;
    case DType::bf16: sum_pieces_in_order<bf16, float><<<blocks, 256, 0, s>>>(static_cast<bf16*>(out), p, count); break;
    case DType::i32: sum_pieces_in_order<int, int><<<blocks, 256, 0, s>>>(static_cast<int*>(out), p, count); break;
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace vit
