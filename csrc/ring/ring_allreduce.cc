// The ring, phase by phase. Read allreduce() first: a reduce-scatter that
// leaves each rank owning one fully reduced segment, then an all-gather that
// passes the owned segments around. Everything else reuses those two phases.
#include "ring/ring_allreduce.h"

#include <algorithm>
#include <deque>

#include "common/errors.h"

namespace rr {
namespace {

// On the host, transfers move only while the transport is called, so long
// reductions are cut into pieces with a poll between them.
constexpr int64_t kPollBytes = 256 << 10;

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of one receive slot: the largest chunk, rounded up so every slot
// starts aligned for 16-byte vector loads.
int64_t slotBytesFor(const RingSchedule& sched, size_t es) {
  int64_t raw = (sched.maxSegmentCount() / sched.chunksPerSegment() + 1) * static_cast<int64_t>(es);
  return ceilDiv(raw, 256) * 256;
}

// Bytes of one half of reduce_scatter's partial-sum ping-pong, likewise aligned.
int64_t halfBytesFor(const RingSchedule& sched, size_t es) {
  return ceilDiv(sched.maxSegmentCount() * static_cast<int64_t>(es), 256) * 256;
}

}  // namespace

std::string RingProgress::describe() const {
  std::string s = std::string(phase) + " step " + std::to_string(step + 1) + "/" +
                  std::to_string(steps) + ", " + std::to_string(bytesDone) + " bytes received";
  if (peerRecv >= 0 || peerSend >= 0) {
    s += " (peers:";
    if (peerRecv >= 0) s += " left rank " + std::to_string(peerRecv);
    if (peerSend >= 0) s += std::string(peerRecv >= 0 ? "," : "") + " right rank " + std::to_string(peerSend);
    s += ")";
  }
  return s;
}

Ring::Ring(Transport& transport, Reducer& reducer, Workspace& workspace, RingOptions options)
    : t_(transport), red_(reducer), ws_(workspace), opt_(options) {
  RR_CHECK_ARG(opt_.chunkBytes >= 1, "chunk_bytes must be >= 1, got " + std::to_string(opt_.chunkBytes));
  RR_CHECK_ARG(opt_.depth >= 1, "pipeline depth must be >= 1, got " + std::to_string(opt_.depth));
}

template <class Post, class Consume>
void Ring::pipeline(int64_t total, int64_t lag, Post post, Consume consume) {
  int64_t ahead = std::max<int64_t>(1, std::min<int64_t>(opt_.depth, lag));
  int64_t posted = 0;
  std::deque<Transport::ExchangeId> inFlight;
  try {
    for (int64_t i = 0; i < total; ++i) {
      while (posted < total && posted < i + ahead) inFlight.push_back(post(posted++));
      t_.wait(inFlight.front());
      inFlight.pop_front();
      consume(i);
    }
  } catch (Error& e) {
    e.addContext(progress_.describe());
    throw;
  }
}

void Ring::reduceChunk(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                       ReduceOp op) {
  int64_t piece = t_.onDevice() ? count : std::max<int64_t>(1, kPollBytes / dtypeSize(dtype));
  size_t es = dtypeSize(dtype);
  for (int64_t done = 0; done < count; done += piece) {
    int64_t n = std::min(piece, count - done);
    red_.reduce(static_cast<char*>(dst) + done * es, static_cast<const char*>(a) + done * es,
                static_cast<const char*>(b) + done * es, n, dtype, op);
    if (done + n < count) t_.poll();
  }
}

// Reduce-scatter over N-1 steps. At step s each rank sends the segment it
// reduced at step s-1 (its own input at step 0) and combines the segment
// arriving from the left with its own input copy. `work` receives the partial
// sums in place (allreduce); when it is null, partial sums alternate between
// two segment-sized `pingpong` halves and the last step lands in `finalOut`.
void Ring::runReduceScatter(const void* in, char* work, const RingSchedule& sched, DType dtype,
                            ReduceOp op, char* recvSlots, char* pingpong, char* finalOut) {
  const int n = t_.size(), r = t_.rank();
  const size_t es = dtypeSize(dtype);
  const int64_t chunks = sched.chunksPerSegment();
  const int64_t steps = n - 1;
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(opt_.depth, chunks));
  const int64_t slotBytes = slotBytesFor(sched, es);
  const int64_t segBytes = halfBytesFor(sched, es);

  // Where step s keeps the reduced chunk c of segment seg.
  auto result = [&](int64_t s, int seg, int64_t c) -> char* {
    Span ch = sched.chunk(seg, c);
    if (work) return work + ch.offset * es;
    int64_t rel = (ch.offset - sched.segment(seg).offset) * es;
    if (s == steps - 1) return finalOut + rel;
    return pingpong + (s % 2) * segBytes + rel;
  };

