// Device reductions: one streaming kernel per (dtype, op) over the traits and
// functors of common/numerics.h, so results match CpuReducer bit for bit.
// All work goes on the stream the engine hands in.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "reduce/reducer.h"

namespace rr {

class CudaReducer : public Reducer {
 public:
  // `stream` belongs to `device` and outlives the reducer.
  CudaReducer(int device, cudaStream_t stream);
  ~CudaReducer() override;
  CudaReducer(const CudaReducer&) = delete;
  CudaReducer& operator=(const CudaReducer&) = delete;

  void reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
              ReduceOp op) override;
  void finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) override;
  // Device-to-device (or any direction cudaMemcpyDefault allows), on the stream.
  void copy(void* dst, const void* src, size_t bytes) override;
  // Blocks the host: the answer is needed before any data moves.
  bool anyNonFinite(const void* data, int64_t count, DType dtype) override;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  int gridFor(int64_t threadsWanted) const;

  int device_;
  cudaStream_t stream_;
  int maxBlocks_ = 1;
  int* flagDev_ = nullptr;   // anyNonFinite's answer on the device
  int* flagHost_ = nullptr;  // and its pinned copy
};

// Test hook (blocks the host): how many inputs the device's conversions map
// to other bits than the host's bit tricks (numerics.h), over every input:
// {float->float16 (2^32), float->bfloat16 (2^32), float16->float (2^16;
// any NaN matches any NaN)}. All three are 0 when host and device agree.
std::array<uint64_t, 3> deviceConversionMismatches(int device);

}  // namespace rr
