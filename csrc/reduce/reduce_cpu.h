// Host reductions: plain loops the compiler vectorises, over the traits and
// functors of common/numerics.h (which also holds the half and bfloat16
// conversions the tests call).
#pragma once

#include "common/numerics.h"
#include "reduce/reducer.h"

namespace rr {

class CpuReducer : public Reducer {
 public:
  CpuReducer() = default;
  ~CpuReducer() override = default;
  CpuReducer(const CpuReducer&) = delete;
  CpuReducer& operator=(const CpuReducer&) = delete;

  void reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
              ReduceOp op) override;
  void finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  bool anyNonFinite(const void* data, int64_t count, DType dtype) override;
};

}  // namespace rr
