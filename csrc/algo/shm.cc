#include "algo/shm.h"

#include <algorithm>

#include "common/errors.h"

namespace rr {

std::string ShmAllreduceAlgorithm::refusal(const Call& call, int worldSize) const {
  if (call.coll != Coll::kAllreduce)
    return std::string(name()) + " runs allreduce only, not " + collName(call.coll);
  if (call.device >= 0) return std::string(name()) + " moves host memory only";
  if (worldSize > 1 && (!*world_ || (*world_)->size() != worldSize))
    return std::string(name()) + " needs every rank on one machine, in one shared-memory "
                                 "segment (none was attached: see RINGREDUCE_SHM)";
  return std::string();
}

void ShmAllreduceAlgorithm::run(const Call& c, AlgoEnv& env) {
  const std::string no = refusal(c, env.transport.size());
  if (!no.empty()) RR_THROW(ArgumentError, no);
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  if (env.transport.size() == 1) {  // nothing to share
    if (c.in != c.out) env.reducer.copy(c.out, c.in, static_cast<size_t>(c.count * es));
    env.reducer.finalize(c.out, c.count, c.dtype, c.op, 1);
    return;
  }
  ShmWorld& w = **world_;
  // Whole cache lines per round, so slices and rounds start aligned.
  const int64_t perRound = std::max<int64_t>(1, (w.roundBytes() / es) / 64 * 64);
  const int64_t rounds = (c.count + perRound - 1) / perRound;
  int64_t first = 0;
  try {
    for (; first < c.count; first += perRound)
      round(w, c, env, first, std::min(perRound, c.count - first));
  } catch (Error& e) {
    e.addContext(std::string(name()) + " step " + std::to_string(first / perRound + 1) + "/" +
                 std::to_string(rounds) + ", " + std::to_string(first * es) + " of " +
                 std::to_string(c.count * es) + " bytes done");
    throw;
  }
}

// One round: elements [first, first + count) of the call.
void ShmAllreduceAlgorithm::round(ShmWorld& w, const Call& c, AlgoEnv& env, int64_t first,
                                  int64_t count) {
  Reducer& red = env.reducer;
  const int n = w.size(), r = w.rank();
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  const uint64_t k = w.nextRound();
  red.copy(w.input(r, k), static_cast<const char*>(c.in) + first * es, static_cast<size_t>(count * es));
  w.publish(ShmWorld::kArrived, k, env.fingerprint);
  w.waitAll(ShmWorld::kArrived, k, env.fingerprint, env.transport, name());
  char* out = static_cast<char*>(c.out) + first * es;
  // dst = in_0 op in_1 op ... op in_{n-1} over [lo, lo + m), rank order.
  auto fold = [&](char* dst, int64_t lo, int64_t m) {
    if (m <= 0) return;
    const int64_t off = lo * es;
    if (n == 1) red.copy(dst, w.input(0, k) + off, static_cast<size_t>(m * es));
    else red.reduce(dst, w.input(0, k) + off, w.input(1, k) + off, m, c.dtype, c.op);
    for (int q = 2; q < n; ++q) red.reduce(dst, dst, w.input(q, k) + off, m, c.dtype, c.op);
    red.finalize(dst, m, c.dtype, c.op, n);
  };
  if (!twoShot_) {
    fold(out, 0, count);
    return;
  }
  // Slice q: [q * per, (q + 1) * per), whole lines, the last ones maybe empty.
  const int64_t line = std::max<int64_t>(1, 64 / es);
  const int64_t per = ((count + n - 1) / n + line - 1) / line * line;
  auto lo = [&](int q) { return std::min<int64_t>(count, q * per); };
  fold(w.result(r, k) + lo(r) * es, lo(r), lo(r + 1) - lo(r));
  w.publish(ShmWorld::kReduced, k, 0);
  w.waitAll(ShmWorld::kReduced, k, 0, env.transport, name());
  for (int q = 0; q < n; ++q)
    if (lo(q + 1) > lo(q))
      red.copy(out + lo(q) * es, w.result(q, k) + lo(q) * es,
               static_cast<size_t>((lo(q + 1) - lo(q)) * es));
}

}  // namespace rr
