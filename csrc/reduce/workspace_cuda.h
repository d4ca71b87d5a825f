// Device scratch memory on one GPU: two independent cudaMalloc blocks, grown
// on demand and kept across collectives. Work that reads a block is queued on
// `stream` (engines join every use of scratch into it), so draining that
// stream before a block is freed is what keeps a running kernel from reading
// freed memory.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "reduce/workspace.h"

namespace rr {

class DeviceWorkspace : public Workspace {
 public:
  static constexpr size_t kAlign = 256;  // cudaMalloc gives at least this

  // `stream` belongs to `device` and outlives the workspace.
  DeviceWorkspace(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~DeviceWorkspace() override;
  DeviceWorkspace(const DeviceWorkspace&) = delete;
  DeviceWorkspace& operator=(const DeviceWorkspace&) = delete;

  void* get(size_t bytes) override { return grow(first_, bytes); }
  void* getSecond(size_t bytes) override { return grow(second_, bytes); }
  size_t capacity() const { return first_.bytes; }
  size_t secondCapacity() const { return second_.bytes; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

 private:
  struct Block {
    void* ptr = nullptr;
    size_t bytes = 0;
  };

  void* grow(Block& b, size_t bytes);

  int device_;
  cudaStream_t stream_;
  Block first_;
  Block second_;
};

}  // namespace rr
