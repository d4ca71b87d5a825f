#include "algo/recursive_doubling.h"

namespace rr {

std::string RecursiveDoublingAlgorithm::refusal(const Call& call, int) const {
  switch (call.coll) {
    case Coll::kAllreduce:
    case Coll::kAllgather:
    case Coll::kBarrier: return std::string();
    default:
      return std::string("recursive_doubling runs allreduce, allgather and barrier, not ") +
             collName(call.coll);
  }
}

void RecursiveDoublingAlgorithm::run(const Call& c, AlgoEnv& env) {
  trace_ = StepTrace();
  trace_.algo = "recursive_doubling";
  traced(trace_, [&] {
    switch (c.coll) {
      case Coll::kAllreduce: allreduce(c, env); break;
      case Coll::kAllgather: allgather(c, env); break;
      case Coll::kBarrier: barrier(env); break;
      default: RR_THROW(ArgumentError, refusal(c, env.transport.size()));
    }
  });
}

void RecursiveDoublingAlgorithm::allreduce(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  Reducer& red = env.reducer;
  const int n = t.size(), r = t.rank();
  const int64_t bytes = bytesOf(c, c.count);
  if (c.count == 0) return;
  if (n == 1) {
    if (c.in != c.out) red.copy(c.out, c.in, static_cast<size_t>(bytes));
    red.finalize(c.out, c.count, c.dtype, c.op, 1);
    return;
  }
  const PowerOfTwoFold fold(n);
  if (fold.sitsOut(r)) {
    // Hand the input to the odd neighbour, which stands for both of us, and
    // take the final result from it.
    trace_.at("fold", 0, 1, r + 1, r + 1);
    sendThenReceive(t, r + 1, c.in, c.out, bytes);
    return;
  }
  char* recv = static_cast<char*>(env.workspace.get(static_cast<size_t>(bytes)));
  const void* cur = c.in;
  if (fold.absorbs(r)) {
    trace_.at("fold", 0, 1, -1, r - 1);
    t.wait(startPair(t, -1, nullptr, 0, r - 1, recv, bytes));
    red.reduce(c.out, recv, c.in, c.count, c.dtype, c.op);  // rank r-1 is the lower group
    cur = c.out;
  }
  // Every step doubles the group whose reduction this rank holds. The whole
  // exchange (send included) completes before out is overwritten, so the
  // buffer being sent is never the one being written.
  const int nr = fold.newRank(r);
  const int steps = ceilLog2(fold.p);
  for (int mask = 1, s = 0; mask < fold.p; mask <<= 1, ++s) {
    const int peer = fold.rankOf(nr ^ mask);
    trace_.at("exchange", s, steps, peer, peer);
    t.wait(startPair(t, peer, cur, bytes, peer, recv, bytes));
    if (nr & mask) red.reduce(c.out, recv, cur, c.count, c.dtype, c.op);
    else red.reduce(c.out, cur, recv, c.count, c.dtype, c.op);
    cur = c.out;
  }
  // Every participant holds the same bits here, so dividing on each keeps them equal.
  red.finalize(c.out, c.count, c.dtype, c.op, n);
  if (fold.absorbs(r)) {
    trace_.at("unfold", 0, 1, r - 1, -1);
    t.wait(startPair(t, r - 1, c.out, bytes, -1, nullptr, 0));
  }
}

void RecursiveDoublingAlgorithm::allgather(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  // Byte offset of block q in out (O(N), a handful of times per step).
  auto offset = [&](int q) {
    int64_t o = 0;
    for (int i = 0; i < q; ++i) o += c.counts[i];
    return o * es;
  };
  char* out = static_cast<char*>(c.out);
  const int64_t mine = offset(r), myBytes = c.counts[r] * es;
  if (myBytes > 0 && c.in != out + mine) env.reducer.copy(out + mine, c.in, static_cast<size_t>(myBytes));
  if (n == 1) return;
  const int64_t total = offset(n);
  // Blocks [a, a+cnt) taken circularly: out itself is the rotated buffer
  // Bruck's algorithm needs, so a range wraps into at most two pieces. Both
  // ends cut the same block range at the same place, so pieces pair up.
  auto addBlocks = [&](XferList& list, int peer, int a, int cnt) {
    if (a + cnt <= n) {
      const int64_t lo = offset(a);
      list.add(peer, out + lo, offset(a + cnt) - lo);
    } else {
      const int64_t lo = offset(a);
      list.add(peer, out + lo, total - lo);
      list.add(peer, out, offset(a + cnt - n));
    }
  };
  // After the step of distance d this rank holds blocks [r, r + 2d).
  const int steps = ceilLog2(n);
  for (int d = 1, s = 0; d < n; d <<= 1, ++s) {
    const int cnt = std::min(d, n - d);
    const int to = (r - d + n) % n, from = (r + d) % n;
    sends_.clear();
    recvs_.clear();
    addBlocks(sends_, to, r, cnt);
    addBlocks(recvs_, from, from, cnt);
    trace_.at("all-gather", s, steps, to, from);
    t.wait(startLists(t, sends_, recvs_));
  }
}

// Round k: a zero-byte message to r + 2^k, one from r - 2^k. After round k
// every rank has heard, directly or not, from the 2^(k+1) ranks before it.
void RecursiveDoublingAlgorithm::barrier(AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const int steps = ceilLog2(n);
  for (int d = 1, s = 0; d < n; d <<= 1, ++s) {
    const int to = (r + d) % n, from = (r - d + n) % n;
    trace_.at("barrier", s, steps, to, from);
    t.wait(startPair(t, to, nullptr, 0, from, nullptr, 0));
  }
}

}  // namespace rr
