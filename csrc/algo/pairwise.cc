#include "algo/pairwise.h"

namespace rr {

std::string PairwiseAlgorithm::refusal(const Call& call, int) const {
  if (call.coll != Coll::kAllToAll)
    return std::string("pairwise runs all_to_all only, not ") + collName(call.coll);
  return std::string();
}

void PairwiseAlgorithm::run(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  const int n = t.size(), r = t.rank();
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  trace_ = StepTrace();
  trace_.algo = "pairwise";
  const char* in = static_cast<const char*>(c.in);
  char* out = static_cast<char*>(c.out);
  int64_t sendOwn = 0, recvOwn = 0, recvTotal = 0;
  for (int q = 0; q < n; ++q) {
    if (q < r) sendOwn += c.counts[q], recvOwn += c.recvCounts[q];
    recvTotal += c.recvCounts[q];
  }
  // Only this rank knows both sizes of its own block, so only it can tell.
  if (c.counts[r] != c.recvCounts[r])
    RR_THROW(MismatchError, "all_to_all on rank " + std::to_string(r) + " sends itself " +
                                std::to_string(c.counts[r]) + " elements but expects to receive " +
                                std::to_string(c.recvCounts[r]) + " from itself");
  if (c.counts[r] > 0)
    env.reducer.copy(out + recvOwn * es, in + sendOwn * es, static_cast<size_t>(c.counts[r] * es));
  if (n == 1) return;

  // Offsets move with the steps: the destination walks up from r+1 and
  // wraps to 0; the source walks down from r-1 and wraps to N-1.
  int64_t sendOff = sendOwn + c.counts[r], recvOff = recvOwn;
  traced(trace_, [&] {
    window(
        t, n - 1, env.depth,
        [&](int64_t i) {
          const int k = static_cast<int>(i) + 1;
          const int to = (r + k) % n, from = (r - k + n) % n;
          if (to == 0) sendOff = 0;
          if (from == n - 1) recvOff = recvTotal;
          recvOff -= c.recvCounts[from];
          trace_.at("exchange", k - 1, n - 1, to, from);
          auto id = startPair(t, to, in + sendOff * es, c.counts[to] * es, from, out + recvOff * es,
                              c.recvCounts[from] * es);
          sendOff += c.counts[to];
          return id;
        },
        [](int64_t) {});
  });
}

}  // namespace rr
