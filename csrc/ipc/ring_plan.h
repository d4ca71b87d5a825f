// Pure arithmetic of the GPU ring (ring_kernels.cuh): how a call splits into
// channels, rounds, segments and chunks, and which segment each step of the
// ring moves. No CUDA here, so the schedule can be checked on any machine;
// every rank computes the same plan from the same inputs.
//
// count elements -> `channels` contiguous slices of chanElems (the last one
// shorter); each channel is an independent ring run by one thread block.
// A channel's slice goes in rounds of N * chunkElems elements; a round is cut
// into N segments of segElems (the last round re-cut evenly, so it is no
// sliver), each a multiple of 16 bytes except where the count ends. One
// round is 2N-1 steps of the ring (ringStepKind), each moving one segment's
// chunk between ring neighbours through a staging slot of the receiver.
//
// reduce_scatter, allgather and broadcast run on the same machinery
// (ringMoveAt): the channels split one rank's block (reduce_scatter,
// allgather) or the whole buffer (broadcast), a round is one chunk of every
// block (N steps) or one chunk of the buffer (1 step along the chain from
// the root).
#pragma once

#include <algorithm>
#include <cstdint>

// The schedule below also runs in the kernels.
#if defined(__CUDACC__)
#define RR_RING_HD __host__ __device__
#else
#define RR_RING_HD
#endif

