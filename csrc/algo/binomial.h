// A binomial tree: broadcast in ceil(log2 N) rounds.
#pragma once

#include "algo/algorithm.h"
#include "algo/steps.h"

namespace rr {

// broadcast, any N and any root. Ranks are numbered relative to the root;
// relative rank v receives from v minus its lowest set bit and sends to
// v + 2^k for every 2^k below that bit, the largest subtree first. Large
// messages travel in chunks: a rank forwards chunk c to its children while
// chunk c+1 arrives from its parent.
class BinomialAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "binomial"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
  XferList sends_;
};

}  // namespace rr
