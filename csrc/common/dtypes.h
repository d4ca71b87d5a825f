// Element types and reduction operators shared by every layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rr {

enum class DType : int {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat64 = 3,
  kInt8 = 4,
  kUInt8 = 5,
  kInt32 = 6,
  kInt64 = 7,
};
constexpr int kNumDTypes = 8;

enum class ReduceOp : int { kSum = 0, kProd = 1, kMin = 2, kMax = 3, kAvg = 4 };
constexpr int kNumOps = 5;

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64: return 8;
    case DType::kInt8:
    case DType::kUInt8: return 1;
  }
  return 0;
}

inline const char* dtypeName(DType t) {
  static const char* names[] = {"float16", "bfloat16", "float32", "float64",
                                "int8",    "uint8",    "int32",   "int64"};
  return names[static_cast<int>(t)];
}

inline const char* opName(ReduceOp op) {
  static const char* names[] = {"sum", "prod", "min", "max", "avg"};
  return names[static_cast<int>(op)];
}

}  // namespace rr
