// The communicator owns the engines (host and device), the worker thread
// that runs asynchronous work in submission order, sequence numbers,
// timeouts, the optional pre-flight agreement check, and the poisoned state
// that follows a failure.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/engine.h"
#include "comm/work.h"
#include "common/dtypes.h"

namespace rr {


struct Call {
  Coll coll = Coll::kAllreduce;
  const void* in = nullptr;
  void* out = nullptr;
  // Elements of `in` (allreduce, reduce-scatter, broadcast) or of this rank's
  // block (allgather).
  int64_t count = 0;
  DType dtype = DType::kFloat32;
  ReduceOp op = ReduceOp::kSum;
  int root = 0;
  std::vector<int64_t> blockCounts;  // allgather: elements from each rank
  int device = -1;                   // -1: host memory
  uintptr_t stream = 0;              // caller's stream for device buffers
  int64_t chunkBytes = 0;            // 0: the communicator's default
};

struct Options {
  double timeoutSec = 300.0;
  int64_t chunkBytes = 1 << 20;        // host engines
  int64_t deviceChunkBytes = 0;        // device engines; 0: the engine's preferred size
  int depth = 2;
  // All-reduces of at most this many bytes take the latency variant
  // (Ring::allreduceSmall); 0 turns it off.
  int64_t smallBytes = 32 << 10;
  bool check = false;     // agree on a fingerprint before moving data
  bool nanCheck = false;  // refuse NaN/Inf input
};

class Communicator {
 public:
  Communicator(int rank, int size, std::unique_ptr<Engine> host, Options options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  void addEngine(std::unique_ptr<Engine> engine);
  // The device engine serving `device`, or null.
  Engine* findEngine(int device) const {
    for (size_t i = 1; i < engines_.size(); ++i)
      if (engines_[i]->device() == device) return engines_[i].get();
    return nullptr;
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  Options& options() { return opt_; }
  std::vector<std::string> engineNames() const;
  uint64_t sequence() const { return seq_; }

  // The path an all-reduce of this shape takes on that device's engine
  // ("ring", "ipc-one_shot", ...). The engine must exist.
  std::string allreducePath(int device, int64_t count, DType dtype, ReduceOp op);

  // Runs the call now on the calling thread (async = false, once earlier
  // asynchronous work has drained) or queues it for the worker thread.
  std::shared_ptr<Work> submit(Call call, bool async);

  // Waits for queued work (bounded by the timeout), stops the worker and
  // releases the engines. Idempotent; never throws.
  void finalize() noexcept;
  bool finalized() const { return finalized_; }
  // Non-empty once a failure has aborted the communicator.
  std::string poisonMessage() const;

 private:
  struct Item {
    Call call;
    std::shared_ptr<Work> work;
  };
  void execute(const Call& call, Work& work);
  std::shared_ptr<Completion> runRing(Engine& engine, const Call& call);
  // Returns the agreed error, or null when the ranks agree.
  std::exception_ptr preflight(const Call& call, uint64_t seq, Engine& engine);
  Engine& engineFor(const Call& call);
  std::exception_ptr poisonError() const;
  void poison(const std::exception_ptr& e, int kind, const std::string& msg);
  void workerLoop();
  // Device work only gets enqueued; the watchdog thread enforces its
  // deadline, aborting the engines (ncclCommAbort frees stuck kernels).
  void watch(std::shared_ptr<Completion> c, Clock::time_point deadline, std::string what);
  void watchdogLoop();
  std::string describe(const Call& call, uint64_t seq) const;

  int rank_, size_;
  Options opt_;
  std::vector<std::unique_ptr<Engine>> engines_;  // [0] is the host engine
  uint64_t seq_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool busy_ = false;
  bool stop_ = false;
  bool finalized_ = false;
  std::thread worker_;

  struct Watched {
    std::shared_ptr<Completion> completion;
    Clock::time_point deadline;
    std::string what;
  };
  std::mutex watchMu_;
  std::condition_variable watchCv_;
  std::vector<Watched> watched_;
  bool watchStop_ = false;
  std::thread watchdog_;

  int poisonKind_ = -1;  // -1 none, 0 error, 1 timeout, 2 mismatch
  std::string poisonMsg_;
};

}  // namespace rr