  progress_.phase = "reduce-scatter";
  progress_.steps = static_cast<int>(steps);
  progress_.peerSend = (r + 1) % n;
  progress_.peerRecv = (r - 1 + n) % n;
  pipeline(
      steps * chunks, chunks,
      [&](int64_t i) {
        int64_t s = i / chunks, c = i % chunks;
        int sendSeg = sched.rsSendSegment(r, static_cast<int>(s));
        Span out = sched.chunk(sendSeg, c);
        Span inc = sched.chunk(sched.rsRecvSegment(r, static_cast<int>(s)), c);
        const char* src = s == 0 ? static_cast<const char*>(in) + out.offset * es
                                 : result(s - 1, sendSeg, c);
        return t_.startRing(src, out.count * es, recvSlots + (i % slots) * slotBytes,
                            inc.count * es);
      },
      [&](int64_t i) {
        int64_t s = i / chunks, c = i % chunks;
        progress_.step = static_cast<int>(s);
        int seg = sched.rsRecvSegment(r, static_cast<int>(s));
        Span inc = sched.chunk(seg, c);
        if (inc.count == 0) return;
        char* dst = result(s, seg, c);
        reduceChunk(dst, static_cast<const char*>(in) + inc.offset * es,
                    recvSlots + (i % slots) * slotBytes, inc.count, dtype, op);
        // The owner's segment is final after the last step: only now may avg divide.
        if (s == steps - 1) red_.finalize(dst, inc.count, dtype, op, n);
        progress_.bytesDone += inc.count * es;
      });
}

void Ring::allreduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) {
  const int n = t_.size();
  const size_t es = dtypeSize(dtype);
  progress_ = RingProgress();
  if (count == 0) return;
  if (n == 1) {
    if (in != out) red_.copy(out, in, count * es);
    red_.finalize(out, count, dtype, op, 1);
    return;
  }
  RingSchedule sched(count, n, std::max<int64_t>(1, opt_.chunkBytes / es));
  const int64_t chunks = sched.chunksPerSegment();
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(opt_.depth, chunks));
  char* recvSlots = static_cast<char*>(ws_.get(slots * slotBytesFor(sched, es)));

  // Phase 1: reduce-scatter. Afterwards rank r holds the final segment r in out.
  runReduceScatter(in, static_cast<char*>(out), sched, dtype, op, recvSlots, nullptr, nullptr);

  // Phase 2: all-gather. Each step forwards a final segment and receives the
  // next one straight into out; nothing is reduced, so every rank ends with
  // the owner's bits.
  const int r = t_.rank();
  char* o = static_cast<char*>(out);
  progress_.phase = "all-gather";
  pipeline(
      (n - 1) * chunks, chunks,
      [&](int64_t i) {
        int s = static_cast<int>(i / chunks);
        int64_t c = i % chunks;
        Span snd = sched.chunk(sched.agSendSegment(r, s), c);
        Span rcv = sched.chunk(sched.agRecvSegment(r, s), c);
        return t_.startRing(o + snd.offset * es, snd.count * es, o + rcv.offset * es,
                            rcv.count * es);
      },
      [&](int64_t i) {
        int s = static_cast<int>(i / chunks);
        progress_.step = s;
        progress_.bytesDone += sched.chunk(sched.agRecvSegment(r, s), i % chunks).count * es;
      });
}

void Ring::allreduceSmall(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) {
  const int n = t_.size();
  const int64_t bytes = count * static_cast<int64_t>(dtypeSize(dtype));
  progress_ = RingProgress();
  if (count == 0) return;
  if (n == 1) {
    if (in != out) red_.copy(out, in, bytes);
    red_.finalize(out, count, dtype, op, 1);
    return;
  }
  // Blocks are exactly the message, unpadded: ranks that disagree on the
  // count then exchange different sizes, which the transport detects.
  const int64_t block = bytes;
  char* all = static_cast<char*>(ws_.get(n * block));
  std::vector<int64_t> sizes(n, block);
  // Gather whole inputs, then fold them in the same order everywhere.
  red_.copy(all + t_.rank() * block, in, bytes);
  allgather(all + t_.rank() * block, all, sizes);
  red_.copy(out, all, bytes);
  for (int k = 1; k < n; ++k) red_.reduce(out, out, all + k * block, count, dtype, op);
  red_.finalize(out, count, dtype, op, n);
}

void Ring::reduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) {
  const int n = t_.size();
  const size_t es = dtypeSize(dtype);
  progress_ = RingProgress();
  if (count == 0) return;
  if (n == 1) {
    if (in != out) red_.copy(out, in, count * es);
    red_.finalize(out, count, dtype, op, 1);
    return;
  }
  RingSchedule sched(count, n, std::max<int64_t>(1, opt_.chunkBytes / es));
  const int64_t chunks = sched.chunksPerSegment();
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(opt_.depth, chunks));
  const int64_t slotBytes = slotBytesFor(sched, es);
  const int64_t segBytes = halfBytesFor(sched, es);
  char* base = static_cast<char*>(ws_.get(slots * slotBytes + 2 * segBytes));
  runReduceScatter(in, nullptr, sched, dtype, op, base, base + slots * slotBytes,
                   static_cast<char*>(out));
}

