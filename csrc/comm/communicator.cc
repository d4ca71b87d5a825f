#include "comm/communicator.h"

#include <chrono>
#include <cmath>

#include "comm/fork_guard.h"
#include "comm/identity.h"
#include "comm/preflight.h"
#include "comm/validate.h"
#include "common/errors.h"

namespace rr {

Communicator::Communicator(int rank, int size, std::unique_ptr<Engine> host, Options options)
    : rank_(rank), size_(size), opt_(std::move(options)), engines_(std::move(host), size),
      forkGeneration_(forkGeneration()) {
  RR_CHECK_ARG(size >= 1 && rank >= 0 && rank < size,
               "rank " + std::to_string(rank) + " of " + std::to_string(size) + " is not a rank");
  RR_CHECK_ARG(!std::isnan(opt_.timeoutSec) && opt_.timeoutSec > 0,
               "timeout must be > 0 seconds (or infinite), got " + std::to_string(opt_.timeoutSec));
  sendSeq_.assign(size, 0);
  recvSeq_.assign(size, 0);
  recvOpen_.assign(size, 0);
  hook(engines_.host().transport());
}

Communicator::~Communicator() {
  if (forkGeneration() != forkGeneration_) {
    // A forked child: these connections belong to the parent. Touching them
    // (even to close them) would disturb the parent, so they are leaked, and
    // so are the handles of threads that do not exist in this process.
    engines_.abandon();
    new (&worker_) std::thread();
    new (&watchdog_) Watchdog(nullptr);
    return;
  }
  finalize();
}

void Communicator::hook(Transport& t) {
  t.setNoticeHandler([this](const Notice& n) {
    if (!quietNotices_) return verdicts_.raise(n);
    // In a setup exchange: a fast peer may already have failed its first
    // call on this communicator. The exchange still completes (that peer's
    // part of it did); the first call here raises the peer's error.
    try {
      verdicts_.raise(n);
    } catch (Error& e) {
      verdicts_.poison(Verdicts::kindOf(e), e.what(), false);
    }
  });
  t.setWaitHook([this] {
    if (abandon_.load(std::memory_order_relaxed)) throw Error(abandonWhy_);
    if (opt_.interruptCheck) opt_.interruptCheck();
    if (board_) board_->checkBoard();  // a peer in another call under our number
  });
}

void Communicator::addEngine(std::unique_ptr<Engine> engine) {
  hook(engine->transport());
  runExclusive([&] { engines_.add(std::move(engine)); });
}

uint64_t Communicator::sequence() const {
  std::lock_guard<std::mutex> lk(mu_);
  return nextSeq_;
}

std::string Communicator::describe(const Call& c) const { return describeCall(c, rank_); }

uint64_t Communicator::tagOf(const Call& c) const {
  return opt_.fingerprint ? fp::pack(fingerprintOf(c, rank_, size_)) : 0;
}

void Communicator::assignSequence(Call& c) {
  if (c.coll == Coll::kSend) c.seq = sendSeq_.at(c.peer)++;
  else if (c.coll == Coll::kRecv && c.peer == kAnySource) c.seq = 0;  // numbered once resolved
  else if (c.coll == Coll::kRecv) {
    c.seq = recvSeq_.at(c.peer)++;
    ++recvOpen_.at(c.peer);
  } else c.seq = nextSeq_++;
}

int64_t Communicator::chunkFor(const Call& call, const Engine& engine) const {
  if (call.chunkBytes > 0) return call.chunkBytes;
  if (engine.device() < 0) return opt_.chunkBytes;
  if (opt_.deviceChunkBytes > 0) return opt_.deviceChunkBytes;
  if (engine.preferredChunkBytes() > 0) return engine.preferredChunkBytes();
  return opt_.chunkBytes;
}

Clock::time_point Communicator::deadlineFromNow() const {
  // An infinite (or absurdly long) timeout means no deadline, not an overflow.
  if (!(opt_.timeoutSec < 1e9)) return Clock::time_point::max();
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(opt_.timeoutSec));
}

Choice Communicator::explain(const Call& call) {
  validateCall(call, rank_, size_);
  if (isP2p(call.coll)) return {nullptr, "direct: point-to-point"};
  return selectAlgorithm(call, size_, engines_.forCall(call).algorithms(), opt_.policy, true);
}

