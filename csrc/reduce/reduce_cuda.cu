// Device reductions. One kernel template serves every elementwise pass, and
// it runs at HBM rate: each thread keeps 2 x kUnroll independent 16-byte loads
// in flight before the first use, a grid of kBlocksPerSm blocks per SM stays
// resident and strides over the buffer, and a scalar pass covers the few
// elements before the first and after the last aligned vector.
// Instantiations (dispatch.h folds equal-bit cases): 4 floats x 4 ops, 4
// integer widths x 5 wrapping/bitwise ops, 8 integers x {min, max}, 3 for
// bool: 55 for reduce; 12 for the avg division; 6 finiteness tests (float8
// included).
#include "reduce/reduce_cuda.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "common/cuda_check.h"
#include "common/dispatch.h"
#include "common/numerics.h"

namespace rr {
namespace {

constexpr int kThreads = 256;
// 1024 resident threads per SM, with registers capped at 64 by the launch
// bounds: 8 x 16 B in flight per thread is ~128 KiB per SM, several times
// what HBM latency times bandwidth asks for.
constexpr int kBlocksPerSm = 4;
// 16-byte vectors per thread per step, per input. Byte types unpack into 16
// registers per vector, so they take half as many (64 B in flight per thread
// is still ample) rather than spill under the 64-register cap.
template <class S>
constexpr int kUnroll = sizeof(S) == 1 ? 2 : 4;

template <class S>
union Vec16 {
  uint4 raw;
  S lane[16 / sizeof(S)];
};

// Both maps see storage values; the kernel knows nothing of dtypes.
template <class Tr, class Fn>
struct CombineMap {
  using S = typename Tr::Storage;
  static constexpr bool kBinary = true;
  Fn fn;
  __device__ __forceinline__ S operator()(S a, S b) const { return combine<Tr>(a, b, fn); }
};
template <class Tr>
struct AvgMap {
  using S = typename Tr::Storage;
  static constexpr bool kBinary = false;
  int world;
  __device__ __forceinline__ S operator()(S a, S) const { return finishAvg<Tr>(a, world); }
};

template <class Map>
__device__ __forceinline__ uint4 mapVec(const Map& map, uint4 x, uint4 y) {
  using S = typename Map::S;
  Vec16<S> a, b, r;
  a.raw = x;
  b.raw = y;
#pragma unroll
  for (int k = 0; k < int(16 / sizeof(S)); ++k) r.lane[k] = map(a.lane[k], b.lane[k]);
  return r.raw;
}

// Evict-first loads: each input byte is read once. Stores stay ordinary,
// since the ring sends what it just reduced and may find it in L2.
__device__ __forceinline__ uint4 loadOnce(const uint4* p) { return __ldcs(p); }

// dst[i] = map(a[i], b[i]) for i < n (b unread for unary maps). Elements
// [head, head + nvec * lanes) go as 16-byte vectors, the rest one by one.
// dst may alias a or b element for element: each thread loads before it stores.
template <class Map>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    mapKernel(typename Map::S* dst, const typename Map::S* a, const typename Map::S* b, int64_t n,
              int64_t head, int64_t nvec, Map map) {
  using S = typename Map::S;
  constexpr int64_t kLanes = 16 / sizeof(S);
  constexpr int kU = kUnroll<S>;
  const uint4* av = reinterpret_cast<const uint4*>(a + head);
  const uint4* bv = reinterpret_cast<const uint4*>(b + head);
  uint4* dv = reinterpret_cast<uint4*>(dst + head);
  const int64_t step = int64_t(gridDim.x) * kThreads * kU;
  for (int64_t base = int64_t(blockIdx.x) * kThreads * kU + threadIdx.x; base < nvec;
       base += step) {
    if (base + (kU - 1) * kThreads < nvec) {
      uint4 x[kU], y[kU];
#pragma unroll
      for (int k = 0; k < kU; ++k) {
        x[k] = loadOnce(av + base + k * kThreads);
        if constexpr (Map::kBinary) y[k] = loadOnce(bv + base + k * kThreads);
        else y[k] = x[k];
      }
#pragma unroll
      for (int k = 0; k < kU; ++k) dv[base + k * kThreads] = mapVec(map, x[k], y[k]);
    } else {
#pragma unroll
      for (int k = 0; k < kU; ++k) {
        const int64_t i = base + k * kThreads;
        if (i < nvec) {
          const uint4 x = loadOnce(av + i);
          dv[i] = mapVec(map, x, Map::kBinary ? loadOnce(bv + i) : x);
        }
      }
    }
  }
  const int64_t tail = head + nvec * kLanes;
  const int64_t scalars = head + (n - tail);
  for (int64_t j = int64_t(blockIdx.x) * kThreads + threadIdx.x; j < scalars;
       j += int64_t(gridDim.x) * kThreads) {
    const int64_t i = j < head ? j : tail + (j - head);
    dst[i] = map(a[i], Map::kBinary ? b[i] : a[i]);
  }
}

// Sets *flag when any element is not finite; every writer stores the same value.
template <class Tr>
__global__ void __launch_bounds__(kThreads)
    nonFiniteKernel(const typename Tr::Bits* x, int64_t n, int* flag) {
  typename Tr::Bits carries = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * kThreads)
    carries |= nonFiniteCarry<Tr>(x[i]);
  if (topBitSet<Tr>(carries)) *flag = 1;
}

// Where the vector body starts, and how many vectors it has: zero when the
// three pointers do not share their offset within 16 bytes.
struct Split {
  int64_t head = 0;
  int64_t nvec = 0;
};
Split splitFor(const void* dst, const void* a, const void* b, int64_t n, size_t es) {
  const uintptr_t off = reinterpret_cast<uintptr_t>(dst) & 15u;
  Split s;
  if ((reinterpret_cast<uintptr_t>(a) & 15u) != off || (reinterpret_cast<uintptr_t>(b) & 15u) != off ||
      off % es != 0)
    return s;
  s.head = std::min<int64_t>(n, static_cast<int64_t>(((16u - off) & 15u) / es));
  s.nvec = (n - s.head) / static_cast<int64_t>(16 / es);
  return s;
}

template <class Map>
void launchMap(int grid, cudaStream_t stream, typename Map::S* dst, const typename Map::S* a,
               const typename Map::S* b, int64_t n, Split s, Map map) {
  mapKernel<Map><<<grid, kThreads, 0, stream>>>(dst, a, b, n, s.head, s.nvec, map);
  RR_CUDA_CHECK(cudaGetLastError());
}

template <class S>
int64_t threadsWanted(int64_t n, Split s) {
  const int64_t scalars = n - s.nvec * static_cast<int64_t>(16 / sizeof(S));
  return std::max<int64_t>((s.nvec + kUnroll<S> - 1) / kUnroll<S>, scalars);
}

}  // namespace

