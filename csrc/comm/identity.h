// Who a call is: its fingerprint (what its messages carry) and its name in
// error messages. Pure functions of the call and the world.
#pragma once

#include <string>

#include "algo/call.h"
#include "common/fingerprint.h"

namespace rr {

inline bool isP2p(Coll c) { return c == Coll::kSend || c == Coll::kRecv; }
inline bool reducesData(Coll c) {
  return c == Coll::kAllreduce || c == Coll::kReduceScatter || c == Coll::kReduce;
}
inline bool hasRoot(Coll c) {
  return c == Coll::kBroadcast || c == Coll::kReduce || c == Coll::kGather || c == Coll::kScatter;
}

// What every rank must agree on for this call; a send and its receive get
// the same fingerprint.
Fingerprint fingerprintOf(const Call& call, int rank, int size);

// "rank 2: allreduce #7 (float32 x 1000, sum)"
std::string describeCall(const Call& call, int rank);

// True when no rank moves any byte in this call (every rank can tell alone,
// since sizes are part of the call).
bool movesNothing(const Call& call);

}  // namespace rr
