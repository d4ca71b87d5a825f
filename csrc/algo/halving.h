// Recursive halving (a reduce-scatter in log2(N) steps) and Rabenseifner's
// all-reduce built on it.
#pragma once

#include "algo/algorithm.h"
#include "algo/steps.h"

namespace rr {

// reduce_scatter for power-of-two worlds. The vector is cut into N segments
// exactly as the ring cuts it; at the step of distance d (N/2 first) rank r
// keeps the half of its current segment range that holds segment r, sends
// the other half to r ^ d and combines what arrives. After log2(N) steps
// rank r holds segment r, each element combined in a fixed tree, the
// partner without the bit d first. Other world sizes are refused: the ring
// serves them.
class RecursiveHalvingAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "recursive_halving"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
};

// allreduce = recursive-halving reduce-scatter + recursive-doubling
// all-gather: 2 log2(N) steps moving 2(N-1)/N of the message per rank, the
// ring's bytes with far fewer dependent steps. Any N: a world that is not a
// power of two folds its extra ranks in first (PowerOfTwoFold), which costs
// those ranks one whole message each way.
class RabenseifnerAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "rabenseifner"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
};

}  // namespace rr
