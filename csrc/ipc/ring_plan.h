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

}  // namespace rr
