#include "algo/parameter_server.h"

namespace rr {

std::string ParameterServerAlgorithm::refusal(const Call& call, int) const {
  if (call.coll != Coll::kAllreduce)
    return std::string("parameter_server runs allreduce only, not ") + collName(call.coll);
  return std::string();
}

void ParameterServerAlgorithm::run(const Call& c, AlgoEnv& env) {
  trace_ = StepTrace();
  trace_.algo = "parameter_server";
  PushFoldPlan plan;
  plan.shards = 1;
  plan.firstServer = 0;
  plan.pull = true;
  traced(trace_, [&] { pushFold_.run(c, env, plan, trace_); });
}

std::string ShardedPsAlgorithm::refusal(const Call& call, int worldSize) const {
  if (call.coll != Coll::kAllreduce)
    return std::string("sharded_ps runs allreduce only, not ") + collName(call.coll);
  if (call.root < 0 || call.root > worldSize)
    return "sharded_ps takes its number of servers from root: 1.." + std::to_string(worldSize) +
           " (0: every rank), got " + std::to_string(call.root);
  return std::string();
}

void ShardedPsAlgorithm::run(const Call& c, AlgoEnv& env) {
  const int n = env.transport.size();
  std::string no = refusal(c, n);
  if (!no.empty()) RR_THROW(ArgumentError, no);
  trace_ = StepTrace();
  trace_.algo = "sharded_ps";
  PushFoldPlan plan;
  plan.shards = c.root > 0 ? c.root : n;
  plan.firstServer = 0;
  plan.pull = true;
  traced(trace_, [&] { pushFold_.run(c, env, plan, trace_); });
}

}  // namespace rr