std::shared_ptr<Work> Communicator::submit(Call call, bool async) {
  auto work = std::make_shared<Work>();
  std::unique_lock<std::mutex> lk(mu_);
  if (forkGeneration() != forkGeneration_)
    RR_THROW(Error, "this communicator was created in the parent process; a forked child "
                    "cannot use it (create a new communicator in the child)");
  if (closing_) RR_THROW(Error, "communicator is finalized; call ringreduce.init() again");
  if (isP2p(call.coll) && !(call.coll == Coll::kRecv && call.peer == kAnySource) &&
      (call.peer < 0 || call.peer >= size_))
    RR_THROW(ArgumentError, std::string(call.coll == Coll::kSend ? "dst" : "src") +
                                " must be a rank in [0, " + std::to_string(size_) + "), got " +
                                std::to_string(call.peer));
  assignSequence(call);
  // Device work only gets enqueued on streams, which never blocks the host
  // for long, so with nothing queued before it, it is enqueued right here:
  // a DDP hook then pays no thread hand-off per bucket. Point-to-point work
  // always goes to the worker, which completes it while later work runs.
  const bool inlineDevice = call.device >= 0 && queue_.empty() && !busy_;
  // Under graph capture the call must be enqueued before the capture ends:
  // it runs here, after earlier work (below), never on the worker.
  if (call.capturing && isP2p(call.coll))
    RR_THROW(ArgumentError, std::string(collName(call.coll)) +
                                " cannot be captured into a CUDA graph; capture collectives only");
  if (isP2p(call.coll) || (async && !inlineDevice && !call.capturing)) {
    if (!worker_.joinable()) worker_ = std::thread([this] { workerLoop(); });
    queue_.push_back(Item{std::move(call), work, {}});
    cv_.notify_all();
    return work;
  }
  // A blocking call runs on the caller's thread once earlier work drained:
  // no hand-off to the worker, so small messages pay no thread wake-up.
  while (!(queue_.empty() && !busy_)) {
    cv_.wait_for(lk, std::chrono::milliseconds(50));
    if (!opt_.interruptCheck || (queue_.empty() && !busy_)) continue;
    lk.unlock();
    try {
      opt_.interruptCheck();
    } catch (Interrupted&) {
      // This call's sequence number is taken but it will never run: end
      // the communicator on every rank rather than let them pair wrongly.
      abort(describe(call) + " was interrupted before it could run");
      throw;
    }
    lk.lock();
  }
  busy_ = true;
  lk.unlock();
  execute(Item{std::move(call), work, {}});
  lk.lock();
  busy_ = false;
  cv_.notify_all();
  return work;
}

void Communicator::refuse(Coll coll, int peer, const std::string& why, int64_t userTag) {
  Call call;
  call.coll = coll;
  call.peer = peer;
  call.userTag = userTag;
  call.dtype = DType::kUInt8;
  std::lock_guard<std::mutex> lk(mu_);
  if (closing_ || forkGeneration() != forkGeneration_) return;
  if (isP2p(coll) && (peer < 0 || peer >= size_ || peer == rank_)) return;  // no such call
  assignSequence(call);
  // Announced in submission order, by whoever runs the queue.
  if (!worker_.joinable()) worker_ = std::thread([this] { workerLoop(); });
  queue_.push_back(Item{std::move(call), nullptr, why.empty() ? std::string("refused") : why});
  cv_.notify_all();
}

void Communicator::announceRefusal(const Call& call, const std::string& why) {
  const bool p2p = isP2p(call.coll);
  if (call.coll == Coll::kRecv && call.peer != kAnySource) {
    std::lock_guard<std::mutex> lk(mu_);
    --recvOpen_.at(call.peer);  // it will never take a message
  }
  if (call.coll == Coll::kRecv && call.peer == kAnySource) return;  // no peer waits for it
  const uint64_t tag = tagOf(call);
  verdicts_.recordRefusal(call.seq, tag, p2p);
  if (!hasHostTransport() || size_ == 1) return;
  Notice n = Verdicts::refusalNotice(call.seq, tag, p2p, describe(call) + " was refused there: " + why);
  int peer = call.peer;
  engines_.host().transport().sendNotice(n, p2p ? &peer : nullptr, p2p ? 1 : 0);
}

