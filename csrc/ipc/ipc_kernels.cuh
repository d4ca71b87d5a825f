// Device side of the IPC all-reduce: kernel arguments, element traits, the
// block barrier and the two kernels. Included by ipc_allreduce.cu, and by a
// CPU emulator (tests/gpu/ipc_emulator.cc) that defines RR_IPC_EMULATE and
// supplies threadIdx, __syncthreads, __ldcg and the flag primitives, so the
// index arithmetic and the flag protocol can be exercised without a GPU.
//
// Memory of one rank (one cudaMalloc, mapped by every peer):
//   flags  [kIpcMaxBlocks][kIpcMaxRanks] uint64: flags[b][q] is written by
//          rank q's block b; values only grow, so nothing is ever reset
//   half 0 | half 1: call number c uses half c % 2 (see "Why two halves")
// Within a half, slot q (slotBytes each) holds what rank q pushed here:
//   one-shot: slots 0..N-1 = rank q's whole input
//   two-shot: slots 0..N-1 = rank q's copy of my segment (staging),
//             slots N..2N-1 = rank q's reduced segment q (gather)
//
// Synchronisation (review notes in benchmarks/NOTES.md):
// - A barrier between the blocks with the same index on every rank:
//   __syncthreads (the block's stores are issued), then thread q stores the
//   barrier value into rank q's flags[b][me] with st.release.sys, which
//   through the bar.sync orders every store of the block before it; then it
//   polls its own flags[b][q] until the value is reached and fences
//   (acquire); a final __syncthreads hands that to the whole block. Data
//   written by peers is read with ld.global.cg (L2, never a stale L1 line).
// - Each call uses flag values flagBase+1 .. flagBase+barriers; the host adds
//   `barriers` per call, the same on every rank. A peer can be at most one
//   barrier ahead of a waiter, so waiting for ">= value" is exact.
// - Within a call, block b only touches the same element range ("tile b") of
//   every staging and gather slot, in every round, so the pairwise barriers
//   of block b alone protect its reuse of those bytes across rounds.
// - Why two halves: a one-shot reader reads its slots after its only
//   barrier, so nothing tells the writers when it is done. Call c+2 reuses
//   call c's half; before it writes, this rank finished call c+1, whose
//   blocks each waited for every peer inside call c+1, and a peer in call c+1
//   has finished call c (its kernels run in stream order). So all reads of
//   the half from call c are over.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/numerics.h"
#include "ipc/ipc_plan.h"

#ifndef RR_IPC_EMULATE
#include <cuda_runtime.h>
#endif

