// The one place that turns run-time dtype and op codes into compile-time
// traits and functors (numerics.h). Reducers write one generic lambda:
//
//   dispatchReduction(dtype, op, [&](auto tr, auto fn) {
//     using S = typename decltype(tr)::Storage;
//     loop<decltype(tr)>(static_cast<S*>(dst), static_cast<const S*>(a), ..., fn);
//   });
//
// Codes outside the enums, and combinations opRefusal() rejects, throw
// rr::ArgumentError (ValueError in Python) before any lambda runs.
#pragma once

#include <string>
#include <type_traits>

#include "common/dtypes.h"
#include "common/errors.h"
#include "common/numerics.h"

namespace rr {

[[noreturn]] inline void throwUnknownDType(DType t) {
  throw ArgumentError("unknown dtype code " + std::to_string(static_cast<int>(t)));
}
[[noreturn]] inline void throwUnknownOp(ReduceOp op) {
  throw ArgumentError("unknown reduce op code " + std::to_string(static_cast<int>(op)));
}

// f(Traits<t>{}) for every dtype, float8 included.
template <class F>
decltype(auto) dispatchDType(DType t, F&& f) {
  switch (t) {
    case DType::kFloat16: return f(Traits<DType::kFloat16>{});
    case DType::kBFloat16: return f(Traits<DType::kBFloat16>{});
    case DType::kFloat32: return f(Traits<DType::kFloat32>{});
    case DType::kFloat64: return f(Traits<DType::kFloat64>{});
    case DType::kInt8: return f(Traits<DType::kInt8>{});
    case DType::kUInt8: return f(Traits<DType::kUInt8>{});
    case DType::kInt32: return f(Traits<DType::kInt32>{});
    case DType::kInt64: return f(Traits<DType::kInt64>{});
    case DType::kBool: return f(Traits<DType::kBool>{});
    case DType::kInt16: return f(Traits<DType::kInt16>{});
    case DType::kUInt16: return f(Traits<DType::kUInt16>{});
    case DType::kUInt32: return f(Traits<DType::kUInt32>{});
    case DType::kUInt64: return f(Traits<DType::kUInt64>{});
    case DType::kFloat8E4M3: return f(Traits<DType::kFloat8E4M3>{});
    case DType::kFloat8E5M2: return f(Traits<DType::kFloat8E5M2>{});
  }
  throwUnknownDType(t);
}

// f(Traits<t>{}) for the dtypes that can be reduced; f is never instantiated
// for float8, which throws opRefusal's reason.
template <class F>
decltype(auto) dispatchReducible(DType t, F&& f) {
  using R = decltype(f(Traits<DType::kFloat32>{}));
  return dispatchDType(t, [&](auto tr) -> R {
    if constexpr (decltype(tr)::kReducible) {
      return f(tr);
    } else {
      throw ArgumentError(opRefusal(t, ReduceOp::kSum));
    }
  });
}

// The functor reduce() applies for `op` on Tr (kAvg reduces as a sum). For
// bool, the seven ops collapse onto three functors (or, and, xor), so that
// equal results come from one instantiation.
template <class Tr, class F>
decltype(auto) dispatchOp(ReduceOp op, F&& f) {
  if (op == ReduceOp::kBand || op == ReduceOp::kBor || op == ReduceOp::kBxor || op == ReduceOp::kAvg) {
    std::string why = opRefusal(Tr::kDType, op);
    if (!why.empty()) throw ArgumentError(why);
  }
  constexpr bool kBool = Tr::kKind == Kind::kBool;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      if constexpr (kBool) return f(OpBor{});
      else return f(OpSum{});
    case ReduceOp::kProd:
      if constexpr (kBool) return f(OpBand{});
      else return f(OpProd{});
    case ReduceOp::kMin:
      if constexpr (kBool) return f(OpBand{});
      else return f(OpMin{});
    case ReduceOp::kMax:
      if constexpr (kBool) return f(OpBor{});
      else return f(OpMax{});
    case ReduceOp::kBand:
      if constexpr (!Tr::kIsFloat) return f(OpBand{});
      break;
    case ReduceOp::kBor:
      if constexpr (!Tr::kIsFloat) return f(OpBor{});
      break;
    case ReduceOp::kBxor:
      if constexpr (!Tr::kIsFloat) return f(OpBxor{});
      break;
  }
  throwUnknownOp(op);
}

// The traits a kernel for (Tr, Fn) runs on: signed integers take their
// unsigned twin for every op but min and max, since wrapping sums, products
// and bitwise ops give the same bits either way. Halves the integer kernels.
template <class Tr, class Fn>
using KernelTraits = std::conditional_t<
    Tr::kKind == Kind::kSigned && !std::is_same_v<Fn, OpMin> && !std::is_same_v<Fn, OpMax>,
    typename UnsignedTraitsOf<int(sizeof(typename Tr::Storage))>::type, Tr>;

// f(KernelTraits{}, Fn{}) for a legal (dtype, op); see dispatchOp.
template <class F>
decltype(auto) dispatchReduction(DType t, ReduceOp op, F&& f) {
  return dispatchReducible(t, [&](auto tr) -> decltype(auto) {
    using Tr = decltype(tr);
    return dispatchOp<Tr>(op, [&](auto fn) -> decltype(auto) {
      return f(KernelTraits<Tr, decltype(fn)>{}, fn);
    });
  });
}

}  // namespace rr
