#include "algo/push_fold.h"

#include "ring/schedule.h"

namespace rr {

void PushFold::run(const Call& c, AlgoEnv& env, const PushFoldPlan& plan, StepTrace& trace) {
  Transport& t = env.transport;
  Reducer& red = env.reducer;
  const int n = t.size(), r = t.rank();
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  if (c.count == 0) return;
  if (n == 1) {
    if (c.in != c.out) red.copy(c.out, c.in, static_cast<size_t>(bytesOf(c, c.count)));
    red.finalize(c.out, c.count, c.dtype, c.op, 1);
    return;
  }
  const int shards = plan.shards;
  auto serverOf = [&](int s) { return (plan.firstServer + s) % n; };
  const int rel = (r - plan.firstServer + n) % n;
  const int mine = rel < shards ? rel : -1;  // the shard this rank serves, if any
  // Every shard is cut into the same number of chunks, so chunk i of every
  // shard moves in exchange i on every rank and the pairs line up.
  const RingSchedule sched(c.count, shards, std::max<int64_t>(1, env.chunkBytes / es));
  const int64_t chunks = sched.chunksPerSegment();
  const int depth = std::max(1, std::min(env.depth, kMaxInFlight));
  const char* in = static_cast<const char*>(c.in);
  char* out = static_cast<char*>(c.out);

  // A server's receive slots: `depth` sets of one chunk per rank (its own
  // slot holds its own chunk when working in place).
  const int64_t slotBytes = align256(sched.chunk(0, 0).count * es);
  char* slots = mine >= 0 ? static_cast<char*>(env.workspace.get(static_cast<size_t>(depth * n * slotBytes)))
                          : nullptr;
  auto slot = [&](int64_t i, int q) { return slots + ((i % depth) * n + q) * slotBytes; };

  auto postPush = [&](int64_t i) {
    sends_.clear();
    recvs_.clear();
    for (int s = 0; s < shards; ++s) {
      if (serverOf(s) == r) continue;
      const Span ch = sched.chunk(s, i);
      sends_.add(serverOf(s), in + ch.offset * es, ch.count * es);
    }
    if (mine >= 0) {
      const Span ch = sched.chunk(mine, i);
      for (int q = 0; q < n; ++q)
        if (q != r) recvs_.add(q, slot(i, q), ch.count * es);
    }
    return startLists(t, sends_, recvs_);
  };

  // Rank order 0..N-1 whatever the server, so every shard's bits depend
  // only on the inputs. In place, this rank's own chunk would be overwritten
  // by the first combine before its turn, unless it is rank 0 or 1 (whose
  // turn is that first combine), so it is copied aside first.
  auto fold = [&](int64_t i) {
    const Span ch = sched.chunk(mine, i);
    if (ch.count == 0) return;
    char* dst = out + ch.offset * es;
    const char* own = in + ch.offset * es;
    if (own == dst && r >= 2) {
      red.copy(slot(i, r), own, static_cast<size_t>(ch.count * es));
      own = slot(i, r);
    }
    auto part = [&](int q) -> const char* { return q == r ? own : slot(i, q); };
    red.reduce(dst, part(0), part(1), ch.count, c.dtype, c.op);
    for (int q = 2; q < n; ++q) {
      t.poll();
      red.reduce(dst, dst, part(q), ch.count, c.dtype, c.op);
    }
    red.finalize(dst, ch.count, c.dtype, c.op, n);
  };

  // Posted only once this chunk's push is complete: in place, the pushed
  // bytes and the pulled result share memory.
  auto postPull = [&](int64_t i) {
    sends_.clear();
    recvs_.clear();
    if (mine >= 0) {
      const Span ch = sched.chunk(mine, i);
      for (int q = 0; q < n; ++q)
        if (q != r) sends_.add(q, out + ch.offset * es, ch.count * es);
    }
    for (int s = 0; s < shards; ++s) {
      if (serverOf(s) == r) continue;
      const Span ch = sched.chunk(s, i);
      recvs_.add(serverOf(s), out + ch.offset * es, ch.count * es);
    }
    return startLists(t, sends_, recvs_);
  };

  const int peer = shards == 1 ? serverOf(0) : -1;
  Transport::ExchangeId push[kMaxInFlight], pull[kMaxInFlight];
  int64_t posted = 0;
  for (int64_t i = 0; i < chunks; ++i) {
    trace.at("push", static_cast<int>(i), static_cast<int>(chunks), peer == r ? -1 : peer, -1);
    for (; posted < chunks && posted < i + depth; ++posted) push[posted % depth] = postPush(posted);
    t.wait(push[i % depth]);
    if (mine >= 0) {
      trace.phase = "fold";
      fold(i);
    }
    if (plan.pull) {
      trace.at("pull", static_cast<int>(i), static_cast<int>(chunks), -1, peer == r ? -1 : peer);
      // Pulls may be `depth` behind: a rank never blocks on its own
      // results while its next pushes could still be posted.
      if (i >= depth) t.wait(pull[i % depth]);
      pull[i % depth] = postPull(i);
    }
  }
  if (plan.pull)
    for (int64_t i = std::max<int64_t>(0, chunks - depth); i < chunks; ++i) {
      trace.at("pull", static_cast<int>(i), static_cast<int>(chunks), -1, peer == r ? -1 : peer);
      t.wait(pull[i % depth]);
    }
}

}  // namespace rr
