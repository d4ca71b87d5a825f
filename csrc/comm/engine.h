// An engine is where a collective runs: a transport, a reducer and a
// workspace for one kind of memory (host, or one GPU), the algorithms it can
// run there, and what it takes to order that work after the caller's and to
// signal its end. The host engine runs to completion on the calling thread;
// device engines enqueue on streams and hand back a Completion.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "algo/algorithm.h"
#include "common/errors.h"
#include "reduce/reducer.h"
#include "reduce/workspace.h"
#include "transport/transport.h"

namespace rr {

// The end of a collective that was only enqueued (device work).
class Completion {
 public:
  virtual ~Completion() = default;
  virtual bool query() = 0;                                  // finished?
  virtual void streamWait(uintptr_t stream) = 0;             // make `stream` wait, host not blocked
  virtual void synchronize(Clock::time_point deadline) = 0;  // block the host, or TimeoutError
  // One non-blocking look: true when finished; throws (after aborting what
  // it must) on an asynchronous error or once `deadline` has passed.
  virtual bool poll(Clock::time_point deadline) {
    if (query()) return true;
    if (Clock::now() > deadline) throw TimeoutError("device work not finished by the deadline");
    return false;
  }
};

// How one call is issued on an engine.
struct Issue {
  uintptr_t callerStream = 0;  // the caller's stream (device buffers)
  bool direct = false;         // the algorithm enqueues on the caller's stream itself
  bool capturing = false;      // that stream is being captured into a CUDA graph
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual Transport& transport() = 0;
  virtual Reducer& reducer() = 0;
  virtual Workspace& workspace() = 0;
  // The algorithms this engine can run; the selector chooses among them.
  virtual const std::vector<Algorithm*>& algorithms() = 0;
  // device ordinal the engine serves, -1 for host memory
  virtual int device() const { return -1; }
  // The pipeline chunk this engine runs best with, in bytes; 0 means the
  // communicator's default. Measured: see docs/benchmarks.md.
  virtual int64_t preferredChunkBytes() const { return 0; }
  // Order the collective after the caller's pending work and after the
  // engine's previous call.
  virtual void begin(const Issue& /*issue*/) {}
  // After the collective was issued. Null when the work is already complete,
  // or when it was captured into a graph (nothing to watch until replayed).
  virtual std::shared_ptr<Completion> end(const Issue& /*issue*/) { return nullptr; }
  // Empty when `algo` may run while the caller's stream is being captured
  // into a CUDA graph; otherwise why not.
  virtual std::string captureRefusal(const Algorithm& /*algo*/) const {
    return "host buffers cannot be captured into a CUDA graph";
  }
  // Cancel everything; later calls fail. Called by the thread that runs
  // calls (transports are not thread-safe).
  // A receive MPI could not cancel may still write into the workspace: then
  // the workspace's memory is left to the process, never freed under it.
  virtual void abort() noexcept {
    transport().abort();
    if (!transport().settled()) workspace().abandon();
  }
  // From any thread: make device work stuck on a peer give up.
  virtual void interrupt() noexcept {}
};

}  // namespace rr
