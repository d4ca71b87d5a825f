// The GPU ring over CUDA-IPC peer memory: one kernel per call, one thread
// block per channel, each channel an independent ring over its own slice
// (ring_plan.h has the schedule). An all-reduce is a reduce-scatter then an
// all-gather in ring order: every element is reduced once, in a fixed order
// (starting at the segment's ring position, staged in the element type
// between hops), and then copied, so every rank holds the same bits on
// every rerun. reduce_scatter (folded from the owner's successor to the
// owner), allgather and broadcast (a chain from the root) run the same
// body: ringMoveAt says what each step moves.
//
// Where the bytes go: the sender stores into a staging slot in the
// *receiver's* memory (push). Remote stores are posted writes over NVLink: a
// block keeps many of them in flight without waiting for a round trip,
// while every load it issues is local (its own input, its own staging)
// and so has HBM latency, not NVLink latency. The alternative (pull: the
// receiver loads from the sender's memory) would need enough outstanding
// remote loads per block to cover the NVLink round trip, i.e. more blocks
// or deeper unrolling for the same bandwidth.
//
// Flow control, per link (channel c in ring order o), with 64-bit counters
// that only grow (kept on the device in Ctl::ringSent/ringRecvd[c][o], so
// nothing is reset between calls and a CUDA graph replays with fresh
// values; a rank's sent count equals its successor's received count after
// every call, because every chunk sent in a call is received in it):
//   ready     in the receiver's memory, stored by its predecessor: chunks
//             sent so far; "slot g % slots now holds chunk g" once > g
//   credit    in the sender's memory, stored by its successor: chunks
//             consumed so far; the sender writes chunk g only once
//             credit > g - slots, i.e. chunk g - slots (same slot) is read
// A step: thread 0 waits for ready (a receiving step) and for credit (a
// sending step), fences (acquire), __syncthreads; all threads move the
// chunk (staging read with ld.cg, remote stores plain); __syncthreads (every
// load of the slot done, every store issued); thread 0 stores credit to the
// predecessor and ready to the successor with st.release.sys, which through
// the bar.sync orders the block's loads and stores before them (the same
// cumulativity argument as the barrier in ipc_device.cuh).
// The end: a block waits for the credit of its last chunk, so when a rank's
// kernel is over no peer writes into its memory for this call any more.
// Across calls: each call starts with an all-to-all hello barrier (the
// fingerprint check, ipc_device.cuh) in every channel block, so every rank
// has started this call and hence finished the previous one: no slot of
// the previous call is still being read, and the slot layout may change
// from call to call. The counters simply continue.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ipc/ipc_device.cuh"
#include "ipc/ring_plan.h"

