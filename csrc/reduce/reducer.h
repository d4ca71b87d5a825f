// Where the ring's arithmetic happens. A reducer combines elements where the
// data lives (host loops or device kernels) and knows nothing of transports.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/dtypes.h"

namespace rr {

class Reducer {
 public:
  virtual ~Reducer() = default;
  // dst[i] = a[i] op b[i] for i < count elements. dst may alias a or b.
  // kAvg reduces as a sum here; finalize() divides.
  virtual void reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                      ReduceOp op) = 0;
  // Last touch of a fully reduced span: divides by worldSize for kAvg.
  virtual void finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  // True when any of `count` floating-point elements is NaN or infinite.
  virtual bool anyNonFinite(const void* data, int64_t count, DType dtype) = 0;
};

}  // namespace rr
