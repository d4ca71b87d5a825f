// Parameter servers over the same transports, for the "PS vs ring"
// comparison. Neither is ever chosen automatically; a call names it
// (algo="parameter_server" or algo="sharded_ps").
#pragma once

#include "algo/algorithm.h"
#include "algo/push_fold.h"
#include "algo/steps.h"

namespace rr {

// allreduce with one server, rank 0, which is also a worker: every other rank
// pushes its whole input to it in chunks, it folds them in rank order and
// sends each folded chunk back to everyone. The server moves 2(N-1) whole
// messages, which is the point of the comparison.
class ParameterServerAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "parameter_server"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
  PushFold pushFold_;
};

// allreduce with S servers, BytePS style: the tensor is cut into S shards
// (the ring's cut), rank s serves shard s, every rank pushes shard s to
// rank s and pulls it back once folded. S is every rank by default; a call
// asks for fewer with root = S (1..N): allreduce has no root of its own, and
// the root is part of the call, so every rank must pass the same S.
class ShardedPsAlgorithm : public Algorithm {
 public:
  const char* name() const override { return "sharded_ps"; }
  std::string refusal(const Call& call, int worldSize) const override;
  void run(const Call& call, AlgoEnv& env) override;

 private:
  StepTrace trace_;
  PushFold pushFold_;
};

}  // namespace rr
