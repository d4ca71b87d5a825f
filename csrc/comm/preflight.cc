#include "comm/preflight.h"

#include <cstring>
#include <map>
#include <vector>

#include "common/errors.h"
#include "ring/ring_allreduce.h"

namespace rr {
namespace {

enum Field { kSeq, kColl, kOp, kDType, kCount, kRoot, kNonFinite, kNumFields };
const char* const kFieldNames[] = {"sequence number", "collective", "op",  "dtype",
                                   "count",           "root",       "non-finite input"};

bool fieldMatters(Coll c, int f) {
  switch (f) {
    case kOp: return c == Coll::kAllreduce || c == Coll::kReduceScatter || c == Coll::kReduce;
    case kDType: return c != Coll::kBarrier;
    case kCount: return c != Coll::kBarrier && c != Coll::kAllToAll;
    case kRoot:
      return c == Coll::kBroadcast || c == Coll::kReduce || c == Coll::kGather ||
             c == Coll::kScatter;
    case kNonFinite: return false;
    default: return true;
  }
}

std::string show(int f, int64_t v) {
  if (f == kColl) return collName(static_cast<Coll>(v));
  if (f == kOp) return opName(static_cast<ReduceOp>(v));
  if (f == kDType) return dtypeName(static_cast<DType>(v));
  return std::to_string(v);
}

}  // namespace

std::exception_ptr agreeBeforeMoving(const Call& call, const Fingerprint& f, Reducer& dataReducer,
                                     bool nanCheck, Engine& host, int rank, int size) {
  int64_t mine[kNumFields] = {static_cast<int64_t>(f.seq), static_cast<int64_t>(f.coll),
                              static_cast<int64_t>(f.op),  static_cast<int64_t>(f.dtype),
                              f.count,                     f.root, 0};
  bool reduces = call.coll == Coll::kAllreduce || call.coll == Coll::kReduceScatter ||
                 call.coll == Coll::kReduce;
  if (nanCheck && reduces && call.count > 0)
    mine[kNonFinite] = dataReducer.anyNonFinite(call.in, call.count, call.dtype) ? 1 : 0;

  // The exchange itself carries a tag every rank computes alike whatever
  // its call, so a disagreement surfaces below as a verdict, not on the wire.
  Transport& t = host.transport();
  const uint64_t callTag = t.tag();
  Fingerprint generic;
  generic.seq = f.seq;
  generic.coll = Coll::kBootstrap;
  t.setTag(fp::pack(generic), Channel::kCollective);
  std::vector<int64_t> all(kNumFields * size);
  std::memcpy(all.data() + kNumFields * rank, mine, sizeof(mine));
  RingOptions ro;
  Ring ring(t, host.reducer(), host.workspace(), ro);
  ring.allgather(all.data() + kNumFields * rank, all.data(),
                 std::vector<int64_t>(size, static_cast<int64_t>(sizeof(mine))));
  t.setTag(callTag, Channel::kCollective);

  std::string diff;
  for (int field = 0; field < kNonFinite; ++field) {
    // Only compare a field once the ranks agree on which collective it is.
    if (field > kColl && !diff.empty()) break;
    if (!fieldMatters(call.coll, field)) continue;
    std::map<int64_t, std::vector<int>> groups;
    for (int r = 0; r < size; ++r) groups[all[r * kNumFields + field]].push_back(r);
    if (groups.size() == 1) continue;
    diff += std::string(diff.empty() ? "" : "; ") + kFieldNames[field] + " differs:";
    for (auto& g : groups) {
      diff += " ranks";
      for (int r : g.second) diff += " " + std::to_string(r);
      diff += " have " + show(field, g.first) + ";";
    }
  }
  if (!diff.empty())
    return std::make_exception_ptr(MismatchError("ranks disagree before any data moved: " + diff));
  std::string bad;
  for (int r = 0; r < size; ++r)
    if (all[r * kNumFields + kNonFinite]) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
  if (!bad.empty())
    return std::make_exception_ptr(Error("NaN or Inf in the input of rank(s) " + bad +
                                         " (RINGREDUCE_NAN_CHECK is on); nothing was reduced"));
  return nullptr;
}

}  // namespace rr
