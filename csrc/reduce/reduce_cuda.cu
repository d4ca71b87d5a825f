// Device reductions. One kernel template serves every elementwise pass: a
// grid-stride loop over 16-byte vectors when all pointers allow it, then a
// scalar tail. Instantiations: 8 dtypes x 4 ops for reduce (avg reduces as
// sum), 8 for the avg division, 4 for the finiteness test.
#include "reduce/reduce_cuda.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/cuda_check.h"

namespace rr {
namespace {

constexpr int kThreads = 256;
// Enough resident blocks per SM to hide memory latency; more only adds tail.
constexpr int kBlocksPerSm = 4;

// Bit-level conversions written exactly as in reduce_cpu.cc (the fp32
// multiply and add below are IEEE round-to-nearest on the device too, and
// nvcc keeps denormals without --use_fast_math), so a half reduced on the GPU
// has the same bits as one reduced on the host.
__device__ __forceinline__ float h2f(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = static_cast<uint32_t>(h & 0x7fffu);
  float mag = __uint_as_float(em << 13) * __uint_as_float(0x77800000u);  // 2^112
  uint32_t u = __float_as_uint(mag);
  u = em >= 0x7c00u ? (u | 0x7f800000u) : u;
  return __uint_as_float(u | sign);
}

__device__ __forceinline__ uint16_t f2h(float f) {
  uint32_t u = __float_as_uint(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  uint32_t big = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  uint32_t small = __float_as_uint(__uint_as_float(u) + 0.5f) - 0x3f000000u;
  uint32_t odd = (u >> 13) & 1u;
  uint32_t normal = (u + 0xc8000fffu + odd) >> 13;
  uint32_t r = u >= 0x47800000u ? big : (u < 0x38800000u ? small : normal);
  return static_cast<uint16_t>(r | sign);
}

__device__ __forceinline__ float b2f(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

__device__ __forceinline__ uint16_t f2b(float f) {
  uint32_t u = __float_as_uint(f);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

template <DType D> struct Storage;
template <> struct Storage<DType::kFloat16> { using T = uint16_t; };
template <> struct Storage<DType::kBFloat16> { using T = uint16_t; };
template <> struct Storage<DType::kFloat32> { using T = float; };
template <> struct Storage<DType::kFloat64> { using T = double; };
template <> struct Storage<DType::kInt8> { using T = int8_t; };
template <> struct Storage<DType::kUInt8> { using T = uint8_t; };
template <> struct Storage<DType::kInt32> { using T = int32_t; };
template <> struct Storage<DType::kInt64> { using T = int64_t; };

// The same expressions as the CPU functors, so NaN handling agrees too.
template <ReduceOp O, class C>
__device__ __forceinline__ C apply(C a, C b) {
  if constexpr (O == ReduceOp::kProd) return a * b;
  else if constexpr (O == ReduceOp::kMin) return b < a ? b : a;
  else if constexpr (O == ReduceOp::kMax) return a < b ? b : a;
  else return a + b;
}

template <DType D, ReduceOp O>
struct Combine {
  using T = typename Storage<D>::T;
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (D == DType::kFloat16) {
      return f2h(apply<O>(h2f(a), h2f(b)));
    } else if constexpr (D == DType::kBFloat16) {
      return f2b(apply<O>(b2f(a), b2f(b)));
    } else if constexpr (std::is_integral_v<T> && (O == ReduceOp::kSum || O == ReduceOp::kProd)) {
      // Wraps like the hardware without signed-overflow UB, as on the host.
      using U = std::make_unsigned_t<T>;
      return static_cast<T>(static_cast<U>(apply<O>(static_cast<U>(a), static_cast<U>(b))));
    } else {
      return apply<O>(a, b);
    }
  }
};

// avg's division of a final sum; ignores its second argument.
template <DType D>
struct Divide {
  using T = typename Storage<D>::T;
  int world;
  __device__ __forceinline__ T operator()(T a, T) const {
    if constexpr (D == DType::kFloat16) {
      return f2h(h2f(a) / static_cast<float>(world));
    } else if constexpr (D == DType::kBFloat16) {
      return f2b(b2f(a) / static_cast<float>(world));
    } else if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<int64_t>(a) / static_cast<int64_t>(world));
    } else {
      return a / static_cast<T>(world);
    }
  }
};

template <class T>
union Vec16 {
  uint4 raw;
  T lane[16 / sizeof(T)];
};

// dst[i] = f(a[i], b[i]). dst may alias a or b element for element.
template <class T, class F>
__global__ void __launch_bounds__(kThreads)
    mapKernel(T* dst, const T* a, const T* b, int64_t n, bool vectorised, F f) {
  constexpr int kLanes = 16 / sizeof(T);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t tail = 0;
  if (vectorised) {
    const int64_t nv = n / kLanes;
    const uint4* av = reinterpret_cast<const uint4*>(a);
    const uint4* bv = reinterpret_cast<const uint4*>(b);
    uint4* dv = reinterpret_cast<uint4*>(dst);
    for (int64_t i = tid; i < nv; i += stride) {
      Vec16<T> x, y, z;
      x.raw = av[i];
      y.raw = bv[i];
#pragma unroll
      for (int k = 0; k < kLanes; ++k) z.lane[k] = f(x.lane[k], y.lane[k]);
      dv[i] = z.raw;
    }
    tail = nv * kLanes;
  }
  for (int64_t i = tail + tid; i < n; i += stride) dst[i] = f(a[i], b[i]);
}

// A value is not finite when its exponent bits are all ones.
template <class U>
__global__ void __launch_bounds__(kThreads)
    nonFiniteKernel(const U* x, int64_t n, U expMask, int* flag) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  bool hit = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    hit |= (x[i] & expMask) == expMask;
  if (hit) *flag = 1;  // every writer stores the same value
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <class T, class F>
void launchMap(int grid, cudaStream_t s, void* dst, const void* a, const void* b, int64_t n,
               bool vec, F f) {
  mapKernel<T, F><<<grid, kThreads, 0, s>>>(static_cast<T*>(dst), static_cast<const T*>(a),
                                            static_cast<const T*>(b), n, vec, f);
  RR_CUDA_CHECK(cudaGetLastError());
}

template <DType D>
void reduceAs(int grid, cudaStream_t s, void* dst, const void* a, const void* b, int64_t n,
              bool vec, ReduceOp op) {
  using T = typename Storage<D>::T;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: launchMap<T>(grid, s, dst, a, b, n, vec, Combine<D, ReduceOp::kSum>()); break;
    case ReduceOp::kProd: launchMap<T>(grid, s, dst, a, b, n, vec, Combine<D, ReduceOp::kProd>()); break;
    case ReduceOp::kMin: launchMap<T>(grid, s, dst, a, b, n, vec, Combine<D, ReduceOp::kMin>()); break;
    case ReduceOp::kMax: launchMap<T>(grid, s, dst, a, b, n, vec, Combine<D, ReduceOp::kMax>()); break;
  }
}

template <DType D>
void divideAs(int grid, cudaStream_t s, void* x, int64_t n, bool vec, int world) {
  launchMap<typename Storage<D>::T>(grid, s, x, x, x, n, vec, Divide<D>{world});
}

}  // namespace

