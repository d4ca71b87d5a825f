// Device side shared by every CUDA-IPC kernel (one-shot, two-shot, gpu_ring):
// the kernel arguments, raw memory access, the flag primitives, the
// rendezvous barrier with its fingerprint check, and the start and end of a
// launch. Included by ipc_kernels.cuh and ring_kernels.cuh, and by the CPU
// emulator (tests/gpu/ipc_emulator.cc), which defines RR_IPC_EMULATE and
// supplies threadIdx, __syncthreads, __ldcg, atomics and the flag primitives.
//
// Synchronisation (memory layout in ipc_layout.h):
// - A barrier between the blocks with the same index on every rank:
//   __syncthreads (the block's stores are issued), then thread q stores the
//   barrier value into rank q's flags[b][me] with st.release.sys, which
//   through the bar.sync orders every store of the block before it; then it
//   polls its own flags[b][q] until the value is reached and fences
//   (acquire); a final __syncthreads hands that to the whole block. Data
//   written by peers is read with ld.global.cg (L2, never a stale L1 line).
// - Flag values come from the device, not the launch: every block reads
//   Ctl::flagBase and Ctl::calls at its start; the last block of the launch
//   to finish (an atomic count of finished blocks) adds the plan's barriers
//   and one call. Every block read before it counted itself, so none sees
//   the new values; the next launch (stream order) sees them. Each rank
//   advances by the same amounts for the same calls, so ranks agree on the
//   values without the host, and a CUDA graph replays with fresh values.
// - Each call uses values flagBase+1 .. flagBase+barriers. A peer can be at
//   most one barrier ahead of a waiter, so waiting for ">= value" is exact.
// - Fingerprints: the first barrier of every call (the "hello") also stores
//   the call's 64-bit fingerprint and the kernel's kind into the peer's
//   fps[b][me][v & 1] before the flag (same thread, so the release orders
//   it; the kind catches ranks that forced different algorithms). The peer reads it
//   after acquiring the flag. Parity suffices: the writer's next hello is at
//   a value >= v+1 (slot (v+1)&1), and one at v+2 or later needs this rank
//   to pass v+1 first, which it does only after reading. A difference sets
//   AbortInfo (code kAbortMismatch, both fingerprints) and fails the block;
//   blocks that wait elsewhere (a block that exists on one rank only, when
//   the counts differ) see the code at their next poll and give up too. No
//   block moves data before its hello, so no data of different calls meet.
// - A block that gives up still finishes the launch (the count of finished
//   blocks stays right); the host reads AbortInfo once the launch is over.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/fingerprint.h"
#include "ipc/ipc_layout.h"
#include "ipc/ipc_numerics.cuh"

