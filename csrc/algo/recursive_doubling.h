// Latency algorithms of log2(N) dependent steps, for small messages.
#pragma once

#include "algo/algorithm.h"
#include "algo/steps.h"

namespace rr {

// allreduce: recursive doubling (MPICH's and Open MPI's choice for small
// messages). At step k rank r swaps its whole partial result with rank
// r ^ 2^k and both combine the two, lower group first, so both hold the same
// bits. A world that is not a power of two folds its extra ranks in first
// and hands them the result at the end (PowerOfTwoFold): any N works, at two
// extra steps for the ranks that fold.
// allgather: distances doubling (Bruck's dissemination), any N, in place in
// the output: at step k rank r sends what it holds to r - 2^k and receives
// as many blocks from r + 2^k, so ceil(log2 N) steps whatever N is.
// barrier: dissemination, ceil(log2 N) rounds of zero-byte messages.
class RecursiveDoublingAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "recursive_doubling"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  void allreduce(const Call& c, AlgoEnv& env);
  void allgather(const Call& c, AlgoEnv& env);
  void barrier(AlgoEnv& env);

  StepTrace trace_;
  XferList sends_, recvs_;
};

}  // namespace rr
