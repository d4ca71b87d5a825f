// Ring collectives written only against Transport and Reducer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/dtypes.h"
#include "reduce/reducer.h"
#include "reduce/workspace.h"
#include "ring/schedule.h"
#include "transport/transport.h"

namespace rr {

struct RingOptions {
  int64_t chunkBytes = 1 << 20;  // bytes per pipelined chunk
  int depth = 2;                 // exchanges kept in flight (2 = double buffering)
};

// Where a collective stands, for error messages.
struct RingProgress {
  const char* phase = "start";
  int step = 0;
  int steps = 0;
  uint64_t bytesDone = 0;
  int peerSend = -1;
  int peerRecv = -1;
  std::string describe() const;
};

class Ring {
 public:
  Ring(Transport& transport, Reducer& reducer, Workspace& workspace, RingOptions options);

  // out = reduce over ranks of in (count elements). in == out is in place.
  void allreduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op);
  // The latency variant for small messages: N-1 steps instead of 2(N-1).
  // Every rank gathers every input and folds them in rank order 0..N-1, so
  // all ranks still end with the same bits. Moves N-1 whole messages per rank.
  void allreduceSmall(const void* in, void* out, int64_t count, DType dtype, ReduceOp op);
  // out (segment r of count, as RingSchedule cuts it) = segment r of the reduction.
  void reduceScatter(const void* in, void* out, int64_t count, DType dtype, ReduceOp op);
  // out = concatenation in rank order of every rank's block; blockBytes[r] is
  // rank r's size, and `in` is this rank's block (may already sit in out).
  void allgather(const void* in, void* out, const std::vector<int64_t>& blockBytes);
  // buf (bytes) on root is copied to every rank, chunk by chunk along the ring.
  void broadcast(void* buf, int64_t bytes, int root);
  // Returns once every rank has entered.
  void barrier();
  // Every rank's bytes (sizes may differ), in rank order: the sizes first,
  // then the bytes. For setting up engines.
  std::vector<std::string> allgatherBytes(const std::string& mine);

  const RingProgress& progress() const { return progress_; }

 private:
  // Runs `total` exchanges keeping up to `depth` in flight. Exchange i may
  // depend on exchange i - lag having been consumed, so lookahead stays < lag.
  // post(i) starts exchange i and returns its id.
  template <class Post, class Consume>
  void pipeline(int64_t total, int64_t lag, Post post, Consume consume);
  void reduceChunk(void* dst, const void* a, const void* b, int64_t count, DType dtype,
                   ReduceOp op);
  void runReduceScatter(const void* in, char* work, const RingSchedule& sched, DType dtype,
                        ReduceOp op, char* recvSlots, char* pingpong, char* finalOut);

  Transport& t_;
  Reducer& red_;
  Workspace& ws_;
  RingOptions opt_;
  RingProgress progress_;
};

}  // namespace rr