namespace rr {
namespace ipc {

#ifndef RR_IPC_THREADS
#define RR_IPC_THREADS 512
#endif
constexpr int kThreads = RR_IPC_THREADS;
constexpr int kMaxRanks = kIpcMaxRanks;

RR_DEV int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
RR_DEV int64_t imax(int64_t a, int64_t b) { return a < b ? b : a; }

struct Args {
  const char* in;
  char* out;
  int64_t count;
  int rank;
  int nranks;
  char* base[kMaxRanks];      // each rank's allocation as mapped here ([rank]: local)
  int64_t halfBytes;          // the two halves start at kControlBytes
  int barriers;               // per block per launch, the same in every block
  int kind;                   // KernelKind: published beside the fingerprint
  // one-shot / two-shot plan (ipc_plan.h)
  int64_t slotBytes, perBlock, roundElems, segElems, tileElems, rounds;
  // gpu_ring plan (ring_plan.h)
  int64_t ringOffset;         // where the ring staging starts in every allocation
  int64_t chanElems, chunkElems, ringSlotBytes;
  int ringSlots, ringOrders;
  int ringColl, ringRoot;     // RingColl; broadcast's root
  Ctl* ctl;                   // this rank's, local
  volatile AbortInfo* info;   // host-mapped
  uint64_t timeoutNs;
  // The call's fingerprint: `tag` as the host packed it, or, when
  // tagFromDevice (graph capture), `shape` numbered by Ctl::calls.
  uint64_t tag;
  int tagFromDevice;
  Fingerprint shape;
};

// What a block knows about its launch after startCall.
struct Epoch {
  uint64_t flagBase;
  uint64_t calls;
  uint64_t tag;
  int64_t half;  // byte offset of this call's half from kControlBytes
};

struct BlockState {
  volatile int fail;
  uint64_t flagBase, calls, ringSent, ringRecvd;  // the last two: gpu_ring's, of its link
};
#ifndef RR_IPC_EMULATE
#define RR_BLOCK_STATE(name) __shared__ BlockState name
#else
#define RR_BLOCK_STATE(name) BlockState& name = *emuBlockState<BlockState>()
#endif

// ---- raw memory access --------------------------------------------------------

template <int B> struct RawT;
template <> struct RawT<16> { using T = uint4; };
template <> struct RawT<8> { using T = uint2; };
template <> struct RawT<4> { using T = unsigned int; };
template <> struct RawT<2> { using T = unsigned short; };
template <> struct RawT<1> { using T = unsigned char; };

// Through L2 only: peers' stores land in this GPU's L2, and a line kept in
// L1 from an earlier round would be stale.
template <int B>
RR_DEV typename RawT<B>::T ldcg(const char* p) {
  return __ldcg(reinterpret_cast<const typename RawT<B>::T*>(p));
}
template <int B>
RR_DEV void stg(char* p, typename RawT<B>::T v) {
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

RR_DEV uint64_t* flagsOf(char* base) { return reinterpret_cast<uint64_t*>(base + kFlagsOffset); }
// {fingerprint, kernel kind} that `writer` published for its hello at v.
RR_DEV uint64_t* fpSlot(char* base, int block, int writer, uint64_t v) {
  return reinterpret_cast<uint64_t*>(base + kFpOffset) +
         ((size_t(block) * kMaxRanks + writer) * 2 + (v & 1)) * 2;
}

// ---- giving up --------------------------------------------------------------------

RR_DEV void reportMismatch(const Args& a, int peer, uint64_t mine, uint64_t theirs,
                           int theirKind) {
  // One thread describes it; the code is set by all (a race among equals).
  if (atomicCAS(&a.ctl->claim, 0u, 1u) == 0u) {
    a.info->peer = peer;
    a.info->block = int(blockIdx.x);
    a.info->kindMine = a.kind;
    a.info->kindTheirs = theirKind;
    a.info->mine = mine;
    a.info->theirs = theirs;
    __threadfence_system();
  }
  if (a.info->code == kAbortNone) a.info->code = kAbortMismatch;
  __threadfence_system();
}

// One thread waits until *p >= v. False (and st.fail set) on a timeout or
// once any block of this rank has given up.
RR_DEV bool waitAtLeast(const Args& a, const uint64_t* p, uint64_t v, BlockState& st) {
  if (loadRelaxed(p) >= v) return true;
  const uint64_t start = globalTimer();
  for (unsigned spins = 1;; ++spins) {
    if (loadRelaxed(p) >= v) return true;
    if ((spins & 1023u) != 0) continue;
    const int code = a.info->code;
    if (code != kAbortNone || globalTimer() - start > a.timeoutNs) {
      if (code == kAbortNone) a.info->code = kAbortTimeout;
      __threadfence_system();
      st.fail = 1;
      return false;
    }
  }
}

// Rendezvous of block blockIdx.x on every rank at value v; `hello` also
// publishes and checks the fingerprint. False when this block gave up.
RR_DEV bool barrier(const Args& a, const Epoch& e, uint64_t v, BlockState& st, bool hello) {
  __syncthreads();
  const int q = threadIdx.x;
  if (q < a.nranks && q != a.rank) {
    if (hello) {
      uint64_t* slot = fpSlot(a.base[q], blockIdx.x, a.rank, v);
      slot[0] = e.tag;
      slot[1] = uint64_t(a.kind);
    }
    storeRelease(flagsOf(a.base[q]) + blockIdx.x * kMaxRanks + a.rank, v);
    const bool ok = waitAtLeast(a, flagsOf(a.base[a.rank]) + blockIdx.x * kMaxRanks + q, v, st);
    fenceAcqRel();
    if (ok && hello) {
      const uint64_t* slot = fpSlot(a.base[a.rank], blockIdx.x, q, v);
      const uint64_t theirs = loadRelaxed(slot);
      const int theirKind = int(loadRelaxed(slot + 1));
      if (theirs != e.tag || theirKind != a.kind) {
        reportMismatch(a, q, e.tag, theirs, theirKind);
        st.fail = 1;
      }
    }
  }
  __syncthreads();
  return st.fail == 0;
}

// ---- a launch ---------------------------------------------------------------------

RR_DEV Epoch startCall(const Args& a, BlockState& st) {
  if (threadIdx.x == 0) {
    st.fail = 0;
    st.flagBase = __ldcg(&a.ctl->flagBase);
    st.calls = __ldcg(&a.ctl->calls);
  }
  __syncthreads();
  Epoch e;
  e.flagBase = st.flagBase;
  e.calls = st.calls;
  e.half = int64_t(e.calls & 1) * a.halfBytes;
  if (a.tagFromDevice) {
    Fingerprint f = a.shape;
    f.seq = e.calls;
    e.tag = fp::pack(f);
  } else {
    e.tag = a.tag;
  }
  return e;
}

RR_DEV void finishCall(const Args& a, const Epoch& e) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned before = atomicAdd(&a.ctl->done, 1u);
    if (before == gridDim.x - 1) {
      a.ctl->done = 0;
      a.ctl->flagBase = e.flagBase + uint64_t(a.barriers);
      a.ctl->calls = e.calls + 1;
      __threadfence();
    }
  }
}

}  // namespace ipc
}  // namespace rr
