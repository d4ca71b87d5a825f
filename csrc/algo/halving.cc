// Recursive halving, then (for Rabenseifner) recursive doubling. Read
// halve() first: one step per bit of the participant's number, high bit
// first, each step a pipelined exchange of half the current range.
#include "algo/halving.h"

namespace rr {
namespace {

// The ring's cut of `count` elements into p segments: boundary k.
struct SegmentCut {
  int64_t count;
  int p;
  int64_t at(int k) const {
    const int64_t base = count / p, extra = count % p;
    return k * base + std::min<int64_t>(k, extra);
  }
};

// Where halve() reads and writes; offsets are elements of the whole vector.
struct HalvingBuffers {
  const char* first = nullptr;  // the whole vector this participant starts from
  char* acc = nullptr;          // partial results, at acc + (offset - accBase)
  int64_t accBase = 0;
  char* last = nullptr;  // the final step's result, at last + (offset - lastBase)
  int64_t lastBase = 0;
  char* recv = nullptr;  // one step's receives, relative to the kept range
};

// Recursive halving over the fold's P participants; participant nr ends
// holding the reduction of segment nr. At the step of distance `mask` the
// participant keeps the half of its range on its side of bit `mask` and
// sends the other half to the participant across it. Each step is cut into
// chunks so the reduction of one overlaps the transfer of the next; both
// partners cut the two halves into the same number of chunks.
void halve(const Call& c, AlgoEnv& env, StepTrace& trace, const PowerOfTwoFold& fold, int nr,
           const HalvingBuffers& b) {
  Transport& t = env.transport;
  Reducer& red = env.reducer;
  const int64_t es = static_cast<int64_t>(dtypeSize(c.dtype));
  const int64_t chunkElems = std::max<int64_t>(1, env.chunkBytes / es);
  const SegmentCut seg{c.count, fold.p};
  const int steps = ceilLog2(fold.p);
  int lo = 0;
  for (int mask = fold.p / 2, s = 0; mask >= 1; mask >>= 1, ++s) {
    const bool lower = (nr & mask) == 0;
    const int keepLo = lower ? lo : lo + mask, sendLo = lower ? lo + mask : lo;
    const int64_t kOff = seg.at(keepLo), kLen = seg.at(keepLo + mask) - kOff;
    const int64_t sOff = seg.at(sendLo), sLen = seg.at(sendLo + mask) - sOff;
    const int64_t chunks =
        std::max<int64_t>(1, ceilDiv64(std::max(kLen, sLen), chunkElems));
    const bool lastStep = mask == 1;
    auto src = [&](int64_t off) -> const char* {
      return s == 0 ? b.first + off * es : b.acc + (off - b.accBase) * es;
    };
    auto dst = [&](int64_t off) -> char* {
      return lastStep ? b.last + (off - b.lastBase) * es : b.acc + (off - b.accBase) * es;
    };
    const int peer = fold.rankOf(nr ^ mask);
    trace.at("reduce-scatter", s, steps, peer, peer);
    window(
        t, chunks, env.depth,
        [&](int64_t i) {
          const Cut sp = cutPiece(sOff, sLen, chunks, i), kp = cutPiece(kOff, kLen, chunks, i);
          return startPair(t, peer, src(sp.offset), sp.count * es, peer,
                           b.recv + (kp.offset - kOff) * es, kp.count * es);
        },
        [&](int64_t i) {
          const Cut kp = cutPiece(kOff, kLen, chunks, i);
          if (kp.count == 0) return;
          const char* theirs = b.recv + (kp.offset - kOff) * es;
          const char* own = src(kp.offset);
          // The group without bit `mask` is the lower one, on both sides.
          if (lower) red.reduce(dst(kp.offset), own, theirs, kp.count, c.dtype, c.op);
          else red.reduce(dst(kp.offset), theirs, own, kp.count, c.dtype, c.op);
          if (i + 1 < chunks) t.poll();
        });
    lo = keepLo;
  }
}

void localCopy(const Call& c, AlgoEnv& env, int64_t count) {
  if (c.in != c.out) env.reducer.copy(c.out, c.in, static_cast<size_t>(bytesOf(c, count)));
  env.reducer.finalize(c.out, count, c.dtype, c.op, 1);
}

}  // namespace

std::string RecursiveHalvingAlgorithm::refusal(const Call& call, int worldSize) const {
  if (call.coll != Coll::kReduceScatter)
    return std::string("recursive_halving runs reduce_scatter only, not ") + collName(call.coll);
  if (!isPowerOfTwo(worldSize))
    return "recursive_halving needs a power-of-two number of ranks, got " +
           std::to_string(worldSize) + " (the ring serves any number)";
  return std::string();
}

void RecursiveHalvingAlgorithm::run(const Call& c, AlgoEnv& env) {
  const int n = env.transport.size(), r = env.transport.rank();
  trace_ = StepTrace();
  trace_.algo = "recursive_halving";
  if (c.count == 0) return;
  const SegmentCut seg{c.count, n};
  if (n == 1) return localCopy(c, env, c.count);
  std::string no = refusal(c, n);
  if (!no.empty()) RR_THROW(ArgumentError, no);
  const PowerOfTwoFold fold(n);
  // The first step keeps the most: half the segments, the lower half being
  // the longer one. Receives and partial results each need that much.
  const int64_t half = align256(bytesOf(c, seg.at(n / 2)));
  char* base = static_cast<char*>(env.workspace.get(static_cast<size_t>(2 * half)));
  HalvingBuffers b;
  b.first = static_cast<const char*>(c.in);
  b.recv = base;
  b.acc = base + half;
  b.accBase = seg.at(r & (n / 2));  // where the range kept at the first step starts
  b.last = static_cast<char*>(c.out);
  b.lastBase = seg.at(r);
  traced(trace_, [&] { halve(c, env, trace_, fold, r, b); });
  env.reducer.finalize(c.out, seg.at(r + 1) - seg.at(r), c.dtype, c.op, n);
}

std::string RabenseifnerAlgorithm::refusal(const Call& call, int) const {
  if (call.coll != Coll::kAllreduce)
    return std::string("rabenseifner runs allreduce only, not ") + collName(call.coll);
  return std::string();
}

void RabenseifnerAlgorithm::run(const Call& c, AlgoEnv& env) {
  Transport& t = env.transport;
  Reducer& red = env.reducer;
  const int n = t.size(), r = t.rank();
  const int64_t bytes = bytesOf(c, c.count), es = static_cast<int64_t>(dtypeSize(c.dtype));
  trace_ = StepTrace();
  trace_.algo = "rabenseifner";
  if (c.count == 0) return;
  if (n == 1) return localCopy(c, env, c.count);
  const PowerOfTwoFold fold(n);
  traced(trace_, [&] {
    if (fold.sitsOut(r)) {
      trace_.at("fold", 0, 1, r + 1, r + 1);
      sendThenReceive(t, r + 1, c.in, c.out, bytes);
      return;
    }
    const SegmentCut seg{c.count, fold.p};
    const int64_t half = bytesOf(c, seg.at(fold.p / 2));
    char* recv = static_cast<char*>(
        env.workspace.get(static_cast<size_t>(std::max(fold.absorbs(r) ? bytes : 0, half))));
    const char* cur = static_cast<const char*>(c.in);
    if (fold.absorbs(r)) {
      trace_.at("fold", 0, 1, -1, r - 1);
      t.wait(startPair(t, -1, nullptr, 0, r - 1, recv, bytes));
      red.reduce(c.out, recv, c.in, c.count, c.dtype, c.op);  // rank r-1 is the lower group
      cur = static_cast<const char*>(c.out);
    }
    const int nr = fold.newRank(r);
    char* out = static_cast<char*>(c.out);

    // Phase 1: reduce-scatter; participant nr ends with the final segment nr in out.
    HalvingBuffers b;
    b.first = cur;
    b.acc = b.last = out;
    b.recv = recv;
    halve(c, env, trace_, fold, nr, b);
    red.finalize(out + seg.at(nr) * es, seg.at(nr + 1) - seg.at(nr), c.dtype, c.op, n);

    // Phase 2: all-gather, the halving in reverse. Before the step of
    // distance `mask` a participant holds the `mask` segments of its aligned
    // block and swaps them for its partner's, straight into out.
    const int steps = ceilLog2(fold.p);
    for (int mask = 1, s = 0; mask < fold.p; mask <<= 1, ++s) {
      const int mine = nr & ~(mask - 1), theirs = (nr ^ mask) & ~(mask - 1);
      const int peer = fold.rankOf(nr ^ mask);
      trace_.at("all-gather", s, steps, peer, peer);
      const int64_t mOff = seg.at(mine), tOff = seg.at(theirs);
      t.wait(startPair(t, peer, out + mOff * es, (seg.at(mine + mask) - mOff) * es, peer,
                       out + tOff * es, (seg.at(theirs + mask) - tOff) * es));
    }
    if (fold.absorbs(r)) {
      trace_.at("unfold", 0, 1, r - 1, -1);
      t.wait(startPair(t, r - 1, out, bytes, -1, nullptr, 0));
    }
  });
}

}  // namespace rr
