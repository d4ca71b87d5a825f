// all_to_all as N-1 pairwise exchanges.
#pragma once

#include "algo/algorithm.h"
#include "algo/steps.h"

namespace rr {

// all_to_all: at step k (1..N-1) rank r sends its block for r+k and receives
// the block from r-k; its own block is copied locally. Steps are
// independent, so a few run at once (the engine's pipeline depth). Block
// sizes come from counts (sent) and recvCounts (received) and may differ
// per pair; every step moves a message, empty or not, so both ends agree.
class PairwiseAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "pairwise"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
};

}  // namespace rr
