// The one source of arithmetic: element traits, conversions and reduction
// functors, shared by host loops (reduce_cpu.cc), device kernels
// (reduce_cuda.cu, ipc_kernels.cuh) and the IPC emulator. Ranks may reduce on
// different devices (the host for one buffer, a GPU for another, a peer's GPU
// in the IPC path), and results must agree bit for bit, so nothing here may
// be written twice.
//
// The rules, for every dtype and op (tests/test_numerics.py checks each):
// - float16 and bfloat16 are stored as uint16_t and computed in float: both
//   operands are widened exactly, combined in float, rounded once back to
//   nearest-even (subnormals kept, overflow to infinity).
// - NaN results are canonical: the positive quiet NaN (0x7fc00000 in float,
//   0x7ff8... in double, 0x7e00 in float16, 0x7fc0 in bfloat16). Hardware
//   disagrees otherwise: x86 returns the first operand's payload, or the
//   negative "default NaN" 0xffc00000 for inf - inf; NVIDIA GPUs return
//   0x7fffffff. Traits::down, the last step before memory, makes any NaN
//   canonical (one select), so functors may return any NaN.
// - min/max propagate NaN (NaN if either operand is NaN, like torch.minimum
//   and np.minimum); on equal operands (-0.0 and +0.0) the first is kept.
// - Integer sum and prod wrap: computed in an unsigned type at least as wide
//   as unsigned int, so there is no signed-overflow UB (and no promotion of
//   uint16 to signed int before a multiply).
// - bool is stored as uint8_t; any non-zero byte reads as true and results
//   are 0 or 1. sum/max/bor are "or", prod/min/band are "and", bxor is "xor".
// - band/bor/bxor are bitwise on integers; floats refuse them (opRefusal).
// - avg reduces as sum; finalize divides once by the world size: floats in
//   their compute type, rounded once; integers truncate toward zero, as C.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/dtypes.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define RR_HD __host__ __device__ __forceinline__
#else
#define RR_HD inline
#endif

