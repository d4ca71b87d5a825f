#include "algo/ring.h"

#include "ring/ring_allreduce.h"

namespace rr {
namespace {

Ring makeRing(AlgoEnv& env) {
  RingOptions ro;
  ro.chunkBytes = env.chunkBytes;
  ro.depth = env.depth;
  return Ring(env.transport, env.reducer, env.workspace, ro);
}

std::vector<int64_t> blockBytes(const Call& c) {
  std::vector<int64_t> b;
  for (int64_t n : c.counts) b.push_back(bytesOf(c, n));
  return b;
}

}  // namespace

std::string RingAlgorithm::refusal(const Call& call, int) const {
  switch (call.coll) {
    case Coll::kAllreduce:
    case Coll::kReduceScatter:
    case Coll::kAllgather:
    case Coll::kBroadcast:
    case Coll::kBarrier: return std::string();
    default: return std::string("the ring does not run ") + collName(call.coll);
  }
}

void RingAlgorithm::run(const Call& c, AlgoEnv& env) {
  Ring ring = makeRing(env);
  switch (c.coll) {
    case Coll::kAllreduce: ring.allreduce(c.in, c.out, c.count, c.dtype, c.op); break;
    case Coll::kReduceScatter: ring.reduceScatter(c.in, c.out, c.count, c.dtype, c.op); break;
    case Coll::kAllgather: ring.allgather(c.in, c.out, blockBytes(c)); break;
    case Coll::kBroadcast:
      if (c.in != c.out && env.transport.rank() == c.root)
        env.reducer.copy(c.out, c.in, static_cast<size_t>(bytesOf(c, c.count)));
      ring.broadcast(c.out, bytesOf(c, c.count), c.root);
      break;
    case Coll::kBarrier: ring.barrier(); break;
    default: break;
  }
}

std::string GatherFoldAlgorithm::refusal(const Call& call, int) const {
  return call.coll == Coll::kAllreduce ? std::string() : "gather_fold runs allreduce only";
}

void GatherFoldAlgorithm::run(const Call& c, AlgoEnv& env) {
  makeRing(env).allreduceSmall(c.in, c.out, c.count, c.dtype, c.op);
}

}  // namespace rr
