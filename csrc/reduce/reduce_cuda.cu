// Device reductions, host side: dispatch, grid size and launch. The kernels
// and their index arithmetic are in reduce_kernels.cuh.
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
#include "reduce/reduce_kernels.cuh"

namespace rr {

using namespace reduce;

namespace {

template <class Map>
void launchMap(int grid, cudaStream_t stream, typename Map::S* dst, const typename Map::S* a,
               const typename Map::S* b, int64_t n, Split s, Map map) {
  mapKernel<Map><<<grid, kThreads, 0, stream>>>(dst, a, b, n, s.head, s.nvec, map);
  RR_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

CudaReducer::CudaReducer(int device, cudaStream_t stream)
    : device_(device), stream_(stream) {
  DeviceGuard g(device_);
  int sms = 0;
  RR_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device_));
  maxBlocks_ = std::max(1, sms * kBlocksPerSm);
}

CudaReducer::~CudaReducer() {
  // Never throws: errors here have nowhere to go. The workspace drains the
  // stream again before it frees its blocks.
  DeviceGuard::noThrow(device_, [&] {
    cudaStreamSynchronize(stream_);
    if (flagDev_) cudaFree(flagDev_);
    if (flagHost_) cudaFreeHost(flagHost_);
  });
}

int CudaReducer::gridFor(int64_t threads) const {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, maxBlocks_)));
}

// The map kernel takes one tile per block (reduce_kernels.cuh): as many
// blocks as tiles, which the hardware schedules as others finish.
static int mapGrid(int64_t threads) {
  const int64_t blocks = (threads + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(1) << 30)));
}

void CudaReducer::reduce(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                         ReduceOp op) {
  dispatchReduction(dtype, op, [&](auto tr, auto fn) {
    using Tr = decltype(tr);
    using S = typename Tr::Storage;
    if (count <= 0) return;
    DeviceGuard g(device_);
    const Split s = splitFor(dst, a, b, count, sizeof(S));
    launchMap(mapGrid(threadsWanted<Tr>(count, s)), stream_, static_cast<S*>(dst),
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
      launchMap(mapGrid(threadsWanted<Tr>(count, s)), stream_, static_cast<S*>(dst),
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