CudaReducer::CudaReducer(int device, cudaStream_t stream) : device_(device), stream_(stream) {
  DeviceGuard g(device_);
  int sms = 0;
  RR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_));
  maxBlocks_ = std::max(1, sms * kBlocksPerSm);
}

CudaReducer::~CudaReducer() {
  // Never throws: errors here have nowhere to go.
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);
  if (scratch_) cudaFree(scratch_);
  if (flagDev_) cudaFree(flagDev_);
  if (flagHost_) cudaFreeHost(flagHost_);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

int CudaReducer::gridFor(int64_t units) const {
  int64_t blocks = (units + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, maxBlocks_)));
}

void CudaReducer::reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                         ReduceOp op) {
  if (count <= 0) return;
  DeviceGuard g(device_);
  const size_t es = dtypeSize(dtype);
  const bool vec = aligned16(dst) && aligned16(a) && aligned16(b);
  const int64_t lanes = static_cast<int64_t>(16 / es);
  const int grid = gridFor(vec ? count / lanes + count % lanes : count);
  switch (dtype) {
    case DType::kFloat16: reduceAs<DType::kFloat16>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kBFloat16: reduceAs<DType::kBFloat16>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kFloat32: reduceAs<DType::kFloat32>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kFloat64: reduceAs<DType::kFloat64>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kInt8: reduceAs<DType::kInt8>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kUInt8: reduceAs<DType::kUInt8>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kInt32: reduceAs<DType::kInt32>(grid, stream_, dst, a, b, count, vec, op); break;
    case DType::kInt64: reduceAs<DType::kInt64>(grid, stream_, dst, a, b, count, vec, op); break;
  }
}

