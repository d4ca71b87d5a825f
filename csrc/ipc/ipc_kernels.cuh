// The one-shot and two-shot all-reduce kernels over CUDA-IPC peer memory,
// and the host's packing of their arguments. The synchronisation argument
// common to every IPC kernel is in ipc_device.cuh; what is particular to
// these two follows.
//
// Within a call's half (see ipc_layout.h), slot q (slotBytes each) holds
// what rank q pushed here:
//   one-shot: slots 0..N-1 = rank q's whole input
//   two-shot: slots 0..N-1 = rank q's copy of my segment (staging),
//             slots N..2N-1 = rank q's reduced segment q (gather)
//
// - Within a call, block b only touches the same element range ("tile b") of
//   every staging and gather slot, in every round, so the pairwise barriers
//   of block b alone protect its reuse of those bytes across rounds.
// - Why two halves: a one-shot reader reads its slots after its only
//   barrier, so nothing tells the writers when it is done. Call c+2 reuses
//   call c's half; before it writes, this rank finished call c+1, whose
//   blocks each waited for every peer inside call c+1 (every kernel's first
//   barrier is all-to-all, gpu_ring's too), and a peer in call c+1 has
//   finished call c (its kernels run in stream order). So all reads of the
//   half from call c are over. The half is picked by Ctl::calls, which
//   counts every IPC launch, gpu_ring's included.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ipc/ipc_device.cuh"
#include "ipc/ipc_plan.h"

