// The communicator owns the engines (host and device), the worker thread
// that runs asynchronous work in submission order, sequence numbers and
// fingerprints, timeouts, the optional pre-flight agreement check, and the
// poisoned state that follows a failure.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "algo/call.h"
#include "algo/select.h"
#include "comm/engine.h"
#include "comm/engines.h"
#include "comm/inflight.h"
#include "comm/verdicts.h"
#include "comm/watchdog.h"
#include "comm/work.h"
#include "common/dtypes.h"
#include "common/fingerprint.h"
#include "shm/shm_world.h"

namespace rr {

struct Options {
  double timeoutSec = 300.0;     // per collective; infinity: no timeout
  int64_t chunkBytes = 1 << 20;  // host engines
  int64_t deviceChunkBytes = 0;  // device engines; 0: the engine's preferred size
  int depth = 2;
  // Every message carries the call's fingerprint (on by default; off only to
  // measure what it costs: then every call's tag is 0).
  bool fingerprint = true;
  bool check = false;     // agree on a fingerprint before moving data (strict mode)
  bool nanCheck = false;  // refuse NaN/Inf input
  // Device calls whose algorithm carries no fingerprint of its own (the ring
  // over NCCL) first compare fingerprints with the ring neighbours over the
  // host transport: one zero-byte message each way.
  bool deviceFingerprint = true;
  SelectPolicy policy;
  // Called every few milliseconds while a call waits (the bindings check for
  // Ctrl-C there). It may throw Interrupted.
  std::function<void()> interruptCheck;
};

class Communicator {
 public:
  // `host` moves host memory; in a device-only world (no host transport) it
  // spans one rank and only device buffers can be used.
  Communicator(int rank, int size, std::unique_ptr<Engine> host, Options options);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  void addEngine(std::unique_ptr<Engine> engine);
  // The device engine serving `device`, or null.
  Engine* findEngine(int device) const { return engines_.find(device); }
  bool hasHostTransport() const { return engines_.hostSpansWorld(); }
  // The host engine's transport (device engines stage over it).
  Transport& hostTransport() { return engines_.host().transport(); }

  int rank() const { return rank_; }
  int size() const { return size_; }
  Options& options() { return opt_; }
  // Changes the selection policy (between calls, on every rank alike).
  void setPolicy(const SelectPolicy& p) {
    runExclusive([&] {
      opt_.policy = p;
      ++policyEpoch_;
    });
  }
  std::vector<std::string> engineNames() const { return engines_.names(); }
  uint64_t sequence() const;

  // Which algorithm would run `call` and why. Validates the call.
  Choice explain(const Call& call);

  // Runs the call now on the calling thread (blocking, once earlier work has
  // drained) or queues it for the worker thread. Point-to-point calls are
  // always asynchronous: they complete while later work proceeds.
  std::shared_ptr<Work> submit(Call call, bool async);

  // A call this rank refused before submitting it (bad arguments). Its
  // sequence number is used up, so the next call cannot pair with the
  // peers' version of this one, and the peers it would have talked to are
  // told: if they went ahead, they raise CollectiveMismatch instead of
  // waiting. Ranks that all refuse alike keep a usable communicator.
  void refuse(Coll coll, int peer, const std::string& why, int64_t userTag = 0);

  // Collective: maps one shared-memory segment into every rank (they must
  // all be on this machine) for the host shared-memory algorithms, rounds of
  // `roundBytes` per rank. Empty when attached; otherwise why not, the same
  // on every rank (then nothing changes).
  std::string attachSharedMemory(int64_t roundBytes);
  bool hasSharedMemory() const { return board_ != nullptr; }

  // A blocking all-gather of a few bytes per rank over the host transport,
  // for setting up engines (every rank calls it at the same point). A
  // `setup` exchange takes no sequence number from the calls.
  std::vector<std::string> allgatherBytes(const std::string& mine, bool setup = false);

  // Waits for queued and in-flight work (bounded by the timeout), then
  // aborts what is left, stops the threads and releases the engines.
  // Idempotent, callable from any thread; never throws.
  void finalize() noexcept;
  bool finalized() const;
  // Non-empty once a failure has aborted the communicator.
  std::string poisonMessage() const { return verdicts_.message(); }
  // Abort from outside a call (Ctrl-C caught in Python, a user's abort):
  // peers are told, and every later call raises.
  void abort(const std::string& why) noexcept;

 private:
  struct Item {
    Call call;
    std::shared_ptr<Work> work;
    std::string refusal;  // non-empty: a refused call, only announced
  };

  void hook(Transport& t);
  void assignSequence(Call& call);
  void execute(const Item& item);
  void executeP2p(const Call& call, Engine& engine, const std::shared_ptr<Work>& work,
                  Clock::time_point deadline);
  void finishDevice(std::shared_ptr<Completion> c, Work& work, Clock::time_point deadline,
                    const Call& call);
  void announceRefusal(const Call& call, const std::string& why);
  bool progressInFlight();
  // Receives from any source, in submission order: each takes a rank once a
  // message from it waits that no receive from it submitted earlier is
  // still expecting. Caller holds the busy token; true when one resolved.
  bool resolveAnySources();
  void failPointToPoint(Verdicts::Kind kind, const std::string& msg);
  void compareWithNeighbours();
  int64_t chunkFor(const Call& call, const Engine& engine) const;
  Clock::time_point deadlineFromNow() const;
  void poison(Verdicts::Kind kind, const std::string& msg) noexcept;
  void tellPeersAndAbort() noexcept;
  void runExclusive(const std::function<void()>& body, bool afterQueue = false);
  void workerLoop();
  void onDeviceFailure(Verdicts::Kind kind, const std::string& msg);
  std::string describe(const Call& call) const;
  uint64_t tagOf(const Call& call) const;

  int rank_, size_;
  Options opt_;
  EngineSet engines_;
  int forkGeneration_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t nextSeq_ = 0;
  uint64_t setupSeq_ = 0;  // setup exchanges (allgatherBytes(.., true))
  bool quietNotices_ = false;  // in a setup exchange: a peer's notice poisons, never throws
  std::vector<uint64_t> sendSeq_, recvSeq_;  // point-to-point, per peer
  // Per peer: receives from it submitted and not yet ended. A receive from
  // any source never takes a rank that an earlier receive is waiting on.
  std::vector<int64_t> recvOpen_;
  struct AnyRecv {
    Call call;
    std::shared_ptr<Work> work;
    Engine* engine;
    Clock::time_point deadline;
  };
  std::deque<AnyRecv> anyRecvs_;  // under mu_
  int anyNext_ = 0;               // where the next look for a source starts
  std::deque<Item> queue_;
  InFlightTransfers inFlight_;
  bool busy_ = false;
  bool closing_ = false;  // finalize() has begun: no new work
  bool finalized_ = false;
  bool stop_ = false;
  std::thread worker_;
  std::atomic<bool> abandon_{false};  // waits give up (finalize past its bound, external abort)
  std::string abandonWhy_;

  Watchdog watchdog_{[this](Verdicts::Kind kind, const std::string& msg) { onDeviceFailure(kind, msg); }};

  Verdicts verdicts_;

  // The shared memory of the ranks of one machine, when attached: every
  // collective is put on its board, and every wait looks at the peers'.
  std::shared_ptr<ShmWorld> board_;
  uint64_t history_ = 0;  // a hash of the fingerprints of the collectives entered

  ChoiceCache choices_;  // used by the thread that runs calls only
  uint64_t policyEpoch_ = 0;  // bumped when the policy changes
};

}  // namespace rr
