#include "reduce/reduce_cpu.h"

#include <cstring>
#include <string>

#include "common/dispatch.h"
#include "common/errors.h"

namespace rr {
namespace {

// One loop per (traits, functor): GCC vectorises each of them at -O3 (the
// conversions and NaN selects in numerics.h are written for that; check with
// -fopt-info-vec). dst may equal a or b: a dependence distance of zero keeps
// the vector loop legal, and GCC's run-time alias check allows it.
template <class Tr, class Fn>
void reduceLoop(typename Tr::Storage* dst, const typename Tr::Storage* a,
                const typename Tr::Storage* b, int64_t n, Fn fn) {
  for (int64_t i = 0; i < n; ++i) dst[i] = combine<Tr>(a[i], b[i], fn);
}

template <class Tr>
void avgLoop(typename Tr::Storage* x, int64_t n, int worldSize) {
  for (int64_t i = 0; i < n; ++i) x[i] = finishAvg<Tr>(x[i], worldSize);
}

template <class Tr>
bool nonFiniteLoop(const typename Tr::Bits* x, int64_t n) {
  // No early exit: an OR over every element vectorises, a search does not.
  typename Tr::Bits carries = 0;
  for (int64_t i = 0; i < n; ++i) carries |= nonFiniteCarry<Tr>(x[i]);
  return topBitSet<Tr>(carries);
}

}  // namespace

void CpuReducer::reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                        ReduceOp op) {
  dispatchReduction(dtype, op, [&](auto tr, auto fn) {
    using S = typename decltype(tr)::Storage;
    reduceLoop<decltype(tr)>(static_cast<S*>(dst), static_cast<const S*>(a),
                             static_cast<const S*>(b), count, fn);
  });
}

void CpuReducer::finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) {
  if (op != ReduceOp::kAvg) return;
  RR_CHECK_ARG(worldSize >= 1, "finalize: world size must be >= 1, got " + std::to_string(worldSize));
  const std::string why = opRefusal(dtype, op);
  if (!why.empty()) throw ArgumentError(why);
  if (worldSize == 1) return;
  dispatchReducible(dtype, [&](auto tr) {
    using Tr = decltype(tr);
    if constexpr (Tr::kKind != Kind::kBool)
      avgLoop<Tr>(static_cast<typename Tr::Storage*>(dst), count, worldSize);
  });
}

void CpuReducer::copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}

bool CpuReducer::anyNonFinite(const void* data, int64_t count, DType dtype) {
  return dispatchDType(dtype, [&](auto tr) {
    using Tr = decltype(tr);
    if constexpr (Tr::kIsFloat || Tr::kKind == Kind::kBytes)
      return nonFiniteLoop<Tr>(static_cast<const typename Tr::Bits*>(data), count);
    else
      return false;
  });
}

}  // namespace rr
