// Device reductions: one grid-stride kernel per (dtype, op), 16-byte vector
// loads with a scalar tail, all work on the stream the engine hands in.
// float16 and bfloat16 are combined in float and rounded to nearest-even,
// and integer sums and products wrap, so results match CpuReducer.
#pragma once

#include <cuda_runtime.h>

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
  void* scratch(size_t bytes) override;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  int gridFor(int64_t units) const;

  int device_;
  cudaStream_t stream_;
  int maxBlocks_ = 1;
  void* scratch_ = nullptr;
  size_t scratchBytes_ = 0;
  int* flagDev_ = nullptr;   // anyNonFinite's answer on the device
  int* flagHost_ = nullptr;  // and its pinned copy
};

}  // namespace rr