CudaReducer::CudaReducer(int device, cudaStream_t stream)
    : device_(device), stream_(stream), workspace_(device, stream) {
  DeviceGuard g(device_);
  int sms = 0;
  RR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_));
  maxBlocks_ = std::max(1, sms * kBlocksPerSm);
}

CudaReducer::~CudaReducer() {
  // Never throws: errors here have nowhere to go. The workspace drains the
  // stream again before it frees its blocks.
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);
  if (flagDev_) cudaFree(flagDev_);
  if (flagHost_) cudaFreeHost(flagHost_);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

int CudaReducer::gridFor(int64_t threads) const {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, maxBlocks_)));
}

void CudaReducer::reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                         ReduceOp op) {
  dispatchReduction(dtype, op, [&](auto tr, auto fn) {
    using Tr = decltype(tr);
    using S = typename Tr::Storage;
    if (count <= 0) return;
    DeviceGuard g(device_);
    const Split s = splitFor(dst, a, b, count, sizeof(S));
    launchMap(gridFor(threadsWanted<S>(count, s)), stream_, static_cast<S*>(dst),
              static_cast<const S*>(a), static_cast<const S*>(b), count, s,
              CombineMap<Tr, decltype(fn)>{fn});
  });
}

void CudaReducer::finalize(void* dst, int64_t count, DType dtype, ReduceOp op, int worldSize) {
  if (op != ReduceOp::kAvg) return;
  RR_CHECK_ARG(worldSize >= 1, "finalize: world size must be >= 1, got " + std::to_string(worldSize));
  const std::string why = opRefusal(dtype, op);
  if (!why.empty()) throw ArgumentError(why);
  if (worldSize == 1 || count <= 0) return;
  dispatchReducible(dtype, [&](auto tr) {
    using Tr = decltype(tr);
    using S = typename Tr::Storage;
    if constexpr (Tr::kKind != Kind::kBool) {
      DeviceGuard g(device_);
      const Split s = splitFor(dst, dst, dst, count, sizeof(S));
      launchMap(gridFor(threadsWanted<S>(count, s)), stream_, static_cast<S*>(dst),
                static_cast<const S*>(dst), static_cast<const S*>(dst), count, s,
                AvgMap<Tr>{worldSize});
    }
  });
}

