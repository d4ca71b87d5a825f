// The one place that picks an algorithm for a call, and can say why.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algo/algorithm.h"
#include "algo/call.h"

namespace rr {

// Everything the choice depends on besides the call: the same on every rank.
struct SelectPolicy {
  // RINGREDUCE_ALGO: forces this algorithm for the collectives it serves;
  // empty for the automatic choice. A call's own `algo` wins over it.
  std::string forced;
  // Host all-reduces of at most this many bytes take a latency algorithm
  // (recursive doubling, or gathering whole inputs); 0 turns that off.
  int64_t smallBytes = 64 << 10;
  // Up to this many bytes a power-of-two world takes recursive halving and
  // doubling (Rabenseifner) instead of the ring: fewer dependent steps, the
  // same bytes per link. 0 turns it off.
  int64_t mediumBytes = 0;
  // Device all-reduces of at most this many bytes take the IPC one-shot;
  // 0 means 1 MiB / (N - 1).
  int64_t oneShotBytes = 0;
  // Device all-reduces from this many bytes take the GPU ring kernel where
  // offered (on more than two GPUs; two GPUs keep the two-shot, which moves
  // the same bytes with fewer steps). 0: never by size.
  int64_t gpuRingBytes = 64 << 20;
  // Host all-reduces of at most this many bytes go through the ranks' shared
  // memory when every rank is on one machine (0: any size).
  int64_t shmBytes = 0;
  // Of those, up to this many bytes take the one-shot (every rank folds all
  // inputs); 0 means 4 KiB / (N - 1).
  int64_t shmOneShotBytes = 0;
};

struct Choice {
  Algorithm* algo = nullptr;
  std::string why;  // "recursive_doubling: 4096 B <= small_bytes (65536 B), 4 ranks: log2(N) dependent steps"
};

// Picks from `offered` (an engine's algorithms). A forced algorithm that is
// not offered, or that refuses the call, is an ArgumentError naming the
// reason: a forced choice never silently becomes another.
// `explain` fills Choice::why (it costs string work, so calls skip it).
Choice selectAlgorithm(const Call& call, int worldSize, const std::vector<Algorithm*>& offered,
                       const SelectPolicy& policy, bool explain = false);

// The selector's answer is a pure function of the call's shape, the offered
// algorithms and the policy; training loops repeat one shape, so the last
// answer per cache is kept. Bump the epoch when the policy changes.
class ChoiceCache {
 public:
  Algorithm* choose(const Call& call, int worldSize, const std::vector<Algorithm*>& offered,
                    const SelectPolicy& policy, uint64_t policyEpoch);

 private:
  Algorithm* algo_ = nullptr;
  const std::vector<Algorithm*>* offered_ = nullptr;
  Coll coll_ = Coll::kAllreduce;
  DType dtype_ = DType::kFloat32;
  ReduceOp op_ = ReduceOp::kSum;
  int64_t count_ = 0;
  int root_ = 0;
  uint64_t epoch_ = 0;
};

}  // namespace rr
