// Building blocks the any-peer algorithms share: where a run stands (for
// error messages), a list of transfers that does not allocate for ordinary
// world sizes, a bounded window of exchanges in flight, and the fold that
// lets power-of-two schedules run on any number of ranks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/errors.h"
#include "transport/transport.h"

namespace rr {

// More exchanges than this in flight buy nothing on a host transport and
// would only hold more workspace.
constexpr int kMaxInFlight = 8;

// What an algorithm is doing, added to any error that passes through it; the
// communicator adds the rank and the call.
struct StepTrace {
  const char* algo = "";
  const char* phase = "start";
  int step = 0;
  int steps = 0;
  int sendPeer = -1;
  int recvPeer = -1;

  void at(const char* ph, int s, int total, int to, int from) {
    phase = ph;
    step = s;
    steps = total;
    sendPeer = to;
    recvPeer = from;
  }
  std::string describe() const {
    std::string s = std::string(algo) + " " + phase + " step " + std::to_string(step + 1) + "/" +
                    std::to_string(steps);
    if (sendPeer >= 0) s += ", sending to rank " + std::to_string(sendPeer);
    if (recvPeer >= 0) s += ", receiving from rank " + std::to_string(recvPeer);
    return s;
  }
};

// Runs body(); an error leaving it names where the algorithm stood.
template <class Body>
void traced(StepTrace& trace, Body&& body) {
  try {
    body();
  } catch (Error& e) {
    e.addContext(trace.describe());
    throw;
  }
}

// Transfers of one exchange. Worlds of up to kInline peers never touch the
// heap, so the per-call cost stays flat on the latency path.
class XferList {
 public:
  void clear() {
    n_ = 0;
    heap_.clear();
  }
  void add(int peer, const void* data, int64_t bytes) {
    Xfer x{peer, const_cast<void*>(data), static_cast<size_t>(bytes)};
    if (n_ < kInline) inline_[n_] = x;
    else {
      if (heap_.empty()) heap_.assign(inline_, inline_ + kInline);
      heap_.push_back(x);
    }
    ++n_;
  }
  const Xfer* data() const { return n_ <= kInline ? inline_ : heap_.data(); }
  int size() const { return n_; }

 private:
  static constexpr int kInline = 32;
  Xfer inline_[kInline];
  std::vector<Xfer> heap_;
  int n_ = 0;
};

inline Transport::ExchangeId startLists(Transport& t, const XferList& sends, const XferList& recvs) {
  return t.start(sends.data(), sends.size(), recvs.data(), recvs.size());
}

// One send and one receive, either of which may be absent (peer < 0).
inline Transport::ExchangeId startPair(Transport& t, int to, const void* send, int64_t sendBytes,
                                       int from, void* recv, int64_t recvBytes) {
  Xfer s{to, const_cast<void*>(send), static_cast<size_t>(sendBytes)};
  Xfer v{from, recv, static_cast<size_t>(recvBytes)};
  return t.start(&s, to >= 0 ? 1 : 0, &v, from >= 0 ? 1 : 0);
}

// Sends to `peer`, then receives its answer. When the two buffers overlap
// (in place) the receive is posted only once the send is complete: MPI
// forbids a buffer being read by a send while a receive writes it. The
// send never depends on that receive, so waiting for it first cannot hang.
inline void sendThenReceive(Transport& t, int peer, const void* send, void* recv, int64_t bytes) {
  const char* s = static_cast<const char*>(send);
  const char* r = static_cast<const char*>(recv);
  if (s < r + bytes && r < s + bytes) {
    t.wait(startPair(t, peer, send, bytes, -1, nullptr, 0));
    t.wait(startPair(t, -1, nullptr, 0, peer, recv, bytes));
  } else {
    t.wait(startPair(t, peer, send, bytes, peer, recv, bytes));
  }
}

// Runs exchanges 0..total-1 with up to `depth` in flight: post(i) starts
// exchange i, consume(i) runs once it is complete. Exchange i is posted
// before consume(i - depth + 1) has run, so it must not depend on it.
template <class Post, class Consume>
void window(Transport& t, int64_t total, int depth, Post post, Consume consume) {
  const int d = std::max(1, std::min(depth, kMaxInFlight));
  Transport::ExchangeId ids[kMaxInFlight];
  int64_t posted = 0;
  for (int64_t i = 0; i < total; ++i) {
    for (; posted < total && posted < i + d; ++posted) ids[posted % d] = post(posted);
    t.wait(ids[i % d]);
    consume(i);
  }
}

// An even cut of `len` elements into `parts` pieces, the first len % parts
// one longer: the ring's segment rule, reused for chunks and shards.
struct Cut {
  int64_t offset;
  int64_t count;
};
inline Cut cutPiece(int64_t start, int64_t len, int64_t parts, int64_t i) {
  const int64_t base = len / parts, extra = len % parts;
  return Cut{start + i * base + std::min(i, extra), base + (i < extra ? 1 : 0)};
}

inline int64_t ceilDiv64(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t align256(int64_t bytes) { return ceilDiv64(std::max<int64_t>(bytes, 1), 256) * 256; }
inline bool isPowerOfTwo(int n) { return n > 0 && (n & (n - 1)) == 0; }
inline int floorPowerOfTwo(int n) {
  int p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}
inline int ceilLog2(int n) {
  int k = 0;
  while ((1 << k) < n) ++k;
  return k;
}

// A world of N ranks that is not a power of two runs a power-of-two schedule
// on P = 2^floor(log2 N) of them. The first 2(N-P) ranks pair up (2i, 2i+1):
// the even one hands its input to the odd one and sits out, the odd one
// combines the two (lower rank first) and stands for both. Participants keep
// their rank order, so a group of consecutive participants is a group of
// consecutive ranks, and "lower group first" stays a rank order.
struct PowerOfTwoFold {
  explicit PowerOfTwoFold(int n) : n(n), p(floorPowerOfTwo(n)), extra(n - floorPowerOfTwo(n)) {}
  bool sitsOut(int r) const { return r < 2 * extra && r % 2 == 0; }
  bool absorbs(int r) const { return r < 2 * extra && r % 2 == 1; }
  int newRank(int r) const { return r < 2 * extra ? r / 2 : r - extra; }
  int rankOf(int newRank) const { return newRank < extra ? 2 * newRank + 1 : newRank + extra; }

  int n;
  int p;
  int extra;
};

}  // namespace rr
