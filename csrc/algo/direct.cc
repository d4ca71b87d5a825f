#include "algo/direct.h"

namespace rr {

std::string DirectAlgorithm::refusal(const Call& call, int) const {
  switch (call.coll) {
    case Coll::kReduce:
    case Coll::kGather:
    case Coll::kScatter: return std::string();
    default:
      return std::string("direct runs reduce, gather and scatter, not ") + collName(call.coll) +
             (call.coll == Coll::kSend || call.coll == Coll::kRecv
                  ? " (point-to-point runs in the communicator)"
                  : "");
  }
}

void DirectAlgorithm::run(const Call& c, AlgoEnv& env) {
  trace_ = StepTrace();
  trace_.algo = "direct";
  traced(trace_, [&] {
    switch (c.coll) {
      case Coll::kReduce: {
        PushFoldPlan plan;
        plan.shards = 1;
        plan.firstServer = c.root;
        plan.pull = false;
        pushFold_.run(c, env, plan, trace_);
        break;
      }
      case Coll::kGather:
      case Coll::kScatter: gatherOrScatter(c, env); break;
      default: RR_THROW(ArgumentError, refusal(c, env.transport.size()));
    }
  });
}

// The root posts every transfer in one exchange; each other rank posts one.
void DirectAlgorithm::gatherOrScatter(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  const bool gather = c.coll == Coll::kGather;
  // On the root, the side holding all blocks; elsewhere, this rank's block.
  char* all = static_cast<char*>(gather ? c.out : const_cast<void*>(c.in));
  char* own = static_cast<char*>(gather ? const_cast<void*>(c.in) : c.out);
  const int64_t ownBytes = c.counts[r] * es;
  if (r != c.root) {
    trace_.at(gather ? "gather" : "scatter", 0, 1, gather ? c.root : -1, gather ? -1 : c.root);
    Xfer x{c.root, own, static_cast<size_t>(ownBytes)};
    t.wait(gather ? t.start(&x, 1, nullptr, 0) : t.start(nullptr, 0, &x, 1));
    return;
  }
  xfers_.clear();
  int64_t off = 0;
  for (int q = 0; q < n; ++q) {
    const int64_t b = c.counts[q] * es;
    if (q == r) {
      if (b > 0) env.reducer.copy(gather ? all + off : own, gather ? own : all + off, static_cast<size_t>(b));
    } else {
      xfers_.add(q, all + off, b);
    }
    off += b;
  }
  if (n == 1) return;
  trace_.at(gather ? "gather" : "scatter", 0, 1, -1, -1);
  t.wait(gather ? t.start(nullptr, 0, xfers_.data(), xfers_.size())
                : t.start(xfers_.data(), xfers_.size(), nullptr, 0));
}

}  // namespace rr
