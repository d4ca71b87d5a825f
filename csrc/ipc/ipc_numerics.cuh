// Element traits and op functors of the CUDA-IPC kernels, as common/numerics.h
// defines them: the kernels see Tr::S (storage), Tr::A (what they fold in),
// Tr::up, Tr::down and Op::f(a, b) (IpcSum, ...), and every one of those is numerics.h's,
// so a rank that folds here gets the bits a ring reduction would (NaN rules,
// integer wrap, canonical NaN, avg truncating toward zero) and nothing is
// written twice.
//
// The kernels fold the N inputs in Compute (float for the halves, the
// storage type for integers, wrapping) and round once per store.
#pragma once

#include <cstdint>

#include "common/dtypes.h"
#include "common/numerics.h"

#ifndef RR_IPC_EMULATE
#define RR_DEV __device__ __forceinline__
#else
#define RR_DEV inline
#endif

namespace rr {
namespace ipc {

template <DType D>
struct Elem {
  using T = Traits<D>;
  using S = typename T::Storage;
  using A = typename T::Compute;
  static RR_DEV A up(S x) { return T::up(x); }
  static RR_DEV S down(A a) { return T::down(a); }
  static RR_DEV A divide(A sum, int world) { return divideByWorld(sum, world); }
};
using F32 = Elem<DType::kFloat32>;
using F64 = Elem<DType::kFloat64>;
using F16 = Elem<DType::kFloat16>;
using BF16 = Elem<DType::kBFloat16>;
using I8 = Elem<DType::kInt8>;
using U8 = Elem<DType::kUInt8>;
using I32 = Elem<DType::kInt32>;
using I64 = Elem<DType::kInt64>;

template <class Fn>
struct IpcOp {
  template <class A>
  static RR_DEV A f(A a, A b) {
    return Fn()(a, b);
  }
};
using IpcSum = IpcOp<rr::OpSum>;
using IpcProd = IpcOp<rr::OpProd>;
using IpcMin = IpcOp<rr::OpMin>;
using IpcMax = IpcOp<rr::OpMax>;
using IpcBand = IpcOp<rr::OpBand>;
using IpcBor = IpcOp<rr::OpBor>;
using IpcBxor = IpcOp<rr::OpBxor>;

// Calls fn(Tr{}) with the traits of `t` (a generic lambda takes
// decltype(tr)); false when the kernels have none for it.
template <class Fn>
bool withTraits(DType t, Fn&& fn) {
  switch (t) {
    case DType::kFloat32: fn(F32{}); return true;
    case DType::kFloat16: fn(F16{}); return true;
    case DType::kBFloat16: fn(BF16{}); return true;
    case DType::kFloat64: fn(F64{}); return true;
    case DType::kInt8: fn(I8{}); return true;
    case DType::kUInt8: fn(U8{}); return true;
    case DType::kInt32: fn(I32{}); return true;
    case DType::kInt64: fn(I64{}); return true;
    default: return false;
  }
}

}  // namespace ipc
}  // namespace rr