namespace rr {

// ---- bit casts ------------------------------------------------------------------

RR_HD uint32_t bitsOf(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
RR_HD float floatOf(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
RR_HD double doubleOf(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(u));
#else
  double d;
  std::memcpy(&d, &u, 8);
  return d;
#endif
}

// ---- conversions, written with selects (no jumps) so host loops vectorise ----

// Exact for every pattern, NaN payloads included.
RR_HD float halfBitsToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = static_cast<uint32_t>(h & 0x7fffu);
  // Shifting exponent and mantissa into place and scaling by 2^112
  // re-biases the exponent and normalises subnormals in one multiply.
  float mag = floatOf(em << 13) * floatOf(0x77800000u);  // 2^112
  uint32_t u = bitsOf(mag);
  u = em >= 0x7c00u ? (u | 0x7f800000u) : u;  // infinity and NaN keep an all-ones exponent
  return floatOf(u | sign);
}

// Round to nearest even (subnormals kept, overflow to infinity); NaN becomes
// 0x7e00 with the input's sign. The FPU does the rounding: adding a power of
// two whose ulp is the half's ulp at f's magnitude leaves f rounded in the
// low bits of the sum. Half subnormals share the ulp 2^-24 of the lowest
// normal binade, hence the clamp of the exponent to 113 (2^-14). Written so
// that the add runs for every input and every select takes integers: GCC
// vectorises no loop with a float add under a condition (-ftrapping-math).
// All 2^32 inputs give the bits of the older three-way select formulation.
RR_HD uint16_t floatToHalfBits(float f) {
  const uint32_t w = bitsOf(f);
  const uint32_t sign = (w >> 16) & 0x8000u;
  uint32_t u = w & 0x7fffffffu;
  const uint32_t quiet = u > 0x7f800000u ? 0x0200u : 0u;  // infinity | quiet = 0x7e00
  u = u < 0x477ff000u ? u : 0x477ff000u;  // from 65520 up everything rounds to infinity
  const uint32_t e = u >> 23;
  const uint32_t ec = e < 113u ? 113u : e;
  const uint32_t magic = (ec + 13u) << 23;
  const uint32_t q = bitsOf(floatOf(magic) + floatOf(u)) - magic;  // |f| / ulp, rounded
  return static_cast<uint16_t>((((ec - 113u) << 10) + q) | quiet | sign);
}

RR_HD float bf16BitsToFloat(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

// Round to nearest even; NaN keeps sign and top payload bits and is quieted.
RR_HD uint16_t floatToBf16Bits(float f) {
  uint32_t u = bitsOf(f);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

// What the reductions call. On the device the hardware converts (one
// instruction where the bit tricks take a dozen, which matters at HBM rate);
// it gives the same bits as the functions above:
// - float -> half/bf16: cvt.rn is IEEE round-to-nearest-even with subnormals
//   (no .ftz) and overflow to infinity, exactly the tricks above, for every
//   non-NaN float; NaN, where the hardware returns its own canonical NaN, is
//   mapped by a select to the host's answer.
// - half -> float: widening is exact for every non-NaN half. A NaN's payload
//   may differ, but none reaches memory: Traits::down makes NaN canonical.
// tests/gpu/test_reduce_gpu.py checks all 2^32 floats and all 2^16 halves on
// the device against the bit tricks (deviceConversionMismatches).
RR_HD float halfToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  return halfBitsToFloat(h);
#endif
}
RR_HD uint16_t floatToHalf(float f) {
#if defined(__CUDA_ARCH__)
  const uint16_t hw = __half_as_ushort(__float2half_rn(f));
  return f != f ? static_cast<uint16_t>(((bitsOf(f) >> 16) & 0x8000u) | 0x7e00u) : hw;
#else
  return floatToHalfBits(f);
#endif
}
RR_HD float bf16ToFloat(uint16_t h) { return bf16BitsToFloat(h); }
RR_HD uint16_t floatToBf16(float f) {
#if defined(__CUDA_ARCH__)
  const uint16_t hw = __bfloat16_as_ushort(__float2bfloat16_rn(f));
  return f != f ? static_cast<uint16_t>((bitsOf(f) >> 16) | 0x40u) : hw;
#else
  return floatToBf16Bits(f);
#endif
}

// ---- element traits ---------------------------------------------------------------

enum class Kind { kFloat, kSigned, kUnsigned, kBool, kBytes };

// Storage: the type in memory. Compute: the type functors see. Bits: an
// unsigned integer of the storage width, for the finiteness test.
template <DType D, Kind K, class S, class C, class B, B kMask>
struct TraitsBase {
  static constexpr DType kDType = D;
  static constexpr Kind kKind = K;
  static constexpr bool kReducible = K != Kind::kBytes;
  static constexpr bool kIsFloat = K == Kind::kFloat;
  static constexpr bool kIsInteger = K == Kind::kSigned || K == Kind::kUnsigned;
  using Storage = S;
  using Compute = C;
  using Bits = B;
  // Not finite when the bits under the mask are all ones: the exponent for
  // IEEE formats; for float8 e4m3fn, which has no infinity, the NaN pattern.
  static constexpr B kNonFiniteMask = kMask;
};

// Types computed as they are stored.
template <DType D, Kind K, class T, class B, B kMask = B(0)>
struct PlainTraits : TraitsBase<D, K, T, T, B, kMask> {
  RR_HD static T up(T x) { return x; }
  RR_HD static T down(T x) { return x; }
};

template <DType D> struct Traits;

// down() also makes NaN canonical (see the top). On the host, for the halves,
// it tests the rounded bits after the conversion rather than selecting a
// constant before it: GCC would otherwise thread the NaN case around the
// conversion's float add and leave the loop unvectorised. On the device the
// select comes first (cvt.rn of a non-NaN float is floatToHalf's answer).
template <>
struct Traits<DType::kFloat16>
    : TraitsBase<DType::kFloat16, Kind::kFloat, uint16_t, float, uint16_t, 0x7c00u> {
  RR_HD static float up(uint16_t x) { return halfToFloat(x); }
  RR_HD static uint16_t down(float x) {
#if defined(__CUDA_ARCH__)
    return x != x ? uint16_t(0x7e00u) : __half_as_ushort(__float2half_rn(x));
#else
    const uint16_t h = floatToHalfBits(x);
    return (h & 0x7fffu) > 0x7c00u ? uint16_t(0x7e00u) : h;
#endif
  }
};
template <>
struct Traits<DType::kBFloat16>
    : TraitsBase<DType::kBFloat16, Kind::kFloat, uint16_t, float, uint16_t, 0x7f80u> {
  RR_HD static float up(uint16_t x) { return bf16ToFloat(x); }
  RR_HD static uint16_t down(float x) {
#if defined(__CUDA_ARCH__)
    return x != x ? uint16_t(0x7fc0u) : __bfloat16_as_ushort(__float2bfloat16_rn(x));
#else
    const uint16_t h = floatToBf16Bits(x);
    return (h & 0x7fffu) > 0x7f80u ? uint16_t(0x7fc0u) : h;
#endif
  }
};
template <>
struct Traits<DType::kFloat32>
    : TraitsBase<DType::kFloat32, Kind::kFloat, float, float, uint32_t, 0x7f800000u> {
  RR_HD static float up(float x) { return x; }
  RR_HD static float down(float x) { return x != x ? floatOf(0x7fc00000u) : x; }
};
template <>
struct Traits<DType::kFloat64>
    : TraitsBase<DType::kFloat64, Kind::kFloat, double, double, uint64_t, 0x7ff0000000000000ull> {
  RR_HD static double up(double x) { return x; }
  RR_HD static double down(double x) { return x != x ? doubleOf(0x7ff8000000000000ull) : x; }
};

#define RR_INT_TRAITS(D, K, T, B) \
  template <>                     \
  struct Traits<D> : PlainTraits<D, K, T, B> {};
RR_INT_TRAITS(DType::kInt8, Kind::kSigned, int8_t, uint8_t)
RR_INT_TRAITS(DType::kUInt8, Kind::kUnsigned, uint8_t, uint8_t)
RR_INT_TRAITS(DType::kInt16, Kind::kSigned, int16_t, uint16_t)
RR_INT_TRAITS(DType::kUInt16, Kind::kUnsigned, uint16_t, uint16_t)
RR_INT_TRAITS(DType::kInt32, Kind::kSigned, int32_t, uint32_t)
RR_INT_TRAITS(DType::kUInt32, Kind::kUnsigned, uint32_t, uint32_t)
RR_INT_TRAITS(DType::kInt64, Kind::kSigned, int64_t, uint64_t)
RR_INT_TRAITS(DType::kUInt64, Kind::kUnsigned, uint64_t, uint64_t)
#undef RR_INT_TRAITS

template <>
struct Traits<DType::kBool> : TraitsBase<DType::kBool, Kind::kBool, uint8_t, bool, uint8_t, 0> {
  RR_HD static bool up(uint8_t x) { return x != 0; }
  RR_HD static uint8_t down(bool x) { return x ? 1 : 0; }
};

// float8 is moved as bytes: no Compute type and no up/down a functor could use.
template <>
struct Traits<DType::kFloat8E4M3>
    : TraitsBase<DType::kFloat8E4M3, Kind::kBytes, uint8_t, void, uint8_t, 0x7fu> {};
template <>
struct Traits<DType::kFloat8E5M2>
    : TraitsBase<DType::kFloat8E5M2, Kind::kBytes, uint8_t, void, uint8_t, 0x7cu> {};

// The unsigned integer traits of a width, for ops whose bits do not depend
// on signedness (wrapping sum and prod, bitwise ops).
template <int kBytes> struct UnsignedTraitsOf;
template <> struct UnsignedTraitsOf<1> { using type = Traits<DType::kUInt8>; };
template <> struct UnsignedTraitsOf<2> { using type = Traits<DType::kUInt16>; };
template <> struct UnsignedTraitsOf<4> { using type = Traits<DType::kUInt32>; };
template <> struct UnsignedTraitsOf<8> { using type = Traits<DType::kUInt64>; };

// Adding the mask's lowest bit to the masked bits carries into the top bit
// exactly when every mask bit is set; and, add and or vectorise on any SSE
// level, where a 64-bit compare would not. Loops OR the carries and test the
// top bit once. Integers (mask 0) never hit.
template <class Tr>
RR_HD typename Tr::Bits nonFiniteCarry(typename Tr::Bits x) {
  using B = typename Tr::Bits;
  constexpr B kLow = static_cast<B>(Tr::kNonFiniteMask & (~Tr::kNonFiniteMask + 1u));
  return static_cast<B>((x & Tr::kNonFiniteMask) + kLow);
}
template <class Tr>
RR_HD bool topBitSet(typename Tr::Bits x) {
  return (x >> (8 * sizeof(x) - 1)) != 0;
}
template <class Tr>
RR_HD bool isNonFinite(typename Tr::Bits x) {
  return topBitSet<Tr>(nonFiniteCarry<Tr>(x));
}

// ---- scalar helpers -----------------------------------------------------------------

// Unsigned, and at least as wide as unsigned int: uint16 * uint16 would
// otherwise promote to signed int and overflow.
template <class T>
using WrapType = std::common_type_t<std::make_unsigned_t<T>, unsigned>;

// ---- reduction functors -------------------------------------------------------------
// Each maps two Compute values to one; C picks the rule (see the top). Float
// results may be any NaN; min/max pick an operand, so a NaN one wins.

struct OpSum {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) return a | b;
    else if constexpr (std::is_integral_v<C>) return static_cast<C>(WrapType<C>(a) + WrapType<C>(b));
    else return a + b;
  }
};
struct OpProd {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) return a & b;
    else if constexpr (std::is_integral_v<C>) return static_cast<C>(WrapType<C>(a) * WrapType<C>(b));
    else return a * b;
  }
};
struct OpMin {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) return a & b;
    else if constexpr (std::is_integral_v<C>) return b < a ? b : a;
    else return b != b ? b : (b < a ? b : a);  // a NaN a fails b < a: a is kept
  }
};
struct OpMax {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    if constexpr (std::is_same_v<C, bool>) return a | b;
    else if constexpr (std::is_integral_v<C>) return a < b ? b : a;
    else return b != b ? b : (a < b ? b : a);  // a NaN a fails a < b: a is kept
  }
};
struct OpBand {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    static_assert(std::is_integral_v<C>, "bitwise ops take integers and bool");
    if constexpr (std::is_same_v<C, bool>) return a & b;
    else return static_cast<C>(a & b);
  }
};
struct OpBor {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    static_assert(std::is_integral_v<C>, "bitwise ops take integers and bool");
    if constexpr (std::is_same_v<C, bool>) return a | b;
    else return static_cast<C>(a | b);
  }
};
struct OpBxor {
  template <class C>
  RR_HD C operator()(C a, C b) const {
    static_assert(std::is_integral_v<C>, "bitwise ops take integers and bool");
    if constexpr (std::is_same_v<C, bool>) return a ^ b;
    else return static_cast<C>(a ^ b);
  }
};