void CudaReducer::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  DeviceGuard g(device_);
  RR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_));
}

bool CudaReducer::anyNonFinite(const void* data, int64_t count, DType dtype) {
  return dispatchDType(dtype, [&](auto tr) -> bool {
    using Tr = decltype(tr);
    if constexpr (!Tr::kIsFloat && Tr::kKind != Kind::kBytes) {
      return false;
    } else {
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
      nonFiniteKernel<Tr><<<gridFor(count), kThreads, 0, stream_>>>(
          static_cast<const typename Tr::Bits*>(data), count, flagDev_);
      RR_CUDA_CHECK(cudaGetLastError());
      RR_CUDA_CHECK(cudaMemcpyAsync(flagHost_, flagDev_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
      RR_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return *flagHost_ != 0;
    }
  });
}

// ---- test hook: the device's conversions against the bit tricks ------------------

namespace {

__global__ void conversionMismatchKernel(unsigned long long* counts) {
  unsigned long long toHalf = 0, toBf16 = 0, fromHalf = 0;
  const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (1ull << 32); i += stride) {
    const float f = floatOf(static_cast<uint32_t>(i));
    toHalf += floatToHalf(f) != floatToHalfBits(f);
    toBf16 += floatToBf16(f) != floatToBf16Bits(f);
    if (i < (1u << 16)) {
      const float hw = halfToFloat(static_cast<uint16_t>(i));
      const float bits = halfBitsToFloat(static_cast<uint16_t>(i));
      fromHalf += (hw != hw && bits != bits) ? 0 : bitsOf(hw) != bitsOf(bits);
    }
  }
  if (toHalf) atomicAdd(&counts[0], toHalf);
  if (toBf16) atomicAdd(&counts[1], toBf16);
  if (fromHalf) atomicAdd(&counts[2], fromHalf);
}

}  // namespace

std::array<uint64_t, 3> deviceConversionMismatches(int device) {
  DeviceGuard g(device);
  unsigned long long* counts = nullptr;
  RR_CUDA_CHECK(cudaMalloc(&counts, 3 * sizeof(unsigned long long)));
  unsigned long long host[3] = {0, 0, 0};
  cudaError_t err = cudaMemset(counts, 0, sizeof(host));
  if (err == cudaSuccess) {
    int sms = 1;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    conversionMismatchKernel<<<sms * 8, kThreads>>>(counts);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) err = cudaMemcpy(host, counts, sizeof(host), cudaMemcpyDeviceToHost);
  cudaFree(counts);
  RR_CUDA_CHECK(err);
  return {host[0], host[1], host[2]};
}

}  // namespace rr
