// Pure arithmetic of the IPC all-reduce: which algorithm, how many blocks,
// and how elements map onto slots, rounds, segments and tiles. No CUDA here,
// so the layout can be checked on any machine. Every rank computes the same
// plan from the same inputs; blocks pair up across ranks by index, so any
// difference would pair the wrong bytes.
#pragma once

#include <algorithm>
#include <cstdint>

namespace rr {

constexpr int kIpcVecBytes = 16;
// Minimum share of work per block: one-shot, one 16-byte vector per thread;
// two-shot, two per thread per round.
constexpr int64_t kIpcOneShotBytesPerThread = kIpcVecBytes;
constexpr int64_t kIpcTwoShotBytesPerThread = 2 * kIpcVecBytes;

struct IpcPlan {
  bool oneShot = true;
  int blocks = 1;
  int barriers = 1;        // per block per call; the flag epoch advances by this
  int64_t slotBytes = 0;   // stride between the slots of a half
  int64_t perBlock = 0;    // one-shot: elements per block
  int64_t roundElems = 0;  // two-shot: elements per round = nranks * segElems
  int64_t segElems = 0;
  int64_t tileElems = 0;
  int64_t rounds = 0;
};

struct IpcPlanInput {
  int64_t count = 0;         // elements, >= 0
  int64_t elemBytes = 4;     // 2 or 4
  int nranks = 2;
  int64_t halfBytes = 0;     // bytes of one half of the data area
  int maxBlocks = 1;
  int threads = 512;         // per block
  int algo = 0;              // IpcTuning::Algo
  int64_t oneShotMaxBytes = 0;
  int64_t roundBytes = 0;    // two-shot target per round
};

inline int64_t ipcCeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t ipcRoundUp(int64_t a, int64_t b) { return ipcCeilDiv(a, b) * b; }

inline IpcPlan planIpc(const IpcPlanInput& in) {
  IpcPlan g;
  if (in.count <= 0) {
    // Nothing moves, but the ranks still meet once: the hello barrier
    // compares fingerprints, so a rank whose call differs learns it here.
    g.perBlock = 0;
    return g;
  }
  const int64_t es = in.elemBytes;
  const int64_t pack = kIpcVecBytes / es;  // every split lands on a 16-byte boundary
  const int64_t n = in.nranks;
  const int64_t count = in.count;
  const int64_t bytes = count * es;

  const int64_t oneShotSlot = ipcRoundUp(count, pack) * es;
  const bool fits = n * oneShotSlot <= in.halfBytes;
  g.oneShot = fits && (in.algo == 1 || (in.algo == 0 && bytes <= in.oneShotMaxBytes));
  if (g.oneShot) {
    const int64_t packs = ipcCeilDiv(count, pack);
    int64_t blocks = std::min<int64_t>(
        ipcCeilDiv(bytes, in.threads * kIpcOneShotBytesPerThread), in.maxBlocks);
    blocks = std::max<int64_t>(1, std::min(blocks, packs));
    g.perBlock = ipcCeilDiv(packs, blocks) * pack;
    g.blocks = static_cast<int>(ipcCeilDiv(count, g.perBlock));
    g.slotBytes = oneShotSlot;
    g.barriers = 1;
    return g;
  }
  // Two-shot: a half holds 2N slots (staging, gather) of segElems elements.
  const int64_t roundBytes = std::min<int64_t>(in.roundBytes, in.halfBytes / 2);
  const int64_t segMax = std::max<int64_t>(pack, roundBytes / (n * es) / pack * pack);
  const int64_t rounds0 = ipcCeilDiv(count, n * segMax);
  // Equal rounds, so the last one is not a sliver done by one rank.
  g.segElems = ipcRoundUp(ipcCeilDiv(ipcCeilDiv(count, rounds0), n), pack);
  g.roundElems = n * g.segElems;
  g.rounds = ipcCeilDiv(count, g.roundElems);
  int64_t blocks = std::min<int64_t>(
      ipcCeilDiv(g.segElems * es, in.threads * kIpcTwoShotBytesPerThread), in.maxBlocks);
  blocks = std::max<int64_t>(1, blocks);
  g.tileElems = ipcRoundUp(ipcCeilDiv(g.segElems, blocks), pack);
  g.blocks = static_cast<int>(ipcCeilDiv(g.segElems, g.tileElems));
  g.slotBytes = g.segElems * es;
  g.barriers = static_cast<int>(2 * g.rounds);
  return g;
}

}  // namespace rr
