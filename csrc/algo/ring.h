// The chunked ring (ring/ring_allreduce.h) and the gather-then-fold latency
// variant, as algorithms.
#pragma once

#include "algo/algorithm.h"

namespace rr {

// allreduce, reduce_scatter, allgather, broadcast (a chain), barrier, and
// reduce (a ring reduce-scatter whose segments then go to the root).
class RingAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "ring"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;
};

// allreduce of small messages: N-1 all-gather steps of whole inputs, then
// every rank folds the N inputs in rank order 0..N-1.
class GatherFoldAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "gather_fold"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;
};

}  // namespace rr
