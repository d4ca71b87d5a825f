#include "reduce/reduce_cpu.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <type_traits>

#include "common/errors.h"

namespace rr {
namespace {

inline uint32_t bitsOf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float floatOf(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Branch-free conversions (selects, not jumps) so the loops vectorise.
inline float h2f(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = static_cast<uint32_t>(h & 0x7fffu);
  // Shifting the exponent and mantissa into place and scaling by 2^112
  // re-biases the exponent and normalises subnormals in one multiply.
  float mag = floatOf(em << 13) * floatOf(0x77800000u);  // 2^112
  uint32_t u = bitsOf(mag);
  u = em >= 0x7c00u ? (u | 0x7f800000u) : u;  // infinity and NaN keep an all-ones exponent
  return floatOf(u | sign);
}

inline uint16_t f2h(float f) {
  uint32_t u = bitsOf(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  // Too large for half: infinity, or a quiet NaN for NaN input.
  uint32_t big = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // Small values: adding 0.5 lets the FPU round the subnormal mantissa for us.
  uint32_t small = bitsOf(floatOf(u) + 0.5f) - 0x3f000000u;
  // Normal values: re-bias and round to nearest even on the dropped 13 bits.
  uint32_t odd = (u >> 13) & 1u;
  uint32_t normal = (u + 0xc8000fffu + odd) >> 13;
  uint32_t r = u >= 0x47800000u ? big : (u < 0x38800000u ? small : normal);
  return static_cast<uint16_t>(r | sign);
}

inline float b2f(uint16_t h) { return floatOf(static_cast<uint32_t>(h) << 16); }

inline uint16_t f2b(float f) {
  uint32_t u = bitsOf(f);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;  // keep NaN a NaN after truncation
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

struct Sum { template <class T> T operator()(T a, T b) const { return a + b; } };
struct Prod { template <class T> T operator()(T a, T b) const { return a * b; } };
struct Min { template <class T> T operator()(T a, T b) const { return b < a ? b : a; } };
struct Max { template <class T> T operator()(T a, T b) const { return a < b ? b : a; } };

template <class T, class F>
void loop(T* dst, const T* a, const T* b, int64_t n, F f) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f(a[i], b[i]);
}

// Integer sums and products wrap like the hardware, without signed-overflow UB.
template <class T>
void loopIntArith(T* dst, const T* a, const T* b, int64_t n, bool prod) {
  using U = std::make_unsigned_t<T>;
  if (prod) {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = static_cast<T>(static_cast<U>(static_cast<U>(a[i]) * static_cast<U>(b[i])));
  } else {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = static_cast<T>(static_cast<U>(static_cast<U>(a[i]) + static_cast<U>(b[i])));
  }
}

template <class Cvt, class Back, class F>
void loopHalf(uint16_t* dst, const uint16_t* a, const uint16_t* b, int64_t n, Cvt cvt, Back back,
              F f) {
  for (int64_t i = 0; i < n; ++i) dst[i] = back(f(cvt(a[i]), cvt(b[i])));
}

template <class F>
void dispatch(void* dst, const void* a, const void* b, int64_t n, DType t, F f, bool isSumOrProd,
              bool prod) {
  switch (t) {
    case DType::kFloat32:
      loop(static_cast<float*>(dst), static_cast<const float*>(a), static_cast<const float*>(b), n, f);
      break;
    case DType::kFloat64:
      loop(static_cast<double*>(dst), static_cast<const double*>(a), static_cast<const double*>(b), n, f);
      break;
    case DType::kFloat16:
      loopHalf(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
               static_cast<const uint16_t*>(b), n, h2f, f2h, f);
      break;
    case DType::kBFloat16:
      loopHalf(static_cast<uint16_t*>(dst), static_cast<const uint16_t*>(a),
               static_cast<const uint16_t*>(b), n, b2f, f2b, f);
      break;
#define RR_INT_CASE(KIND, T)                                                                   \
  case KIND:                                                                                   \
    if (isSumOrProd)                                                                           \
      loopIntArith(static_cast<T*>(dst), static_cast<const T*>(a), static_cast<const T*>(b), n, \
                   prod);                                                                      \
    else                                                                                       \
      loop(static_cast<T*>(dst), static_cast<const T*>(a), static_cast<const T*>(b), n, f);     \
    break;
      RR_INT_CASE(DType::kInt8, int8_t)
      RR_INT_CASE(DType::kUInt8, uint8_t)
      RR_INT_CASE(DType::kInt32, int32_t)
      RR_INT_CASE(DType::kInt64, int64_t)
#undef RR_INT_CASE
  }
}

// Integer avg truncates toward zero, like C division.
template <class T>
void divideInt(T* x, int64_t n, int worldSize) {
  const int64_t d = worldSize;
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<T>(static_cast<int64_t>(x[i]) / d);
}

}  // namespace

float halfToFloat(uint16_t h) { return h2f(h); }
uint16_t floatToHalf(float f) { return f2h(f); }
float bf16ToFloat(uint16_t h) { return b2f(h); }
uint16_t floatToBf16(float f) { return f2b(f); }

CpuReducer::~CpuReducer() { std::free(scratch_); }

void CpuReducer::reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                        ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: dispatch(dst, a, b, count, dtype, Sum(), true, false); break;
    case ReduceOp::kProd: dispatch(dst, a, b, count, dtype, Prod(), true, true); break;
    case ReduceOp::kMin: dispatch(dst, a, b, count, dtype, Min(), false, false); break;
    case ReduceOp::kMax: dispatch(dst, a, b, count, dtype, Max(), false, false); break;
  }
}

void CpuReducer::finalize(void* dst, int64_t n, DType dtype, ReduceOp op, int worldSize) {
  if (op != ReduceOp::kAvg || worldSize == 1) return;
  switch (dtype) {
    case DType::kFloat32: {
      float* x = static_cast<float*>(dst);
      const float d = static_cast<float>(worldSize);
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / d;
      break;
    }
    case DType::kFloat64: {
      double* x = static_cast<double*>(dst);
      const double d = worldSize;
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / d;
      break;
    }
    case DType::kFloat16: {
      uint16_t* x = static_cast<uint16_t*>(dst);
      const float d = static_cast<float>(worldSize);
      for (int64_t i = 0; i < n; ++i) x[i] = f2h(h2f(x[i]) / d);
      break;
    }
    case DType::kBFloat16: {
      uint16_t* x = static_cast<uint16_t*>(dst);
      const float d = static_cast<float>(worldSize);
      for (int64_t i = 0; i < n; ++i) x[i] = f2b(b2f(x[i]) / d);
      break;
    }
    case DType::kInt8: divideInt(static_cast<int8_t*>(dst), n, worldSize); break;
    case DType::kUInt8: divideInt(static_cast<uint8_t*>(dst), n, worldSize); break;
    case DType::kInt32: divideInt(static_cast<int32_t*>(dst), n, worldSize); break;
    case DType::kInt64: divideInt(static_cast<int64_t*>(dst), n, worldSize); break;
  }
}

void CpuReducer::copy(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memmove(dst, src, bytes);
}

namespace {
// A value is not finite when its exponent bits are all ones.
template <class U>
bool anyAllOnesExponent(const U* x, int64_t n, U expMask) {
  U hit = 0;
  for (int64_t i = 0; i < n; ++i) hit |= static_cast<U>((x[i] & expMask) == expMask);
  return hit != 0;
}
}  // namespace

bool CpuReducer::anyNonFinite(const void* data, int64_t n, DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return anyAllOnesExponent(static_cast<const uint16_t*>(data), n, uint16_t(0x7c00));
    case DType::kBFloat16: return anyAllOnesExponent(static_cast<const uint16_t*>(data), n, uint16_t(0x7f80));
    case DType::kFloat32: return anyAllOnesExponent(static_cast<const uint32_t*>(data), n, 0x7f800000u);
    case DType::kFloat64:
      return anyAllOnesExponent(static_cast<const uint64_t*>(data), n, uint64_t(0x7ff0000000000000ull));
    default: return false;
  }
}

void* CpuReducer::scratch(size_t bytes) {
  if (bytes > scratchBytes_ || scratch_ == nullptr) {
    size_t want = ((std::max<size_t>(bytes, 64) + 63) / 64) * 64;
    void* p = std::aligned_alloc(64, want);
    if (!p) throw std::bad_alloc();
    std::free(scratch_);
    scratch_ = p;
    scratchBytes_ = want;
  }
  return scratch_;
}

}  // namespace rr
