// Host reductions: plain loops the compiler vectorises. float16 and bfloat16
// are widened to float, combined, and rounded back to nearest-even.
#pragma once

#include <cstdlib>

#include "reduce/reducer.h"

namespace rr {

class CpuReducer : public Reducer {
 public:
  CpuReducer() = default;
  ~CpuReducer() override;
  CpuReducer(const CpuReducer&) = delete;
  CpuReducer& operator=(const CpuReducer&) = delete;

  void reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
              ReduceOp op) override;
  void finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  bool anyNonFinite(const void* data, int64_t count, DType dtype) override;
  void* scratch(size_t bytes) override;

 private:
  void* scratch_ = nullptr;
  size_t scratchBytes_ = 0;
};

// Exposed for tests: conversions used by the half-precision loops.
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);
float bf16ToFloat(uint16_t h);
uint16_t floatToBf16(float f);

}  // namespace rr
