#include "algo/ring.h"

#include "algo/steps.h"
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

// reduce for large messages: a ring reduce-scatter leaves every rank owning
// one final segment (the root's lands straight in its out), then every rank
// sends its segment to the root. The root posts the segment receives only
// after the ring is done, so they pair after the ring's own messages.
void reduceToRoot(Ring& ring, const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const size_t es = dtypeSize(c.dtype);
  if (c.count == 0) return;
  const RingSchedule sched(c.count, n, 1);
  const Span own = sched.segment(r);
  char* seg = r == c.root ? static_cast<char*>(c.out) + own.offset * es
                          : static_cast<char*>(env.workspace.getSecond(own.count * es));
  ring.reduceScatter(c.in, seg, c.count, c.dtype, c.op);
  if (n == 1) return;
  try {
    if (r != c.root) {
      Xfer x{c.root, seg, own.count * es};
      t.wait(t.start(&x, 1, nullptr, 0));
      return;
    }
    XferList recvs;
    for (int q = 0; q < n; ++q) {
      const Span s = sched.segment(q);
      if (q != r) recvs.add(q, static_cast<char*>(c.out) + s.offset * es, s.count * static_cast<int64_t>(es));
    }
    t.wait(t.start(nullptr, 0, recvs.data(), recvs.size()));
  } catch (Error& e) {
    e.addContext(std::string("ring reduce: sending the segments to root ") + std::to_string(c.root));
    throw;
  }
}

}  // namespace

std::string RingAlgorithm::refusal(const Call& call, int) const {
  switch (call.coll) {
    case Coll::kAllreduce:
    case Coll::kReduceScatter:
    case Coll::kAllgather:
    case Coll::kBroadcast:
    case Coll::kBarrier:
    case Coll::kReduce: return std::string();
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
    case Coll::kReduce: reduceToRoot(ring, c, env); break;
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
