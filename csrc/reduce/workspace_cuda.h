// Device scratch memory on one GPU, used by work on one stream.
#pragma once

#include <cuda_runtime.h>

#include "common/cuda_check.h"
#include "reduce/workspace.h"

namespace rr {

class DeviceWorkspace : public Workspace {
 public:
  DeviceWorkspace(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~DeviceWorkspace() override {
    DeviceGuard::noThrow(device_, [&] {
      cudaStreamSynchronize(stream_);
      for (Block& b : blocks_)
        if (b.p) cudaFree(b.p);
    });
  }
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;
  void* get(size_t bytes) override { return grow(blocks_[0], bytes); }
  void* getSecond(size_t bytes) override { return grow(blocks_[1], bytes); }

 private:
  struct Block {
    void* p = nullptr;
    size_t bytes = 0;
  };
  void* grow(Block& b, size_t bytes) {
    if (b.p && bytes <= b.bytes) return b.p;
    DeviceGuard g(device_);
    // Earlier collectives may still read the old block: every use of it was
    // ordered on this stream, so draining the stream suffices.
    RR_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (b.p) RR_CUDA_CHECK(cudaFree(b.p));
    b.p = nullptr;
    b.bytes = 0;
    size_t want = ((bytes < 256 ? 256 : bytes) + 255) / 256 * 256;
    RR_CUDA_CHECK(cudaMalloc(&b.p, want));
    b.bytes = want;
    return b.p;
  }
  int device_;
  cudaStream_t stream_;
  Block blocks_[2];
};

}  // namespace rr
