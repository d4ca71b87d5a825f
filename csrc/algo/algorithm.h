// An algorithm is one way of running a collective over a transport: the
// chunked ring, recursive doubling, the IPC one-shot, ... Each says which
// calls it serves; the selector (algo/select.h) picks one per call, and the
// communicator runs it.
#pragma once

#include <cstdint>
#include <string>

#include "algo/call.h"
#include "reduce/reducer.h"
#include "reduce/workspace.h"
#include "transport/transport.h"

namespace rr {

// What an algorithm works with while it runs.
struct AlgoEnv {
  Transport& transport;
  Reducer& reducer;
  Workspace& workspace;
  int64_t chunkBytes;  // pipeline chunk, bytes
  int depth;           // exchanges kept in flight
  // The call's packed fingerprint (common/fingerprint.h), as the
  // communicator set it on the transports; algorithms that carry it in
  // their own flags publish this value.
  uint64_t fingerprint = 0;
  // The call's stream is being captured into a CUDA graph: nothing may wait
  // on the host, and a fingerprint from the host's sequence number would be
  // the same on every replay (such algorithms number calls on the device).
  bool capturing = false;
};

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  // Stable, lower-case, as settings and reports name it: "ring", "recursive_doubling".
  virtual const char* name() const = 0;
  // Empty when this algorithm can run `call` on `worldSize` ranks here;
  // otherwise why not. It must depend only on what every rank knows alike
  // (the call's shape, the world, the engine's agreed setup), so that every
  // rank chooses the same algorithm.
  virtual std::string refusal(const Call& call, int worldSize) const = 0;
  // Runs (or, on a device, enqueues) the call. Every element is reduced in a
  // fixed order that does not depend on timing, so every rank ends with the
  // same bits and a rerun gives the same bits.
  virtual void run(const Call& call, AlgoEnv& env) = 0;
  // True when the algorithm moves data outside the transport (peer memory)
  // and carries the call's fingerprint in its own flags.
  virtual bool fingerprintInFlags() const { return false; }
  // True when run() enqueues straight onto the caller's stream (Call::stream)
  // and needs no engine stream: the engine then adds no event round trip.
  virtual bool runsOnCallerStream() const { return false; }
};

}  // namespace rr