namespace rr {
namespace ipc {

// The counters of channel c's link in ring order `order`.
RR_DEV uint64_t* ringReady(char* base, int c, int order) {
  return reinterpret_cast<uint64_t*>(base + kRingFlagsOffset +
                                     ((size_t(c) * 2 + order) * 2) * kRingFlagStride);
}
RR_DEV uint64_t* ringCredit(char* base, int c, int order) {
  return reinterpret_cast<uint64_t*>(base + kRingFlagsOffset +
                                     ((size_t(c) * 2 + order) * 2 + 1) * kRingFlagStride);
}

// One chunk of one step, all threads: n elements. S: staging (local, from the
// predecessor); X: own input; O: own output; R: the successor's staging.
// Null means absent. K elements per access (1 when in/out are misaligned).
template <class Tr, class Op, bool kAvg, int K>
RR_DEV void ringMove(const char* S, const char* X, char* O, char* R, int64_t n, bool last, int N) {
  using St = typename Tr::S;
  using A = typename Tr::A;
  constexpr int ES = int(sizeof(St));
  constexpr int UB = ES * K;
  constexpr int U = 4;  // accesses in flight per thread and source
  const int64_t units = n / K;
  const bool reduce = S != nullptr && X != nullptr;
  const char* src = S != nullptr ? S : X;
  for (int64_t i0 = threadIdx.x; i0 < units; i0 += int64_t(kThreads) * U) {
    Unit<St, K> s[U], x[U];
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t i = i0 + int64_t(j) * kThreads;
      if (i < units) {
        s[j].raw = ldcg<UB>(src + i * UB);
        if (reduce) x[j].raw = ldcg<UB>(X + i * UB);
      }
    }
#pragma unroll
    for (int j = 0; j < U; ++j) {
      const int64_t i = i0 + int64_t(j) * kThreads;
      if (i >= units) continue;
      if (reduce) {
#pragma unroll
        for (int e = 0; e < K; ++e) {
          A v = Op::f(Tr::up(s[j].e[e]), Tr::up(x[j].e[e]));
          if (kAvg && last) v = Tr::divide(v, N);
          s[j].e[e] = Tr::down(v);
        }
      }
      if (O != nullptr) stg<UB>(O + i * UB, s[j].raw);
      if (R != nullptr) stg<UB>(R + i * UB, s[j].raw);
    }
  }
  if constexpr (K > 1) {
    const int64_t i = units * K + threadIdx.x;  // at most K-1 tail elements
    if (i < n) {
      Unit<St, 1> s1, x1;
      s1.raw = ldcg<ES>(src + i * ES);
      if (reduce) {
        x1.raw = ldcg<ES>(X + i * ES);
        A v = Op::f(Tr::up(s1.e[0]), Tr::up(x1.e[0]));
        if (kAvg && last) v = Tr::divide(v, N);
        s1.e[0] = Tr::down(v);
      }
      if (O != nullptr) stg<ES>(O + i * ES, s1.raw);
      if (R != nullptr) stg<ES>(R + i * ES, s1.raw);
    }
  }
}

template <class Tr, class Op, bool kAvg, int K>
RR_DEV void ringBody(const Args& a, const Epoch& e, BlockState& st) {
  constexpr int64_t ES = sizeof(typename Tr::S);
  const int N = a.nranks, c = blockIdx.x;
  const int order = ringOrderOf(a.ringOrders, c);
  if (threadIdx.x == 0) {  // published to the block by the barrier's __syncthreads
    st.ringSent = __ldcg(&a.ctl->ringSent[c][order]);
    st.ringRecvd = __ldcg(&a.ctl->ringRecvd[c][order]);
  }
  if (!barrier(a, e, e.flagBase + 1, st, true)) return;

  RingShape sh;
  sh.coll = static_cast<RingColl>(a.ringColl);
  sh.nranks = N;
  sh.root = a.ringRoot;
  sh.count = a.count;
  sh.chanElems = a.chanElems;
  sh.chunkElems = a.chunkElems;
  sh.pack = kRingVecBytes / ES > 0 ? kRingVecBytes / ES : 1;
  const int pos = ringPosition(a.rank, order, N);
  const int pred = ringRankAt(pos - 1, order, N), succ = ringRankAt(pos + 1, order, N);
  char* const mine = a.base[a.rank];
  const uint64_t* ready = ringReady(mine, c, order);
  const uint64_t* credit = ringCredit(mine, c, order);
  uint64_t* predCredit = ringCredit(a.base[pred], c, order);
  uint64_t* succReady = ringReady(a.base[succ], c, order);
  const int64_t stage = a.ringOffset + int64_t(c) * a.ringSlots * a.ringSlotBytes;
  char* const stageMine = mine + stage;
  char* const stageSucc = a.base[succ] + stage;

  const int64_t rounds = ringRoundsOf(sh, c);
  const int steps = ringStepsPerRound(sh.coll, N);
  uint64_t gs = st.ringSent, gr = st.ringRecvd;  // the next chunk to send; to receive
  for (int64_t k = 0; k < rounds; ++k) {
    for (int t = 0; t < steps; ++t) {
      const RingMoveAt mv = ringMoveAt(sh, pos, order, c, k, t);
      if (threadIdx.x == 0) {
        bool ok = true;
        if (mv.recv) ok = waitAtLeast(a, ready, gr + 1, st);
        if (ok && mv.send && gs + 1 > uint64_t(a.ringSlots))
          ok = waitAtLeast(a, credit, gs + 1 - uint64_t(a.ringSlots), st);
        fenceAcqRel();
      }
      __syncthreads();
      if (st.fail) return;

      const char* S = mv.recv ? stageMine + int64_t(gr % uint64_t(a.ringSlots)) * a.ringSlotBytes : nullptr;
      char* R = mv.send ? stageSucc + int64_t(gs % uint64_t(a.ringSlots)) * a.ringSlotBytes : nullptr;
      const char* X = mv.useIn ? a.in + mv.inAt * ES : nullptr;
      char* O = mv.toOut ? a.out + mv.outAt * ES : nullptr;
      if (S == nullptr && O == X) O = nullptr;  // in place: the copy onto itself
      ringMove<Tr, Op, kAvg, K>(S, X, O, R, mv.n, mv.last, N);

      __syncthreads();
      if (threadIdx.x == 0) {
        if (mv.recv) storeRelease(predCredit, gr + 1);
        if (mv.send) storeRelease(succReady, gs + 1);
      }
      gr += mv.recv ? 1 : 0;
      gs += mv.send ? 1 : 0;
    }
  }
  // The successor's last credits land in this rank's memory: wait for them,
  // so that once the kernel ends no peer writes here for this call (the
  // memory may be freed by a finalize right after).
  if (threadIdx.x == 0 && (gs == st.ringSent || waitAtLeast(a, credit, gs, st))) {
    a.ctl->ringSent[c][order] = gs;
    a.ctl->ringRecvd[c][order] = gr;
  }
}

template <class Tr, class Op, bool kAvg, int K>
__global__ void __launch_bounds__(kThreads) ringKernel(const __grid_constant__ Args a) {
  RR_BLOCK_STATE(st);
  const Epoch e = startCall(a, st);
  ringBody<Tr, Op, kAvg, K>(a, e, st);
  finishCall(a, e);
}

// ---- host: the ring's part of the arguments ---------------------------------------

inline void setRingPlan(Args& a, const RingPlan& g, int64_t ringOffset,
                        RingColl coll = RingColl::kAllreduce, int root = 0) {
  a.ringColl = static_cast<int>(coll);
  a.ringRoot = root;
  a.barriers = g.barriers;
  a.kind = kKernelRing;
  a.ringOffset = ringOffset;
  a.chanElems = g.chanElems;
  a.chunkElems = g.chunkElems;
  a.ringSlotBytes = g.slotBytes;
  a.ringSlots = g.slots;
  a.ringOrders = g.orders;
}

}  // namespace ipc
}  // namespace rr
