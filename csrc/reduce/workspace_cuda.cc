#include "reduce/workspace_cuda.h"

#include <algorithm>

#include "common/cuda_check.h"

namespace rr {

DeviceWorkspace::~DeviceWorkspace() {
  // Never throws: errors here have nowhere to go.
  if (!first_.ptr && !second_.ptr) return;
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);
  if (first_.ptr) cudaFree(first_.ptr);
  if (second_.ptr) cudaFree(second_.ptr);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

void* DeviceWorkspace::grow(Block& b, size_t bytes) {
  if (b.ptr && bytes <= b.bytes) return b.ptr;
  DeviceGuard g(device_);
  // Earlier collectives may still read the old block; all of them were
  // joined into this stream, so draining it suffices.
  if (b.ptr) {
    RR_CUDA_CHECK(cudaStreamSynchronize(stream_));
    RR_CUDA_CHECK(cudaFree(b.ptr));
    b.ptr = nullptr;
    b.bytes = 0;
  }
  const size_t want = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  void* p = nullptr;
  RR_CUDA_CHECK(cudaMalloc(&p, want));
  b.ptr = p;
  b.bytes = want;
  return p;
}

}  // namespace rr
