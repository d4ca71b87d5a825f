#include "comm/validate.h"

#include <limits>

#include "common/errors.h"

namespace rr {
namespace {

constexpr int64_t kMaxBytes = std::numeric_limits<int64_t>::max() / 4;

void checkCount(int64_t n, DType t, const std::string& what) {
  RR_CHECK_ARG(n >= 0, what + " must be >= 0 elements, got " + std::to_string(n));
  RR_CHECK_ARG(n <= kMaxBytes / static_cast<int64_t>(dtypeSize(t)),
               what + " of " + std::to_string(n) + " elements of " + dtypeName(t) +
                   " overflows a 64-bit byte count");
}

void checkCounts(const std::vector<int64_t>& v, int size, DType t, const std::string& what) {
  RR_CHECK_ARG(static_cast<int>(v.size()) == size,
               what + " must list one count per rank (" + std::to_string(size) + "), got " +
                   std::to_string(v.size()));
  int64_t total = 0;
  for (size_t q = 0; q < v.size(); ++q) {
    checkCount(v[q], t, what + "[" + std::to_string(q) + "]");
    total += v[q];
    checkCount(total, t, "the sum of " + what);
  }
}

void checkRank(int r, int size, const std::string& what) {
  RR_CHECK_ARG(r >= 0 && r < size, what + " must be a rank in [0, " + std::to_string(size) +
                                       "), got " + std::to_string(r));
}

bool reduces(Coll c) {
  return c == Coll::kAllreduce || c == Coll::kReduceScatter || c == Coll::kReduce;
}

}  // namespace

void validateCall(const Call& c, int rank, int size) {
  RR_CHECK_ARG(validColl(static_cast<int>(c.coll)),
               "unknown collective code " + std::to_string(static_cast<int>(c.coll)));
  RR_CHECK_ARG(validDType(static_cast<int>(c.dtype)),
               "unknown dtype code " + std::to_string(static_cast<int>(c.dtype)));
  RR_CHECK_ARG(validOp(static_cast<int>(c.op)),
               "unknown op code " + std::to_string(static_cast<int>(c.op)));
  RR_CHECK_ARG(c.chunkBytes >= 0, "chunk_bytes must be >= 1, got " + std::to_string(c.chunkBytes));
  RR_CHECK_ARG(c.device >= -1, "device must be >= -1, got " + std::to_string(c.device));
  if (reduces(c.coll)) {
    std::string no = opRefusal(c.dtype, c.op);
    if (!no.empty()) throw TypeArgError(no);
  }
  switch (c.coll) {
    case Coll::kAllreduce:
    case Coll::kReduceScatter:
    case Coll::kBroadcast:
    case Coll::kReduce:
      checkCount(c.count, c.dtype, "count");
      break;
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter:
      checkCounts(c.counts, size, c.dtype, "sizes");
      break;
    case Coll::kAllToAll:
      checkCounts(c.counts, size, c.dtype, "send splits");
      checkCounts(c.recvCounts, size, c.dtype, "receive splits");
      break;
    case Coll::kSend:
    case Coll::kRecv:
      checkCount(c.count, c.dtype, "count");
      if (c.coll == Coll::kRecv && c.peer == kAnySource) {
        RR_CHECK_ARG(size > 1, "recv from any source in a world of one rank: no rank can send");
        RR_CHECK_ARG(c.device < 0, "recv from any source takes host memory (a device buffer "
                                   "needs its source named)");
        break;
      }
      checkRank(c.peer, size, c.coll == Coll::kSend ? "dst" : "src");
      RR_CHECK_ARG(c.peer != rank, std::string(c.coll == Coll::kSend ? "dst" : "src") +
                                       " must be another rank, got this rank's own " +
                                       std::to_string(rank));
      break;
    case Coll::kBarrier:
    case Coll::kBootstrap:
      break;
  }
  if (c.coll == Coll::kBroadcast || c.coll == Coll::kReduce || c.coll == Coll::kGather ||
      c.coll == Coll::kScatter)
    checkRank(c.root, size, "root");
}

}  // namespace rr
