// The device reduction kernels and their index arithmetic, apart from the
// host code that launches them (reduce_cuda.cu), so that a CPU emulator
// (tests/gpu/reduce_emulator.cc, which defines RR_REDUCE_EMULATE and supplies
// threadIdx, blockIdx and gridDim) can run every block and thread of
// a launch and check heads, tails, shares and bounds without a GPU.
//
// One kernel template serves every elementwise pass, and it runs at HBM rate:
// each thread keeps 2 x kUnroll independent 16-byte loads in flight before
// the first use, one tile of vectors per block, and a scalar pass covers the
// few elements before the first and after the last aligned vector. Bytes: 2
// read + 1 written per element; nothing else touches memory.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/numerics.h"

#ifndef RR_REDUCE_EMULATE
#include <cuda_runtime.h>
#endif

namespace rr {
namespace reduce {

constexpr int kThreads = 256;
// 1024 resident threads per SM, with registers capped at 64 by the launch
// bounds: 8 x 16 B in flight per thread is ~128 KiB per SM, several times
// what HBM latency times bandwidth asks for.
constexpr int kBlocksPerSm = 4;
// 16-byte vectors per thread per step, per input. Integer types of 1 and 2
// bytes unpack into 16 or 8 registers per vector and would spill under the
// 64-register cap at 4; they take 2 (64 B in flight per thread is still ample).
template <class Tr>
constexpr int kUnroll = (sizeof(typename Tr::Storage) == 1 ||
                         (sizeof(typename Tr::Storage) == 2 && !Tr::kIsFloat)) ? 2 : 4;

template <class S>
union Vec16 {
  uint4 raw;
  S lane[16 / sizeof(S)];
};

// Both maps see storage values; the kernel knows nothing of dtypes.
template <class Tr, class Fn>
struct CombineMap {
  using Traits = Tr;
  using S = typename Tr::Storage;
  static constexpr bool kBinary = true;
  Fn fn;
  __device__ __forceinline__ S operator()(S a, S b) const { return combine<Tr>(a, b, fn); }
};
template <class Tr>
struct AvgMap {
  using Traits = Tr;
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

__device__ __forceinline__ int64_t imin(int64_t x, int64_t y) { return x < y ? x : y; }

// Ordinary loads. Evict-first loads (__ldcs) look right for bytes read once,
// but measured on an H200 (benchmarks/dev/reduce_variants.cu, run 3 in
// benchmarks/NOTES.md) the same float32 kernel reached 0.97 of the copy rate
// with them and 1.05 without.
__device__ __forceinline__ uint4 loadOnce(const uint4* p) { return *p; }

// dst[i] = map(a[i], b[i]) for i < n (b unread for unary maps). Elements
// [head, head + nvec * lanes) go as 16-byte vectors, the rest one by one.
// dst may alias a or b element for element: each thread loads before it stores.
template <class Map>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    mapKernel(typename Map::S* dst, const typename Map::S* a, const typename Map::S* b, int64_t n,
              int64_t head, int64_t nvec, Map map) {
  using S = typename Map::S;
  constexpr int64_t kLanes = 16 / sizeof(S);
  constexpr int kU = kUnroll<typename Map::Traits>;
  const uint4* av = reinterpret_cast<const uint4*>(a + head);
  const uint4* bv = reinterpret_cast<const uint4*>(b + head);
  uint4* dv = reinterpret_cast<uint4*>(dst + head);
  // Tiles of kThreads x kU vectors, block b taking tiles b, b + grid, ...:
  // the blocks in flight at any moment stream one contiguous window of
  // memory (DRAM pages stay open), and with one tile per block, as the host
  // launches it, the hardware balances blocks as they finish. Measured on an
  // H200: equal contiguous shares per resident block reached 0.86-0.88 of
  // the copy rate (run 1 in benchmarks/NOTES.md).
  constexpr int64_t kTile = int64_t(kThreads) * kU;
  for (int64_t t0 = int64_t(blockIdx.x) * kTile; t0 < nvec; t0 += int64_t(gridDim.x) * kTile) {
    const int64_t base = t0 + threadIdx.x;
    const int64_t hi = imin(nvec, t0 + kTile);
    if (base + (kU - 1) * kThreads < hi) {
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
        if (i < hi) {
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
inline Split splitFor(const void* dst, const void* a, const void* b, int64_t n, size_t es) {
  const uintptr_t off = reinterpret_cast<uintptr_t>(dst) & 15u;
  Split s;
  if ((reinterpret_cast<uintptr_t>(a) & 15u) != off || (reinterpret_cast<uintptr_t>(b) & 15u) != off ||
      off % es != 0)
    return s;
  s.head = std::min<int64_t>(n, static_cast<int64_t>(((16u - off) & 15u) / es));
  s.nvec = (n - s.head) / static_cast<int64_t>(16 / es);
  return s;
}

template <class Tr>
int64_t threadsWanted(int64_t n, Split s) {
  const int64_t scalars = n - s.nvec * static_cast<int64_t>(16 / sizeof(typename Tr::Storage));
  return std::max<int64_t>((s.nvec + kUnroll<Tr> - 1) / kUnroll<Tr>, scalars);
}

}  // namespace reduce
}  // namespace rr
