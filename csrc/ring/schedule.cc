#include "ring/schedule.h"

#include <algorithm>

#include "common/errors.h"

namespace rr {

RingSchedule::RingSchedule(int64_t count, int worldSize, int64_t chunkElems)
    : count_(count), n_(worldSize), chunks_(1) {
  RR_CHECK_ARG(worldSize >= 1, "world size must be >= 1, got " + std::to_string(worldSize));
  RR_CHECK_ARG(count >= 0, "count must be >= 0, got " + std::to_string(count));
  RR_CHECK_ARG(chunkElems >= 1, "chunk must hold >= 1 element, got " + std::to_string(chunkElems));
  int64_t largest = count / n_ + (count % n_ ? 1 : 0);
  chunks_ = std::max<int64_t>(1, (largest + chunkElems - 1) / chunkElems);
}

Span RingSchedule::segment(int s) const {
  int64_t base = count_ / n_;
  int64_t extra = count_ % n_;
  Span span;
  span.count = base + (s < extra ? 1 : 0);
  span.offset = s * base + std::min<int64_t>(s, extra);
  return span;
}

Span RingSchedule::chunk(int s, int64_t c) const {
  Span seg = segment(s);
  int64_t base = seg.count / chunks_;
  int64_t extra = seg.count % chunks_;
  Span span;
  span.count = base + (c < extra ? 1 : 0);
  span.offset = seg.offset + c * base + std::min<int64_t>(c, extra);
  return span;
}

}  // namespace rr