namespace rr {

constexpr int kRingVecBytes = 16;

struct RingPlan {
  int channels = 1;
  int64_t chanElems = 0;   // elements per channel slice (a multiple of the 16-byte pack)
  int64_t chunkElems = 0;  // elements per segment per round, at most one slot
  int64_t slotBytes = 0;   // stride between staging slots
  int slots = 4;           // slots per channel: how far a sender may run ahead
  int orders = 1;          // 1: every channel r -> r+1; 2: odd channels run r -> r-1
  int barriers = 1;        // the hello; flow control uses the ring counters
};

struct RingPlanInput {
  int64_t count = 0;        // elements, >= 0
  int64_t elemBytes = 4;
  int nranks = 2;
  int maxChannels = 32;
  int64_t chunkBytes = 256 << 10;    // wanted slot size
  int slots = 4;
  int64_t stagingBytes = 32 << 20;   // the ring region of one rank
  int64_t minChannelBytes = 256 << 10;
  int orders = 1;
};

RR_RING_HD inline int64_t ringCeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
RR_RING_HD inline int64_t ringMin(int64_t a, int64_t b) { return a < b ? a : b; }
RR_RING_HD inline int64_t ringMax(int64_t a, int64_t b) { return a < b ? b : a; }

inline RingPlan planRing(const RingPlanInput& in) {
  RingPlan g;
  const int64_t es = in.elemBytes;
  const int64_t pack = kRingVecBytes / es > 0 ? kRingVecBytes / es : 1;
  g.slots = std::max(2, in.slots);
  g.orders = in.orders == 2 ? 2 : 1;
  const int64_t bytes = in.count * es;
  int64_t c = std::max<int64_t>(1, std::min<int64_t>(in.maxChannels, ringCeilDiv(bytes, in.minChannelBytes)));
  const int64_t packs = ringCeilDiv(in.count, pack);
  c = std::max<int64_t>(1, std::min(c, packs));
  g.chanElems = ringCeilDiv(packs, c) * pack;
  g.channels = in.count > 0 ? static_cast<int>(ringCeilDiv(in.count, g.chanElems)) : 1;
  // Slots are carved for this call's channels; every call's hello barrier
  // makes sure no rank still reads the previous call's layout.
  const int64_t perSlot = in.stagingBytes / (int64_t(g.channels) * g.slots);
  const int64_t slot = std::max<int64_t>(kRingVecBytes, std::min(in.chunkBytes, perSlot)) /
                       kRingVecBytes * kRingVecBytes;
  g.slotBytes = slot;
  g.chunkElems = std::max<int64_t>(pack, slot / es / pack * pack);
  return g;
}

// Elements of channel c's slice (chanElems from the plan).
RR_RING_HD inline int64_t ringChannelElems(int64_t chanElems, int64_t count, int c) {
  return ringMax(0, ringMin(chanElems, count - int64_t(c) * chanElems));
}

RR_RING_HD inline int64_t ringRounds(int64_t chunkElems, int64_t m, int nranks) {
  return m > 0 ? ringCeilDiv(m, int64_t(nranks) * chunkElems) : 0;
}

// Round k of a slice of m elements: its first element and its segment length.
struct RingRound {
  int64_t base = 0;
  int64_t n = 0;
  int64_t segElems = 0;
};
// Segment q of the round is [q * segElems, min((q+1) * segElems, n)), maybe empty.
RR_RING_HD inline RingRound ringRound(int64_t chunkElems, int64_t m, int nranks, int64_t k,
                                     int64_t pack) {
  RingRound r;
  r.base = k * nranks * chunkElems;
  r.n = ringMin(int64_t(nranks) * chunkElems, m - r.base);
  r.segElems = ringCeilDiv(ringCeilDiv(r.n, nranks), pack) * pack;
  return r;
}

// Step t (0 .. 2N-2) of a round at ring position p moves segment (p - t) mod N:
//   t = 0            send        the raw input segment p
//   t = 1 .. N-2     recvReduceSend       partial from the predecessor, op own input, onward
//   t = N-1          recvReduceCopySend   the last operand: final (avg divides), to out and onward
//   t = N .. 2N-3    recvCopySend         a final segment: to out and onward
//   t = 2N-2         recvCopy             the last final segment: to out
// Send t is received as step t+1 by the successor (position p+1), which
// therefore works on the same segment: (p+1) - (t+1) = p - t.
enum class RingStep : int { kSend, kRecvReduceSend, kRecvReduceCopySend, kRecvCopySend, kRecvCopy };

RR_RING_HD inline RingStep ringStepKind(int t, int nranks) {
  if (t == 0) return RingStep::kSend;
  if (t < nranks - 1) return RingStep::kRecvReduceSend;
  if (t == nranks - 1) return RingStep::kRecvReduceCopySend;
  if (t < 2 * nranks - 2) return RingStep::kRecvCopySend;
  return RingStep::kRecvCopy;
}

RR_RING_HD inline int ringSegment(int pos, int t, int nranks) { return ((pos - t) % nranks + nranks) % nranks; }

// Ring order o: 0 is r -> r+1, 1 is r -> r-1 (every link's other direction).
RR_RING_HD inline int ringPosition(int rank, int order, int nranks) {
  return order == 0 ? rank : (nranks - rank) % nranks;
}
RR_RING_HD inline int ringRankAt(int pos, int order, int nranks) {
  const int p = ((pos % nranks) + nranks) % nranks;
  return order == 0 ? p : (nranks - p) % nranks;
}
RR_RING_HD inline int ringOrderOf(int orders, int channel) { return orders == 2 ? (channel & 1) : 0; }

// ---- every collective of the ring kernel --------------------------------------

// Codes as they travel in the kernel arguments.
enum class RingColl : int { kAllreduce = 0, kReduceScatter = 1, kAllgather = 2, kBroadcast = 3 };

// A call as the ring kernel sees it. count: elements of in (allreduce,
// reduce_scatter, broadcast) or of one rank's block (allgather, out holding
// N blocks in rank order). A reduce_scatter's in holds N blocks as
// RingSchedule cuts them: the first count % N one element longer.
struct RingShape {
  RingColl coll = RingColl::kAllreduce;
  int nranks = 2;
  int root = 0;  // broadcast
  int64_t count = 0;
  int64_t chanElems = 0, chunkElems = 0, pack = 1;  // from the plan
};

RR_RING_HD inline int64_t ringBlockElems(int64_t count, int n, int b) {
  return count / n + (b < count % n ? 1 : 0);
}
RR_RING_HD inline int64_t ringBlockOffset(int64_t count, int n, int b) {
  return int64_t(b) * (count / n) + ringMin(b, count % n);
}

// What the channels split (planRing's count): the buffer, or the longest block.
RR_RING_HD inline int64_t ringSplitElems(RingColl coll, int64_t count, int n) {
  return coll == RingColl::kReduceScatter ? ringCeilDiv(count, n) : count;
}
RR_RING_HD inline int ringStepsPerRound(RingColl coll, int n) {
  return coll == RingColl::kAllreduce ? 2 * n - 1 : coll == RingColl::kBroadcast ? 1 : n;
}
// Rounds of channel c, the same on every rank.
RR_RING_HD inline int64_t ringRoundsOf(const RingShape& s, int c) {
  const int64_t m = ringChannelElems(s.chanElems, ringSplitElems(s.coll, s.count, s.nranks), c);
  if (s.coll == RingColl::kAllreduce) return ringRounds(s.chunkElems, m, s.nranks);
  return m > 0 ? ringCeilDiv(m, s.chunkElems) : 0;
}

// True when 16-byte accesses reach every element the kernel addresses: the
// pointers on 16 bytes, and so every block of a reduce_scatter's in or an
// allgather's out.
RR_RING_HD inline bool ringVectorOk(RingColl coll, uintptr_t in, uintptr_t out, int64_t count,
                                    int n, int64_t elemBytes) {
  if (in % kRingVecBytes != 0 || out % kRingVecBytes != 0) return false;
  if (coll == RingColl::kReduceScatter)
    return count % n == 0 && (count / n * elemBytes) % kRingVecBytes == 0;
  if (coll == RingColl::kAllgather) return (count * elemBytes) % kRingVecBytes == 0;
  return true;
}

// One step's move at one rank. A send at step t is received by the
// successor at step t+1 (t for broadcast, one step per round) as the same
// elements, so every link carries as many chunks each way as it is sent.
struct RingMoveAt {
  int64_t inAt = 0, outAt = 0, n = 0;  // elements
  bool recv = false;   // reads the chunk the predecessor put in this rank's slot
  bool send = false;   // stores its result into the successor's slot
  bool useIn = false;  // reads in at inAt (folded with the received chunk when recv)
  bool toOut = false;  // writes out at outAt
  bool last = false;   // the final operand of a fold: avg divides
};

RR_RING_HD inline int64_t ringChunkAt(const RingShape& s, int64_t m, int64_t k) {
  return ringMax(0, ringMin(s.chunkElems, m - k * s.chunkElems));
}

// Round k, step t of channel c at ring position pos (ring order `order`).
RR_RING_HD inline RingMoveAt ringMoveAt(const RingShape& s, int pos, int order, int c, int64_t k,
                                        int t) {
  RingMoveAt mv;
  const int N = s.nranks;
  const int64_t lo = int64_t(c) * s.chanElems, base = k * s.chunkElems;
  switch (s.coll) {
    case RingColl::kAllreduce: {
      const RingRound rd = ringRound(s.chunkElems, ringChannelElems(s.chanElems, s.count, c), N, k, s.pack);
      const int64_t sLo = int64_t(ringSegment(pos, t, N)) * rd.segElems;
      const RingStep kind = ringStepKind(t, N);
      mv.n = ringMax(0, ringMin(rd.segElems, rd.n - sLo));
      mv.inAt = mv.outAt = lo + rd.base + sLo;
      mv.recv = t > 0;
      mv.send = t < 2 * N - 2;
      mv.useIn = kind == RingStep::kSend || kind == RingStep::kRecvReduceSend ||
                 kind == RingStep::kRecvReduceCopySend;
      mv.toOut = kind != RingStep::kSend && kind != RingStep::kRecvReduceSend;
      mv.last = kind == RingStep::kRecvReduceCopySend;
      break;
    }
    case RingColl::kReduceScatter: {
      // Block b is folded along the ring from the rank after its owner to the owner.
      const int b = ringRankAt(pos - 1 - t, order, N);
      mv.n = ringChunkAt(s, ringChannelElems(s.chanElems, ringBlockElems(s.count, N, b), c), k);
      mv.inAt = ringBlockOffset(s.count, N, b) + lo + base;
      mv.outAt = lo + base;
      mv.recv = t > 0;
      mv.send = t < N - 1;
      mv.useIn = true;
      mv.toOut = mv.last = t == N - 1;
      break;
    }
    case RingColl::kAllgather: {
      // Block b travels from its owner once round the ring.
      const int b = ringRankAt(pos - t, order, N);
      mv.n = ringChunkAt(s, ringChannelElems(s.chanElems, s.count, c), k);
      mv.inAt = lo + base;
      mv.outAt = int64_t(b) * s.count + lo + base;
      mv.recv = t > 0;
      mv.send = t < N - 1;
      mv.useIn = t == 0;
      mv.toOut = true;
      break;
    }
    case RingColl::kBroadcast: {
      // A chain from the root: distance d along the ring.
      const int d = ((pos - ringPosition(s.root, order, N)) % N + N) % N;
      mv.n = ringChunkAt(s, ringChannelElems(s.chanElems, s.count, c), k);
      mv.inAt = mv.outAt = lo + base;
      mv.recv = d > 0;
      mv.send = d < N - 1;
      mv.useIn = d == 0;
      mv.toOut = true;
      break;
    }
  }
  return mv;
}

}  // namespace rr
