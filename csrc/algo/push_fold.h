// Push, fold, pull: the pattern shared by reduce-to-root and the parameter
// servers. The vector is cut into S shards (the ring's cut); shard s lives on
// server rank (firstServer + s) mod N. Every rank pushes each shard to its
// server; the server folds the N copies in rank order 0..N-1 (so the bits
// depend only on the inputs) and, when pulling, sends the result to every
// rank. Shards travel in chunks, so a server folds chunk c while chunk c+1
// arrives and chunk c-1 goes back out.
#pragma once

#include "algo/algorithm.h"
#include "algo/steps.h"

namespace rr {

struct PushFoldPlan {
  int shards = 1;       // S, 1..N
  int firstServer = 0;  // the rank serving shard 0
  bool pull = true;     // false: results stay on the servers (reduce)
};

class PushFold {
 public:
  // Reduces c.in over all ranks into c.out on the servers (and, when
  // pulling, everywhere). Ranks that are no server and do not pull may pass
  // a null c.out.
  void run(const Call& c, AlgoEnv& env, const PushFoldPlan& plan, StepTrace& trace);

 private:
  XferList sends_, recvs_;
};

}  // namespace rr
