// Element types, reduction operators and collectives: the one list of each.
// bindings.cc exports these enums to Python; nothing copies their codes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace rr {

// Codes 0-7 are the original set; later codes were appended so that saved
// benchmark records keep their meaning.
enum class DType : int {
  kFloat16 = 0,
  kBFloat16 = 1,
  kFloat32 = 2,
  kFloat64 = 3,
  kInt8 = 4,
  kUInt8 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 8,
  kInt16 = 9,
  kUInt16 = 10,
  kUInt32 = 11,
  kUInt64 = 12,
  // float8 travels as bytes only: all-gather, broadcast, all-to-all, send/recv,
  // gather/scatter. Reductions refuse it (no rank-independent rounding rule).
  kFloat8E4M3 = 13,
  kFloat8E5M2 = 14,
};
constexpr int kNumDTypes = 15;

enum class ReduceOp : int {
  kSum = 0,
  kProd = 1,
  kMin = 2,
  kMax = 3,
  kAvg = 4,
  kBand = 5,  // bitwise and: integer and bool dtypes only
  kBor = 6,
  kBxor = 7,
};
constexpr int kNumOps = 8;

enum class Coll : int {
  kAllreduce = 0,
  kReduceScatter = 1,
  kAllgather = 2,
  kBroadcast = 3,
  kBarrier = 4,
  kReduce = 5,
  kGather = 6,
  kScatter = 7,
  kAllToAll = 8,
  kSend = 9,
  kRecv = 10,
  // Internal: byte exchanges made while setting up engines (IPC handles).
  kBootstrap = 11,
};
constexpr int kNumColls = 12;

inline bool validDType(int code) { return code >= 0 && code < kNumDTypes; }
inline bool validOp(int code) { return code >= 0 && code < kNumOps; }
inline bool validColl(int code) { return code >= 0 && code < kNumColls; }

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kUInt16: return 2;
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUInt64: return 8;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool:
    case DType::kFloat8E4M3:
    case DType::kFloat8E5M2: return 1;
  }
  return 0;
}

inline bool isFloating(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat32 ||
         t == DType::kFloat64 || t == DType::kFloat8E4M3 || t == DType::kFloat8E5M2;
}

// float8 is moved, never reduced.
inline bool isReducible(DType t) { return t != DType::kFloat8E4M3 && t != DType::kFloat8E5M2; }

inline bool isBitwise(ReduceOp op) {
  return op == ReduceOp::kBand || op == ReduceOp::kBor || op == ReduceOp::kBxor;
}

inline const char* dtypeName(DType t) {
  static const char* names[kNumDTypes] = {
      "float16", "bfloat16", "float32", "float64", "int8",   "uint8",         "int32",
      "int64",   "bool",     "int16",   "uint16",  "uint32", "uint64",        "float8_e4m3fn",
      "float8_e5m2"};
  int i = static_cast<int>(t);
  return i >= 0 && i < kNumDTypes ? names[i] : "?";
}

inline const char* opName(ReduceOp op) {
  static const char* names[kNumOps] = {"sum", "prod", "min", "max", "avg", "band", "bor", "bxor"};
  int i = static_cast<int>(op);
  return i >= 0 && i < kNumOps ? names[i] : "?";
}

inline const char* collName(Coll c) {
  static const char* names[kNumColls] = {"allreduce", "reduce_scatter", "allgather", "broadcast",
                                         "barrier",   "reduce",         "gather",    "scatter",
                                         "all_to_all", "send",          "recv",      "bootstrap"};
  int i = static_cast<int>(c);
  return i >= 0 && i < kNumColls ? names[i] : "?";
}

// Whether `op` applies to `t`; empty when it does, else why not (the same
// text on every rank). Bitwise ops take integers and bool; avg takes numbers
// (bool has no average); float8 takes no reduction at all.
inline std::string opRefusal(DType t, ReduceOp op) {
  if (!isReducible(t))
    return std::string(dtypeName(t)) + " is moved as bytes only; it cannot be reduced";
  if (isBitwise(op) && isFloating(t))
    return std::string("op ") + opName(op) + " needs an integer or bool dtype, got " + dtypeName(t);
  if (op == ReduceOp::kAvg && t == DType::kBool) return "op avg is not defined for bool";
  return std::string();
}

}  // namespace rr
