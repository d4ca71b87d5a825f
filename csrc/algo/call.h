// One call, as every layer below the bindings sees it: validated once
// (comm/validate.h), then handed to the selector and to an algorithm.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtypes.h"

namespace rr {

// Call::peer of a receive from any source (resolved to a rank when the
// first message that no other receive waits for arrives).
constexpr int kAnySource = -2;

struct Call {
  Coll coll = Coll::kAllreduce;
  const void* in = nullptr;
  void* out = nullptr;
  // Elements of `in` for allreduce, reduce_scatter, broadcast (in == out),
  // reduce and send; of `out` for recv. Calls with per-rank sizes use counts.
  int64_t count = 0;
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;   // broadcast, reduce, gather, scatter
  int peer = -1;  // send, recv; kAnySource: a receive from whichever rank sends first
  // send, recv: the caller's tag. Messages between two ranks still pair in
  // the order they were posted; the tag is part of their fingerprint, so a
  // send and a receive whose tags differ raise CollectiveMismatch.
  int64_t userTag = 0;
  // Elements per rank: allgather and gather (rank q's block), scatter (the
  // block for rank q), all_to_all (what this rank sends to rank q).
  std::vector<int64_t> counts;
  std::vector<int64_t> recvCounts;  // all_to_all: what this rank receives from rank q
  int device = -1;                  // -1: host memory
  uintptr_t stream = 0;             // caller's stream for device buffers
  int64_t chunkBytes = 0;           // 0: the engine's default
  std::string algo;                 // forced algorithm; empty: the selector decides
  uint64_t seq = 0;                 // set by the communicator at submission
  // The caller's stream is being captured into a CUDA graph (set where the
  // call is made): the call then runs inline, enqueues only, and waits for nothing.
  bool capturing = false;
};

inline int64_t sumOf(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

// Bytes of `n` elements of the call's dtype.
inline int64_t bytesOf(const Call& c, int64_t n) { return n * static_cast<int64_t>(dtypeSize(c.dtype)); }

}  // namespace rr