namespace rr {
namespace ipc {

// ---- block-wide loops ---------------------------------------------------------

// Copies n bytes from src to every non-null dst[d]. UB: bytes per access (16,
// or the element size when a pointer is not 16-byte aligned); ES: element
// size, for the tail that is not a whole UB.
template <int UB, int ES, int ND>
RR_DEV void copyBytes(const char* src, char* const (&dst)[ND], int64_t n) {
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
RR_DEV void reduceUnits(const char* const (&src)[NR], int N,
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
        for (int e = 0; e < W; ++e) acc[e] = Op::f(acc[e], Tr::up(v[u][q].e[e]));
      }
    }
    Unit<S, W> res;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      A x = acc[e];
      if (kAvg) x = Tr::divide(x, N);
      res.e[e] = Tr::down(x);
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
RR_DEV void reduceRange(const char* const (&src)[NR], int N,
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
RR_DEV void oneShotBody(const Args& a, const Epoch& e, BlockState& st) {
  constexpr int64_t ES = sizeof(typename Tr::S);
  const int r = a.rank, N = a.nranks;
  const int64_t lo = blockIdx.x * a.perBlock;
  const int64_t n = lo < a.count ? imin(a.perBlock, a.count - lo) : 0;
  const int64_t off = lo * ES;

  char* push[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q)
    push[q] = (q < N && q != r) ? a.base[q] + kControlBytes + e.half + r * a.slotBytes + off
                                : nullptr;
  copyBytes<int(ES) * K, int(ES)>(a.in + off, push, n * ES);

  if (!barrier(a, e, e.flagBase + 1, st, true)) return;

  const char* src[NR];
  char* dst[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q) {
    src[q] = q == r ? a.in + off : a.base[r] + kControlBytes + e.half + q * a.slotBytes + off;
    dst[q] = q == r ? a.out + off : nullptr;
  }
  reduceRange<Tr, Op, kAvg, NR, K>(src, N, dst, n);
}

// Copies the previous round's reduced segments, which peers pushed into the
// gather slots, to out (tile b of every peer's segment).
template <int UB, int ES>
RR_DEV void gatherToOut(const Args& a, const char* mine, int64_t base, int64_t n, int64_t tLo,
                        int64_t tHi) {
  for (int q = 0; q < a.nranks; ++q) {
    if (q == a.rank) continue;
    const int64_t lo = q * a.segElems + tLo;
    const int64_t hi = imin(q * a.segElems + tHi, n);
    if (hi <= lo) continue;
    char* const dst[1] = {a.out + (base + lo) * ES};
    copyBytes<UB, ES>(mine + (a.nranks + q) * a.slotBytes + tLo * ES, dst, (hi - lo) * ES);
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
RR_DEV void twoShotBody(const Args& a, const Epoch& e, BlockState& st) {
  constexpr int64_t ES = sizeof(typename Tr::S);
  constexpr int UB = int(ES) * K;
  const int r = a.rank, N = a.nranks;
  const int64_t segE = a.segElems;
  const int64_t tLo = blockIdx.x * a.tileElems;
  const int64_t tHi = imin(segE, tLo + a.tileElems);
  char* const mine = a.base[r] + kControlBytes + e.half;
  char* peer[NR];
#pragma unroll
  for (int q = 0; q < NR; ++q) peer[q] = q < N ? a.base[q] + kControlBytes + e.half : nullptr;
  uint64_t v = e.flagBase;
  int64_t prevBase = 0, prevN = 0;

  for (int64_t k = 0; k < a.rounds; ++k) {
    const int64_t base = k * a.roundElems;
    const int64_t n = imin(a.roundElems, a.count - base);

    for (int q = 0; q < N; ++q) {
      if (q == r) continue;
      const int64_t lo = q * segE + tLo;
      const int64_t hi = imin(q * segE + tHi, n);
      if (hi <= lo) continue;
      char* const dst[1] = {peer[q] + r * a.slotBytes + tLo * ES};
      copyBytes<UB, int(ES)>(a.in + (base + lo) * ES, dst, (hi - lo) * ES);
    }
    if (k > 0) gatherToOut<UB, int(ES)>(a, mine, prevBase, prevN, tLo, tHi);

    if (!barrier(a, e, ++v, st, k == 0)) return;

    const int64_t lo = r * segE + tLo;
    const int64_t hi = imin(r * segE + tHi, n);
    if (hi > lo) {
      const char* src[NR];
      char* dst[NR];
#pragma unroll
      for (int q = 0; q < NR; ++q) {
        src[q] = q == r ? a.in + (base + lo) * ES : mine + q * a.slotBytes + tLo * ES;
        dst[q] = q == r   ? a.out + (base + lo) * ES
                 : q < N ? peer[q] + (N + r) * a.slotBytes + tLo * ES
                         : nullptr;
      }
      reduceRange<Tr, Op, kAvg, NR, K>(src, N, dst, hi - lo);
    }

    if (!barrier(a, e, ++v, st, false)) return;
    prevBase = base;
    prevN = n;
  }
  gatherToOut<UB, int(ES)>(a, mine, prevBase, prevN, tLo, tHi);
}

// Every launch starts and ends the same way (ipc_device.cuh), whatever the body did.
template <class Tr, class Op, bool kAvg, int K, int NR>
__global__ void __launch_bounds__(kThreads) oneShotKernel(const __grid_constant__ Args a) {
  RR_BLOCK_STATE(st);
  const Epoch e = startCall(a, st);
  oneShotBody<Tr, Op, kAvg, K, NR>(a, e, st);
  finishCall(a, e);
}

template <class Tr, class Op, bool kAvg, int K, int NR>
__global__ void __launch_bounds__(kThreads) twoShotKernel(const __grid_constant__ Args a) {
  RR_BLOCK_STATE(st);
  const Epoch e = startCall(a, st);
  twoShotBody<Tr, Op, kAvg, K, NR>(a, e, st);
  finishCall(a, e);
}

// ---- host: one call's arguments -------------------------------------------------

// bases[q]: rank q's allocation as mapped here. The flag values and the half
// come from the device (Ctl), so the same Args serve every replay of a graph.
inline Args makeArgs(const void* in, void* out, int64_t count, int rank, int nranks,
                     char* const* bases, int64_t halfBytes, Ctl* ctl, volatile AbortInfo* info,
                     uint64_t timeoutNs) {
  Args a{};
  a.in = static_cast<const char*>(in);
  a.out = static_cast<char*>(out);
  a.count = count;
  a.rank = rank;
  a.nranks = nranks;
  for (int q = 0; q < nranks; ++q) a.base[q] = bases[q];
  a.halfBytes = halfBytes;
  a.ctl = ctl;
  a.info = info;
  a.timeoutNs = timeoutNs;
  return a;
}

inline void setPlan(Args& a, const IpcPlan& g) {
  a.barriers = g.barriers;
  a.kind = g.oneShot ? kKernelOneShot : kKernelTwoShot;
  a.slotBytes = g.slotBytes;
  a.perBlock = g.perBlock;
  a.roundElems = g.roundElems;
  a.segElems = g.segElems;
  a.tileElems = g.tileElems;
  a.rounds = g.rounds;
}

// The call's fingerprint: packed by the host (its sequence number), or
// numbered on the device when the launch may be replayed from a graph.
inline void setTag(Args& a, const Fingerprint& shape, uint64_t hostTag, bool fromDevice) {
  a.shape = shape;
  a.tag = hostTag;
  a.tagFromDevice = fromDevice ? 1 : 0;
}

}  // namespace ipc
}  // namespace rr