void CudaReducer::finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) {
  if (op != ReduceOp::kAvg || worldSize == 1 || count <= 0) return;
  DeviceGuard g(device_);
  const bool vec = aligned16(dst);
  const int64_t lanes = static_cast<int64_t>(16 / dtypeSize(dtype));
  const int grid = gridFor(vec ? count / lanes + count % lanes : count);
  switch (dtype) {
    case DType::kFloat16: divideAs<DType::kFloat16>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kBFloat16: divideAs<DType::kBFloat16>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kFloat32: divideAs<DType::kFloat32>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kFloat64: divideAs<DType::kFloat64>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kInt8: divideAs<DType::kInt8>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kUInt8: divideAs<DType::kUInt8>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kInt32: divideAs<DType::kInt32>(grid, stream_, dst, count, vec, worldSize); break;
    case DType::kInt64: divideAs<DType::kInt64>(grid, stream_, dst, count, vec, worldSize); break;
  }
}

void CudaReducer::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  DeviceGuard g(device_);
  RR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
}

bool CudaReducer::anyNonFinite(const void* data, int64_t count, DType dtype) {
  int64_t words = count;
  switch (dtype) {
    case DType::kFloat16: case DType::kBFloat16: case DType::kFloat32: case DType::kFloat64: break;
    default: return false;
  }
  if (count <= 0) return false;
  DeviceGuard g(device_);
  if (!flagDev_) {
    RR_CUDA_CHECK(cudaMalloc(&flagDev_, sizeof(int)));
    RR_CUDA_CHECK(cudaHostAlloc(&flagHost_, sizeof(int), cudaHostAllocDefault));
  }
  // The check runs before the engine orders its stream after the caller's
  // (Communicator::preflight precedes Engine::begin), so wait for every
  // producer on the device: nan_check is a debugging aid, not a fast path.
  RR_CUDA_CHECK(cudaDeviceSynchronize());
  RR_CUDA_CHECK(cudaMemsetAsync(flagDev_, 0, sizeof(int), stream_));
  const int grid = gridFor(words);
  switch (dtype) {
    case DType::kFloat16:
      nonFiniteKernel<uint16_t><<<grid, kThreads, 0, stream_>>>(
          static_cast<const uint16_t*>(data), words, uint16_t(0x7c00), flagDev_);
      break;
    case DType::kBFloat16:
      nonFiniteKernel<uint16_t><<<grid, kThreads, 0, stream_>>>(
          static_cast<const uint16_t*>(data), words, uint16_t(0x7f80), flagDev_);
      break;
    case DType::kFloat32:
      nonFiniteKernel<uint32_t><<<grid, kThreads, 0, stream_>>>(
          static_cast<const uint32_t*>(data), words, 0x7f800000u, flagDev_);
      break;
    default:
      nonFiniteKernel<uint64_t><<<grid, kThreads, 0, stream_>>>(
          static_cast<const uint64_t*>(data), words, uint64_t(0x7ff0000000000000ull), flagDev_);
      break;
  }
  RR_CUDA_CHECK(cudaGetLastError());
  RR_CUDA_CHECK(cudaMemcpyAsync(flagHost_, flagDev_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  RR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return *flagHost_ != 0;
}

void* CudaReducer::scratch(size_t bytes) {
  if (scratch_ && bytes <= scratchBytes_) return scratch_;
  DeviceGuard g(device_);
  // Earlier collectives may still read the old block: every use of it was
  // joined into this stream by Engine::end, so draining the stream suffices.
  RR_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (scratch_) RR_CUDA_CHECK(cudaFree(scratch_));
  scratch_ = nullptr;
  scratchBytes_ = 0;
  size_t want = ((std::max<size_t>(bytes, 256) + 255) / 256) * 256;
  RR_CUDA_CHECK(cudaMalloc(&scratch_, want));
  scratchBytes_ = want;
  return scratch_;
}

}  // namespace rr