void Communicator::execute(const Item& item) {
  const Call& call = item.call;
  if (!item.refusal.empty()) {
    announceRefusal(call, item.refusal);
    return;
  }
  Work& work = *item.work;
  if (verdicts_.poisoned()) {
    if (verdicts_.peersUntold()) tellPeersAndAbort();  // poisoned by the watchdog
    work.markFailed(verdicts_.error());
    return;
  }
  bool moving = false;
  try {
    try {
      validateCall(call, rank_, size_);
    } catch (ArgumentError& bad) {
      announceRefusal(call, bad.what());  // peers must not wait for us
      throw;
    }
    Engine& engine = engines_.forCall(call);
    if (call.coll == Coll::kRecv && call.peer == kAnySource && !engine.transport().canProbe())
      RR_THROW(ArgumentError, "recv from any source: the " + engine.transport().name() +
                                  " transport cannot look for waiting messages; name the source");
    const auto deadline = deadlineFromNow();
    const uint64_t tag = tagOf(call);
    const Channel ch = isP2p(call.coll) ? Channel::kPointToPoint : Channel::kCollective;
    engines_.each([&](Engine& e) {
      e.transport().setDeadline(deadline);
      e.transport().setTag(tag, ch);
    });
    moving = true;
    // The history hashes every collective this rank entered, in order (the
    // board shows it to peers of this machine).
    const uint64_t historyBefore = history_;
    if (!isP2p(call.coll)) {
      history_ = fp::mix(history_ ^ tag);
      if (board_) board_->enterCall(call.seq, tag, historyBefore);
    }
    if (!isP2p(call.coll)) verdicts_.startCollective(call.seq);  // a peer may have refused it
    if (size_ > 1 && (opt_.check || opt_.nanCheck) && !isP2p(call.coll) && hasHostTransport()) {
      std::exception_ptr verdict = agreeBeforeMoving(call, fingerprintOf(call, rank_, size_),
                                                     engine.reducer(), opt_.nanCheck,
                                                     engines_.host(), rank_, size_);
      // Every rank reached the same verdict before any data moved, so the
      // communicator stays usable, and the call never happened.
      moving = false;
      if (verdict) {
        history_ = historyBefore;
        std::rethrow_exception(verdict);
      }
      moving = true;
    }
    if (isP2p(call.coll)) {
      executeP2p(call, engine, item.work, deadline);
      return;
    }
    const bool device = engine.device() >= 0;
    Algorithm* algo = nullptr;
    try {
      algo = choices_.choose(call, size_, engine.algorithms(), opt_.policy, policyEpoch_);
    } catch (ArgumentError& no) {
      // Before any data moved: a refusal, announced like bad arguments (the
      // ranks that refuse alike keep a usable communicator). A zero-size
      // call no algorithm takes still meets its peers below.
      if (!(size_ > 1 && movesNothing(call))) {
        moving = false;
        announceRefusal(call, no.what());
        throw;
      }
    }
    if (size_ > 1 && movesNothing(call) && !(device && algo && algo->fingerprintInFlags())) {
      // Nothing to move, but the fingerprints still meet: a rank whose call
      // differs learns it here instead of at its peers' deadline. Device
      // algorithms with fingerprints in their flags meet in their kernel (a
      // peer whose count is not 0 runs that kernel too); the rest over the host.
      if (call.capturing) {
        moving = false;  // every rank refuses alike
        RR_THROW(ArgumentError, "a zero-size call over the host transport cannot be captured "
                                "into a CUDA graph");
      }
      compareWithNeighbours();
      work.markDone(nullptr);
      return;
    }
    const Issue issue{call.stream, algo->runsOnCallerStream(), call.capturing};
    if (issue.capturing) {
      // Refused the same way on every rank, before anything moves.
      const std::string no = engine.captureRefusal(*algo);
      if (!no.empty()) {
        moving = false;
        RR_THROW(ArgumentError, "cannot capture this call into a CUDA graph: " + no);
      }
    }
    // Where neither the transport's messages nor the algorithm's flags carry
    // the fingerprint (the ring over NCCL), the host transport compares it.
    if (device && opt_.deviceFingerprint && size_ > 1 && hasHostTransport() &&
        !algo->fingerprintInFlags() && !engine.transport().carriesTags())
      compareWithNeighbours();
    AlgoEnv env{engine.transport(), engine.reducer(), engine.workspace(), chunkFor(call, engine),
                opt_.depth, tag, call.capturing};
    engine.begin(issue);
    algo->run(call, env);
    finishDevice(engine.end(issue), work, deadline, call);
  } catch (Error& e) {
    e.addContext(describe(call));
    if (moving) poison(Verdicts::kindOf(e), e.what());
    work.markFailed(std::current_exception());
  } catch (...) {
    if (moving) poison(Verdicts::Kind::kError, describe(call) + ": unexpected error");
    work.markFailed(std::current_exception());
  }
}

