#include "comm/identity.h"

namespace rr {

Fingerprint fingerprintOf(const Call& c, int rank, int size) {
  Fingerprint f;
  f.seq = c.seq;
  f.coll = isP2p(c.coll) ? Coll::kSend : c.coll;  // a send pairs with a receive
  f.dtype = c.coll == Coll::kBarrier ? DType::kUInt8 : c.dtype;
  // Calls that reduce nothing carry their root's low bits in the op field,
  // which a narrow wire keeps exactly (the hash keeps only a bit or two).
  f.op = reducesData(c.coll) ? c.op
         : hasRoot(c.coll)   ? static_cast<ReduceOp>(c.root & 15)
                             : ReduceOp::kSum;
  switch (c.coll) {
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter: f.count = fp::hashSizes(c.counts.begin(), c.counts.end()); break;
    case Coll::kAllToAll:  // each rank's splits are its own; the sizes are checked per message
    case Coll::kBarrier:
    case Coll::kBootstrap: f.count = 0; break;
    default: f.count = c.count;
  }
  // Send/recv: the pair of ranks, and the caller's tag (its low bits exact,
  // in the op field, which a point-to-point call does not use otherwise).
  if (isP2p(c.coll)) {
    const int64_t pair = c.coll == Coll::kSend ? int64_t(rank) * size + c.peer
                                               : int64_t(c.peer) * size + rank;
    f.root = static_cast<int64_t>(fp::mix(static_cast<uint64_t>(c.userTag)) ^ static_cast<uint64_t>(pair));
    f.op = static_cast<ReduceOp>(c.userTag & 15);
  }
  else if (hasRoot(c.coll) || c.coll == Coll::kAllreduce)
    f.root = c.root;  // allreduce: 0, or sharded_ps's number of servers
  return f;
}

std::string describeCall(const Call& c, int rank) {
  std::string s = "rank " + std::to_string(rank) + ": " + collName(c.coll) + " #" +
                  std::to_string(c.seq);
  if (c.coll == Coll::kBarrier || c.coll == Coll::kBootstrap) return s;
  s += std::string(" (") + dtypeName(c.dtype);
  if (c.counts.empty()) s += " x " + std::to_string(c.count);
  if (reducesData(c.coll)) s += std::string(", ") + opName(c.op);
  if (hasRoot(c.coll)) s += ", root " + std::to_string(c.root);
  if (isP2p(c.coll))
    s += c.peer == kAnySource ? std::string(", from any rank")
                              : std::string(c.coll == Coll::kSend ? ", to rank " : ", from rank ") +
                                    std::to_string(c.peer);
  if (isP2p(c.coll) && c.userTag != 0) s += ", tag " + std::to_string(c.userTag);
  return s + ")";
}

bool movesNothing(const Call& c) {
  switch (c.coll) {
    case Coll::kBarrier:
    case Coll::kBootstrap:
    case Coll::kAllToAll: return false;  // splits differ per rank; the algorithm exchanges
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter: return sumOf(c.counts) == 0;
    default: return c.count == 0;
  }
}

}  // namespace rr