// avg's last step on a fully reduced sum: one division by the world size.
// Floats divide in their compute type (IEEE division on the device too: nvcc
// keeps -prec-div unless fast math is asked for); integers truncate toward
// zero, in a type wide enough for every value of C.
template <class C>
RR_HD C divideByWorld(C sum, int world) {
  static_assert(!std::is_same_v<C, bool>, "avg is not defined for bool");
  if constexpr (std::is_floating_point_v<C>) {
    return sum / static_cast<C>(world);
  } else if constexpr (std::is_signed_v<C>) {
    using W = std::conditional_t<(sizeof(C) < 8), int32_t, int64_t>;
    return static_cast<C>(static_cast<W>(sum) / static_cast<W>(world));
  } else {
    using W = std::conditional_t<(sizeof(C) < 8), uint32_t, uint64_t>;
    return static_cast<C>(static_cast<W>(sum) / static_cast<W>(world));
  }
}

// One element of reduce() and of finalize(), in storage terms.
template <class Tr, class Fn>
RR_HD typename Tr::Storage combine(typename Tr::Storage a, typename Tr::Storage b, Fn fn) {
  return Tr::down(fn(Tr::up(a), Tr::up(b)));
}
template <class Tr>
RR_HD typename Tr::Storage finishAvg(typename Tr::Storage x, int world) {
  return Tr::down(divideByWorld(Tr::up(x), world));
}

}  // namespace rr