void Communicator::finishDevice(std::shared_ptr<Completion> c, Work& work,
                                Clock::time_point deadline, const Call& call) {
  work.setDeadline(deadline);
  if (c) watchdog_.watch(c, deadline, call, rank_);
  work.markDone(std::move(c));
}

void Communicator::compareWithNeighbours() {
  Transport& t = engines_.host().transport();
  Xfer s{(rank_ + 1) % size_, nullptr, 0}, r{(rank_ - 1 + size_) % size_, nullptr, 0};
  t.wait(t.start(&s, 1, &r, 1));
}

// Caller holds the busy token, so it may use the host transport.
void Communicator::poison(Verdicts::Kind kind, const std::string& msg) noexcept {
  verdicts_.poison(kind, msg, false);
  tellPeersAndAbort();
}

void Communicator::tellPeersAndAbort() noexcept {
  const bool tell = verdicts_.poison(Verdicts::Kind::kError, std::string(), true);
  const Notice notice = verdicts_.abortNotice();
  if (tell && size_ > 1 && hasHostTransport()) engines_.host().transport().sendNotice(notice, nullptr, 0);
  // Peers of this machine that meet our part of a round later raise too.
  if (board_) board_->abandon(notice.kind);
  engines_.abortAll();
}

void Communicator::abort(const std::string& why) noexcept {
  abandonWhy_ = why;
  abandon_ = true;
  runExclusive([&] { poison(Verdicts::Kind::kError, why); });
}

// Runs `body` holding the busy token: no call runs meanwhile. With
// afterQueue, also after every call queued before it.
void Communicator::runExclusive(const std::function<void()>& body, bool afterQueue) {
  std::unique_lock<std::mutex> lk(mu_);
  while (busy_ || (afterQueue && !queue_.empty())) cv_.wait(lk);
  busy_ = true;
  lk.unlock();
  std::exception_ptr err;
  try {
    body();
  } catch (...) {
    err = std::current_exception();
  }
  lk.lock();
  busy_ = false;
  cv_.notify_all();
  if (err) std::rethrow_exception(err);
}

void Communicator::workerLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  auto idle = std::chrono::microseconds(20);
  for (;;) {
    const bool work = !queue_.empty(), transfers = !inFlight_.empty() || !anyRecvs_.empty();
    if ((work || transfers) && !busy_) {
      busy_ = true;
      Item item;
      if (work) {
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      lk.unlock();
      const bool progressed = work ? (execute(item), true) : progressInFlight();
      lk.lock();
      busy_ = false;
      cv_.notify_all();
      // Back off while transfers wait for peers, so an idle rank does not burn a core.
      idle = progressed ? std::chrono::microseconds(20)
                        : std::min<std::chrono::microseconds>(idle * 2, std::chrono::microseconds(1000));
      if (!work) cv_.wait_for(lk, idle, [&] { return !queue_.empty() || stop_; });
      continue;
    }
    if (stop_ && queue_.empty()) return;
    cv_.wait_for(lk, std::chrono::milliseconds(50));
  }
}

// The watchdog found device work failed or late (its own thread). Stuck
// kernels are freed from here; the rest is aborted, and the peers told, by
// the thread that runs next: its waits see abandon_.
void Communicator::onDeviceFailure(Verdicts::Kind kind, const std::string& msg) {
  verdicts_.poison(kind, msg, false);
  engines_.interruptDevices();
  abandonWhy_ = msg;
  abandon_ = true;
}

}  // namespace rr
