// Pure chunk arithmetic for the ring. No I/O, no buffers: only which elements
// travel when. Counts are 64-bit everywhere.
#pragma once

#include <cstdint>

namespace rr {

struct Span {
  int64_t offset = 0;  // elements
  int64_t count = 0;   // elements
};

// N ranks and `count` elements make N segments; the first count % N segments
// get one extra element, so any count works, including 0 and counts below N.
// Every segment is cut into the same number of chunks C, so that chunk c of
// any step lines up with chunk c of the next step: the pipeline needs that to
// know which exchange a chunk depends on.
class RingSchedule {
 public:
  RingSchedule(int64_t count, int worldSize, int64_t chunkElems);

  int worldSize() const { return n_; }
  int64_t count() const { return count_; }
  int64_t chunksPerSegment() const { return chunks_; }
  int64_t maxSegmentCount() const { return segment(0).count; }

  Span segment(int s) const;
  // Chunk c of segment s; chunks differ in size by at most one element and
  // may be empty when a segment has fewer elements than there are chunks.
  Span chunk(int s, int64_t c) const;

  // Reduce-scatter, arranged so that rank r ends owning segment r.
  // At step t (0 <= t < N-1) rank r sends sendSegment and receives
  // recvSegment from rank r-1, which sent the same segment.
  int rsSendSegment(int rank, int step) const { return mod(rank - step - 1); }
  int rsRecvSegment(int rank, int step) const { return mod(rank - step - 2); }
  // All-gather: rank r starts owning segment r and forwards what it got.
  int agSendSegment(int rank, int step) const { return mod(rank - step); }
  int agRecvSegment(int rank, int step) const { return mod(rank - step - 1); }

 private:
  int mod(int x) const { return ((x % n_) + n_) % n_; }

  int64_t count_;
  int n_;
  int64_t chunks_;
};

}  // namespace rr