namespace rr {
namespace ipc {

constexpr int kIpcMaxRanks = 8;
constexpr int kIpcMaxBlocks = 160;
#ifndef RR_IPC_THREADS
#define RR_IPC_THREADS 512
#endif
constexpr int kThreads = RR_IPC_THREADS;
constexpr int kMaxRanks = kIpcMaxRanks;
constexpr size_t kFlagsBytes =
    ((kIpcMaxBlocks * kIpcMaxRanks * sizeof(uint64_t) + 4095) / 4096) * 4096;

__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

struct Args {
  const char* in;
  char* out;
  int64_t count;
  int rank;
  int nranks;
  uint64_t flagBase;
  uint64_t* myFlags;
  uint64_t* peerFlags[kMaxRanks];
  char* myData;                    // this call's half, local
  char* peerData[kMaxRanks];       // this call's half on every rank ([rank] == myData)
  int64_t slotBytes;
  int64_t perBlock;                // one-shot: elements per block
  int64_t roundElems;              // two-shot: elements per round = N * segElems
  int64_t segElems;
  int64_t tileElems;
  int64_t rounds;
  volatile int* abortFlag;         // host-mapped: 1 = aborted by the host, 2 = timed out
  uint64_t timeoutNs;
};

// ---- element types: storage S, accumulation A -------------------------------

// The traits and functors (OpSum, OpProd, OpMin, OpMax) are numerics.h's, the
// ones the reducers use, so a rank that folds here gets the bits a ring
// reduction would. Only the three float types are instantiated: each adds
// 2 algorithms x 5 ops x 4 shapes kernels.
template <class Tr>
struct IpcElem : Tr {
  using S = typename Tr::Storage;
  using A = typename Tr::Compute;
};
using F32 = IpcElem<Traits<DType::kFloat32>>;
using F16 = IpcElem<Traits<DType::kFloat16>>;
using BF16 = IpcElem<Traits<DType::kBFloat16>>;

// ---- raw memory access --------------------------------------------------------

template <int B> struct RawT;
template <> struct RawT<16> { using T = uint4; };
template <> struct RawT<8> { using T = uint2; };
template <> struct RawT<4> { using T = unsigned int; };
template <> struct RawT<2> { using T = unsigned short; };

// Through L2 only: peers' stores land in this GPU's L2, and a line kept in
// L1 from an earlier round would be stale.
template <int B>
__device__ __forceinline__ typename RawT<B>::T ldcg(const char* p) {
  return __ldcg(reinterpret_cast<const typename RawT<B>::T*>(p));
}
template <int B>
__device__ __forceinline__ void stg(char* p, typename RawT<B>::T v) {
  *reinterpret_cast<typename RawT<B>::T*>(p) = v;
}

template <class S, int W>
union Unit {
  typename RawT<int(sizeof(S)) * W>::T raw;
  S e[W];
};

#ifndef RR_IPC_EMULATE
__device__ __forceinline__ void storeRelease(uint64_t* p, uint64_t v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ uint64_t loadRelaxed(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.relaxed.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void fenceAcqRel() { asm volatile("fence.acq_rel.sys;" ::: "memory"); }
__device__ __forceinline__ uint64_t globalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif

// Rendezvous of block blockIdx.x on every rank at value v. False when this
// block gave up (timeout or host abort); the caller then returns.
__device__ __forceinline__ bool barrier(const Args& a, uint64_t v, volatile int* fail) {
  __syncthreads();
  const int q = threadIdx.x;
  if (q < a.nranks && q != a.rank) {
    storeRelease(a.peerFlags[q] + blockIdx.x * kMaxRanks + a.rank, v);
    const uint64_t* mine = a.myFlags + blockIdx.x * kMaxRanks + q;
    if (loadRelaxed(mine) < v) {
      const uint64_t start = globalTimer();
      unsigned spins = 0;
      while (loadRelaxed(mine) < v) {
        if ((++spins & 1023u) != 0) continue;
        if (*a.abortFlag != 0 || globalTimer() - start > a.timeoutNs) {
          if (*a.abortFlag == 0) *a.abortFlag = 2;
          __threadfence_system();
          *fail = 1;
          break;
        }
      }
    }
    fenceAcqRel();
  }
  __syncthreads();
  return *fail == 0;
}

// ---- block-wide loops ---------------------------------------------------------

// Copies n bytes from src to every non-null dst[d]. UB: bytes per access (16,
// or the element size when a pointer is not 16-byte aligned); ES: element
// size, for the tail that is not a whole UB.
template <int UB, int ES, int ND>
__device__ __forceinline__ void copyBytes(const char* src, char* const (&dst)[ND], int64_t n) {
  constexpr int U = 4;  // accesses in flight per thread
  using R = typename RawT<UB>::T;
  const int64_t units = n / UB;
  for (int64_t i0 = threadIdx.x; i0 < units; i0 += int64_t(kThreads) * U) {
    R v[U];
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t i = i0 + int64_t(j) * kThreads;
      if (i < units) v[j] = ldcg<UB>(src + i * UB);
    }
#pragma unroll
    for (int d = 0; d < ND; ++d) {
      if (dst[d] == nullptr) continue;
#pragma unroll
      for (int j = 0; j < U; ++j) {
        const int64_t i = i0 + int64_t(j) * kThreads;
        if (i < units) stg<UB>(dst[d] + i * UB, v[j]);
      }
    }
  }
  if constexpr (UB != ES) {
    const int64_t done = units * UB;
    const int64_t t = threadIdx.x;
    if (done + (t + 1) * ES <= n) {
      const auto v = ldcg<ES>(src + done + t * ES);
#pragma unroll
      for (int d = 0; d < ND; ++d)
        if (dst[d] != nullptr) stg<ES>(dst[d] + done + t * ES, v);
    }
  }
}

// U units of W elements at byte offsets off[0..U-1] (negative: skip): fold
// src[0..N-1] in rank order, finish avg, round once, store to every non-null dst.
template <class Tr, class Op, bool kAvg, int NR, int W, int U>
__device__ __forceinline__ void reduceUnits(const char* const (&src)[NR], int N,
                                            char* const (&dst)[NR], const int64_t (&off)[U]) {
  using S = typename Tr::S;
  using A = typename Tr::A;
  constexpr int B = int(sizeof(S)) * W;
  Unit<S, W> v[U][NR];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if (off[u] < 0) continue;
#pragma unroll
    for (int q = 0; q < NR; ++q)
      if (q < N) v[u][q].raw = ldcg<B>(src[q] + off[u]);
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if (off[u] < 0) continue;
    A acc[W];
#pragma unroll
    for (int e = 0; e < W; ++e) acc[e] = Tr::up(v[u][0].e[e]);
#pragma unroll
    for (int q = 1; q < NR; ++q) {
      if (q < N) {
#pragma unroll
        for (int e = 0; e < W; ++e) acc[e] = Op{}(acc[e], Tr::up(v[u][q].e[e]));
      }
    }
    Unit<S, W> res;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      res.e[e] = Tr::down(kAvg ? divideByWorld(acc[e], N) : acc[e]);
    }
#pragma unroll
    for (int d = 0; d < NR; ++d)
      if (dst[d] != nullptr) stg<B>(dst[d] + off[u], res.raw);
  }
}

// Reduces n elements: element i of the result reads src[q] + i*sizeof(S) and
// goes to dst[d] + i*sizeof(S). K elements per access (1 when misaligned).
// Two units in flight per thread when at most 4 ranks, else one (registers).
template <class Tr, class Op, bool kAvg, int NR, int K>
__device__ __forceinline__ void reduceRange(const char* const (&src)[NR], int N,
                                            char* const (&dst)[NR], int64_t n) {
  constexpr int64_t ES = sizeof(typename Tr::S);
  constexpr int64_t UB = ES * K;
  constexpr int U = NR <= 4 ? 2 : 1;
  const int64_t units = n / K;
  for (int64_t i0 = threadIdx.x; i0 < units; i0 += U * int64_t(kThreads)) {
    int64_t off[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t i = i0 + int64_t(u) * kThreads;
      off[u] = i < units ? i * UB : int64_t(-1);
    }
    reduceUnits<Tr, Op, kAvg, NR, K, U>(src, N, dst, off);
  }
  if constexpr (K > 1) {
    const int64_t i = units * K + threadIdx.x;  // at most K-1 tail elements
    if (i < n) {
      const int64_t off[1] = {i * ES};
      reduceUnits<Tr, Op, kAvg, NR, 1, 1>(src, N, dst, off);
    }
  }
}

// ---- kernels ------------------------------------------------------------------

// Small messages. Block b owns elements [b*perBlock, (b+1)*perBlock): it
// pushes them to slot `rank` of every peer, meets the peers' block b, then
// reduces the N copies of the same range locally.
template <class Tr, class Op, bool kAvg, int K, int NR>
__global__ void __launch_bounds__(kThreads) oneShotKernel(const __grid_constant__ Args a) {
  __shared__ volatile int fail;
  if (threadIdx.x == 0) fail = 0;
  constexpr int64_t ES = sizeof(typename Tr::S);
  const int r = a.rank, N = a.nranks;
  const int64_t lo = blockIdx.x * a.perBlock;
  const int64_t n = lo < a.count ? imin(a.perBlock, a.count - lo) : 0;
  const int64_t off = lo * ES;

  char* push[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q)
    push[q] = (q < N && q != r) ? a.peerData[q] + r * a.slotBytes + off : nullptr;
  copyBytes<int(ES) * K, int(ES)>(a.in + off, push, n * ES);

  if (!barrier(a, a.flagBase + 1, &fail)) return;

  const char* src[NR];
  char* dst[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q) {
    src[q] = q == r ? a.in + off : a.myData + q * a.slotBytes + off;
    dst[q] = q == r ? a.out + off : nullptr;
  }
  reduceRange<Tr, Op, kAvg, NR, K>(src, N, dst, n);
}

// Copies the previous round's reduced segments, which peers pushed into the
// gather slots, to out (tile b of every peer's segment).
template <int UB, int ES>
__device__ __forceinline__ void gatherToOut(const Args& a, int64_t base, int64_t n, int64_t tLo,
                                            int64_t tHi) {
  for (int q = 0; q < a.nranks; ++q) {
    if (q == a.rank) continue;
    const int64_t lo = q * a.segElems + tLo;
    const int64_t hi = imin(q * a.segElems + tHi, n);
    if (hi <= lo) continue;
    char* const dst[1] = {a.out + (base + lo) * ES};
    copyBytes<UB, ES>(a.myData + (a.nranks + q) * a.slotBytes + tLo * ES, dst, (hi - lo) * ES);
  }
}

// Large messages, in rounds of roundElems elements. A round is split into N
// segments (rank q owns segment q) and every segment into tiles (block b owns
// tile b of every segment). Per round, block b:
//   A  pushes tile b of segment q of its input to rank q's staging slot
//      `rank`, for every peer q; then copies the previous round's gather
//      slots to out (local work that overlaps the pushes still in flight)
//   -- barrier: peers' tile b of my segment has arrived
//   B  reduces tile b of its own segment (its own input + N-1 staging
//      slots, rank order), stores it to out and pushes it to every peer's
//      gather slot `rank`
//   -- barrier: every peer's reduced tile b of their segment has arrived,
//      and every peer is done reading its staging tile b
// After the last round, the last gather copy.
template <class Tr, class Op, bool kAvg, int K, int NR>
__global__ void __launch_bounds__(kThreads) twoShotKernel(const __grid_constant__ Args a) {
  __shared__ volatile int fail;
  if (threadIdx.x == 0) fail = 0;
  constexpr int64_t ES = sizeof(typename Tr::S);
  constexpr int UB = int(ES) * K;
  const int r = a.rank, N = a.nranks;
  const int64_t segE = a.segElems;
  const int64_t tLo = blockIdx.x * a.tileElems;
  const int64_t tHi = imin(segE, tLo + a.tileElems);
  uint64_t v = a.flagBase;
  int64_t prevBase = 0, prevN = 0;

  for (int64_t k = 0; k < a.rounds; ++k) {
    const int64_t base = k * a.roundElems;
    const int64_t n = imin(a.roundElems, a.count - base);

    for (int q = 0; q < N; ++q) {
      if (q == r) continue;
      const int64_t lo = q * segE + tLo;
      const int64_t hi = imin(q * segE + tHi, n);
      if (hi <= lo) continue;
      char* const dst[1] = {a.peerData[q] + r * a.slotBytes + tLo * ES};
      copyBytes<UB, int(ES)>(a.in + (base + lo) * ES, dst, (hi - lo) * ES);
    }
    if (k > 0) gatherToOut<UB, int(ES)>(a, prevBase, prevN, tLo, tHi);

    if (!barrier(a, ++v, &fail)) return;

    const int64_t lo = r * segE + tLo;
    const int64_t hi = imin(r * segE + tHi, n);
    if (hi > lo) {
      const char* src[NR];
      char* dst[NR];
#pragma unroll
      for (int q = 0; q < NR; ++q) {
        src[q] = q == r ? a.in + (base + lo) * ES : a.myData + q * a.slotBytes + tLo * ES;
        dst[q] = q == r   ? a.out + (base + lo) * ES
                 : q < N ? a.peerData[q] + (N + r) * a.slotBytes + tLo * ES
                         : nullptr;
      }
      reduceRange<Tr, Op, kAvg, NR, K>(src, N, dst, hi - lo);
    }

    if (!barrier(a, ++v, &fail)) return;
    prevBase = base;
    prevN = n;
  }
  gatherToOut<UB, int(ES)>(a, prevBase, prevN, tLo, tHi);
}

// ---- host: one call's arguments -------------------------------------------------

// bases[q]: rank q's buffer as mapped here (flags, then two halves of
// halfBytes). callIndex picks the half, flagBase is the last flag value used.
inline Args makeArgs(const IpcPlan& g, const void* in, void* out, int64_t count, int rank,
                     int nranks, uint64_t flagBase, char* const* bases, size_t halfBytes,
                     uint64_t callIndex, volatile int* abortFlag, uint64_t timeoutNs) {
  Args a{};
  a.in = static_cast<const char*>(in);
  a.out = static_cast<char*>(out);
  a.count = count;
  a.rank = rank;
  a.nranks = nranks;
  a.flagBase = flagBase;
  a.myFlags = reinterpret_cast<uint64_t*>(bases[rank]);
  const size_t half = kFlagsBytes + (callIndex & 1) * halfBytes;
  for (int q = 0; q < nranks; ++q) {
    a.peerFlags[q] = reinterpret_cast<uint64_t*>(bases[q]);
    a.peerData[q] = bases[q] + half;
  }
  a.myData = bases[rank] + half;
  a.slotBytes = g.slotBytes;
  a.perBlock = g.perBlock;
  a.roundElems = g.roundElems;
  a.segElems = g.segElems;
  a.tileElems = g.tileElems;
  a.rounds = g.rounds;
  a.abortFlag = abortFlag;
  a.timeoutNs = timeoutNs;
  return a;
}

}  // namespace ipc
}  // namespace rr
