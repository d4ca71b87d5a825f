// Straight to or from the root: one hop, no tree.
#pragma once

#include "algo/algorithm.h"
#include "algo/push_fold.h"
#include "algo/steps.h"

namespace rr {

// reduce: every rank sends its input to the root, in chunks; the root folds
// the N inputs in rank order 0..N-1 into out (non-roots may pass no out).
// gather: every rank sends its block (counts[rank]) to the root, which
// receives them straight into place and copies its own.
// scatter: the root sends block q of its input to rank q and copies its own.
class DirectAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "direct"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  void gatherOrScatter(const Call& c, AlgoEnv& env);

  StepTrace trace_;
  PushFold pushFold_;
  XferList xfers_;
};

}  // namespace rr