void Ring::allgather(const void* in, void* out, const std::vector<int64_t>& blockBytes) {
  const int n = t_.size(), r = t_.rank();
  RR_CHECK_ARG(static_cast<int>(blockBytes.size()) == n, "allgather needs one block size per rank");
  progress_ = RingProgress();
  std::vector<int64_t> offset(n + 1, 0);
  for (int i = 0; i < n; ++i) offset[i + 1] = offset[i] + blockBytes[i];
  char* o = static_cast<char*>(out);
  if (in != o + offset[r] && blockBytes[r] > 0) red_.copy(o + offset[r], in, blockBytes[r]);
  if (n == 1 || offset[n] == 0) return;

  int64_t largest = *std::max_element(blockBytes.begin(), blockBytes.end());
  int64_t chunks = std::max<int64_t>(1, ceilDiv(largest, opt_.chunkBytes));
  auto piece = [&](int block, int64_t c) {
    int64_t len = blockBytes[block];
    int64_t base = len / chunks, extra = len % chunks;
    Span sp;
    sp.count = base + (c < extra ? 1 : 0);
    sp.offset = offset[block] + c * base + std::min<int64_t>(c, extra);
    return sp;
  };
  auto mod = [n](int x) { return ((x % n) + n) % n; };
  progress_.phase = "all-gather";
  progress_.steps = n - 1;
  progress_.peerSend = (r + 1) % n;
  progress_.peerRecv = (r - 1 + n) % n;
  pipeline(
      (n - 1) * chunks, chunks,
      [&](int64_t i) {
        int s = static_cast<int>(i / chunks);
        Span snd = piece(mod(r - s), i % chunks), rcv = piece(mod(r - s - 1), i % chunks);
        return t_.startRing(o + snd.offset, snd.count, o + rcv.offset, rcv.count);
      },
      [&](int64_t i) {
        int s = static_cast<int>(i / chunks);
        progress_.step = s;
        progress_.bytesDone += piece(mod(r - s - 1), i % chunks).count;
      });
}

// A chain from the root around the ring: each rank receives chunk c from
// the left while it forwards chunk c-1 to the right.
void Ring::broadcast(void* buf, int64_t bytes, int root) {
  const int n = t_.size(), r = t_.rank();
  progress_ = RingProgress();
  if (n == 1 || bytes == 0) return;
  const int pos = ((r - root) % n + n) % n;
  const int64_t chunks = std::max<int64_t>(1, ceilDiv(bytes, opt_.chunkBytes));
  auto piece = [&](int64_t c) {
    int64_t base = bytes / chunks, extra = bytes % chunks;
    Span sp;
    sp.count = base + (c < extra ? 1 : 0);
    sp.offset = c * base + std::min<int64_t>(c, extra);
    return sp;
  };
  const bool sends = pos != n - 1, receives = pos != 0;
  char* b = static_cast<char*>(buf);
  // The root only sends and the last rank only receives; everyone else
  // needs one exchange more than there are chunks to drain the chain.
  const int64_t total = (sends && receives) ? chunks + 1 : chunks;
  progress_.phase = "broadcast";
  progress_.steps = static_cast<int>(total);
  progress_.peerSend = sends ? (r + 1) % n : -1;
  progress_.peerRecv = receives ? (r - 1 + n) % n : -1;
  pipeline(
      total, 1,
      [&](int64_t i) {
        int64_t sendChunk = receives ? i - 1 : i;
        Span snd = (sends && sendChunk >= 0 && sendChunk < chunks) ? piece(sendChunk) : Span();
        Span rcv = (receives && i < chunks) ? piece(i) : Span();
        return t_.startRing(b + snd.offset, snd.count, b + rcv.offset, rcv.count);
      },
      [&](int64_t i) {
        progress_.step = static_cast<int>(i);
        if (receives && i < chunks) progress_.bytesDone += piece(i).count;
      });
}

// An all-gather of one byte per rank: no rank can finish it before every
// rank has started it.
void Ring::barrier() {
  const int n = t_.size(), r = t_.rank();
  if (n == 1) return;
  char* tokens = static_cast<char*>(ws_.get(n));
  std::vector<int64_t> ones(n, 1);
  allgather(tokens + r, tokens, ones);
}

std::vector<std::string> Ring::allgatherBytes(const std::string& mine) {
  const int n = t_.size(), r = t_.rank();
  std::vector<int64_t> sizes(n, 0);
  sizes[r] = static_cast<int64_t>(mine.size());
  allgather(&sizes[r], sizes.data(), std::vector<int64_t>(n, 8));
  std::vector<int64_t> offset(n + 1, 0);
  for (int q = 0; q < n; ++q) {
    RR_CHECK_ARG(sizes[q] >= 0 && sizes[q] < (int64_t(1) << 30),
                 "rank " + std::to_string(q) + " sent a bad size " + std::to_string(sizes[q]));
    offset[q + 1] = offset[q] + sizes[q];
  }
  std::string all(static_cast<size_t>(offset[n]), '\0');
  if (!mine.empty()) red_.copy(&all[offset[r]], mine.data(), mine.size());
  allgather(all.data() + offset[r], all.data(), sizes);
  std::vector<std::string> out;
  for (int q = 0; q < n; ++q) out.push_back(all.substr(offset[q], sizes[q]));
  return out;
}

}  // namespace rr
