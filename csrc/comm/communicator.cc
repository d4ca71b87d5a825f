#include "comm/communicator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "comm/fork_guard.h"
#include "comm/preflight.h"
#include "comm/validate.h"
#include "ring/ring_allreduce.h"
#include "common/errors.h"

namespace rr {
namespace {

bool isP2p(Coll c) { return c == Coll::kSend || c == Coll::kRecv; }

bool reduces(Coll c) {
  return c == Coll::kAllreduce || c == Coll::kReduceScatter || c == Coll::kReduce;
}

// True when no rank moves any byte in this call (every rank can tell alone,
// since sizes are part of the call).
bool movesNothing(const Call& c) {
  switch (c.coll) {
    case Coll::kBarrier:
    case Coll::kBootstrap: return false;
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter: return sumOf(c.counts) == 0;
    case Coll::kAllToAll: return false;  // splits differ per rank; the algorithm exchanges
    default: return c.count == 0;
  }
}

Notice::Kind noticeKind(int poison) {
  return poison == 1 ? Notice::kAbortTimeout : poison == 2 ? Notice::kAbortMismatch : Notice::kAbortError;
}

}  // namespace

Communicator::Communicator(int rank, int size, std::unique_ptr<Engine> host, Options options)
    : rank_(rank), size_(size), opt_(std::move(options)), forkGeneration_(forkGeneration()) {
  RR_CHECK_ARG(host != nullptr, "a communicator needs a host engine");
  RR_CHECK_ARG(size >= 1 && rank >= 0 && rank < size,
               "rank " + std::to_string(rank) + " of " + std::to_string(size) + " is not a rank");
  RR_CHECK_ARG(!std::isnan(opt_.timeoutSec) && opt_.timeoutSec > 0,
               "timeout must be > 0 seconds (or infinite), got " + std::to_string(opt_.timeoutSec));
  sendSeq_.assign(size, 0);
  recvSeq_.assign(size, 0);
  engines_.push_back(std::move(host));
  Transport& t = engines_[0]->transport();
  t.setNoticeHandler([this](const Notice& n) { onNotice(n); });
  t.setWaitHook([this] { onWait(); });
}

Communicator::~Communicator() {
  if (forkGeneration() != forkGeneration_) {
    // A forked child: these connections belong to the parent. Touching them
    // (even to close them) would disturb the parent, so they are leaked, and
    // so are the handles of threads that do not exist in this process.
    for (auto& e : engines_) e.release();
    new (&worker_) std::thread();
    new (&watchdog_) std::thread();
    return;
  }
  finalize();
}

void Communicator::addEngine(std::unique_ptr<Engine> engine) {
  RR_CHECK_ARG(engine->transport().size() == size_,
               "engine " + engine->transport().name() + " spans " +
                   std::to_string(engine->transport().size()) + " ranks, communicator " +
                   std::to_string(size_));
  engine->transport().setNoticeHandler([this](const Notice& n) { onNotice(n); });
  engine->transport().setWaitHook([this] { onWait(); });
  runExclusive([&] { engines_.push_back(std::move(engine)); });
}

Engine* Communicator::findEngine(int device) const {
  for (size_t i = 1; i < engines_.size(); ++i)
    if (engines_[i]->device() == device) return engines_[i].get();
  return nullptr;
}

std::vector<std::string> Communicator::engineNames() const {
  std::vector<std::string> names;
  for (auto& e : engines_)
    if (e->transport().size() == size_) names.push_back(e->transport().name());
  return names;
}

uint64_t Communicator::sequence() const {
  std::lock_guard<std::mutex> lk(mu_);
  return nextSeq_;
}

std::string Communicator::describe(const Call& c) const {
  std::string s = "rank " + std::to_string(rank_) + ": " + collName(c.coll) + " #" +
                  std::to_string(c.seq);
  if (c.coll == Coll::kBarrier || c.coll == Coll::kBootstrap) return s;
  s += std::string(" (") + dtypeName(c.dtype);
  if (c.counts.empty()) s += " x " + std::to_string(c.count);
  if (reduces(c.coll)) s += std::string(", ") + opName(c.op);
  if (c.coll == Coll::kBroadcast || c.coll == Coll::kReduce || c.coll == Coll::kGather ||
      c.coll == Coll::kScatter)
    s += ", root " + std::to_string(c.root);
  if (isP2p(c.coll)) s += std::string(c.coll == Coll::kSend ? ", to rank " : ", from rank ") +
                          std::to_string(c.peer);
  return s + ")";
}

Fingerprint Communicator::fingerprintOf(const Call& c) const {
  Fingerprint f;
  f.seq = c.seq;
  f.coll = isP2p(c.coll) ? Coll::kSend : c.coll;  // a send pairs with a receive
  f.dtype = c.coll == Coll::kBarrier ? DType::kUInt8 : c.dtype;
  f.op = reduces(c.coll) ? c.op : ReduceOp::kSum;
  switch (c.coll) {
    case Coll::kAllgather:
    case Coll::kGather:
    case Coll::kScatter: f.count = fp::hashSizes(c.counts.begin(), c.counts.end()); break;
    case Coll::kAllToAll:  // each rank's splits are its own; the sizes are checked per message
    case Coll::kBarrier:
    case Coll::kBootstrap: f.count = 0; break;
    default: f.count = c.count;
  }
  if (c.coll == Coll::kSend) f.root = int64_t(rank_) * size_ + c.peer;
  else if (c.coll == Coll::kRecv) f.root = int64_t(c.peer) * size_ + rank_;
  else if (c.coll == Coll::kBroadcast || c.coll == Coll::kReduce || c.coll == Coll::kGather ||
           c.coll == Coll::kScatter || c.coll == Coll::kAllreduce)
    f.root = c.root;  // allreduce: 0, or sharded_ps's number of servers
  return f;
}

void Communicator::assignSequence(Call& c) {
  if (c.coll == Coll::kSend) c.seq = sendSeq_.at(c.peer)++;
  else if (c.coll == Coll::kRecv) c.seq = recvSeq_.at(c.peer)++;
  else c.seq = nextSeq_++;
}

Engine& Communicator::engineFor(const Call& call) const {
  if (call.device < 0) {
    if (!hasHostTransport())
      RR_THROW(ArgumentError, "host buffer given to a communicator that moves device memory "
                              "only; pass a CUDA buffer, or create the communicator with a "
                              "host transport (backend 'mpi' under mpirun, 'ucx' elsewhere)");
    return *engines_[0];
  }
  if (Engine* e = findEngine(call.device)) return *e;
  for (size_t i = 1; i < engines_.size(); ++i)
    RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                                " but this rank's communicator uses cuda:" +
                                std::to_string(engines_[i]->device()));
  RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                              " but this communicator has no device engine (built without "
                              "CUDA, or no GPU was found)");
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
  Engine& e = engineFor(call);
  return selectAlgorithm(call, size_, e.algorithms(), opt_.policy);
}

std::shared_ptr<Work> Communicator::submit(Call call, bool async) {
  auto work = std::make_shared<Work>();
  std::unique_lock<std::mutex> lk(mu_);
  if (forkGeneration() != forkGeneration_)
    RR_THROW(Error, "this communicator was created in the parent process; a forked child "
                    "cannot use it (create a new communicator in the child)");
  if (closing_) RR_THROW(Error, "communicator is finalized; call ringreduce.init() again");
  if (isP2p(call.coll) && (call.peer < 0 || call.peer >= size_))
    RR_THROW(ArgumentError, std::string(call.coll == Coll::kSend ? "dst" : "src") +
                                " must be a rank in [0, " + std::to_string(size_) + "), got " +
                                std::to_string(call.peer));
  assignSequence(call);
  // Device work only gets enqueued on streams, which never blocks the host
  // for long, so with nothing queued before it, it is enqueued right here:
  // a DDP hook then pays no thread hand-off per bucket.
  const bool inlineDevice = call.device >= 0 && queue_.empty() && !busy_;
  if ((async || isP2p(call.coll)) && !(inlineDevice && !isP2p(call.coll))) {
    if (!worker_.joinable()) worker_ = std::thread([this] { workerLoop(); });
    queue_.push_back(Item{std::move(call), work, {}});
    cv_.notify_all();
    return work;
  }
  // A blocking call runs on the caller's thread once earlier work drained:
  // no hand-off to the worker, so small messages pay no thread wake-up.
  while (!(queue_.empty() && !busy_)) {
    cv_.wait_for(lk, std::chrono::milliseconds(50));
    if (opt_.interruptCheck && !(queue_.empty() && !busy_)) {
      lk.unlock();
      opt_.interruptCheck();
      lk.lock();
    }
  }
  busy_ = true;
  lk.unlock();
  execute(Item{std::move(call), work, {}});
  lk.lock();
  busy_ = false;
  cv_.notify_all();
  return work;
}

void Communicator::refuse(Coll coll, int peer, const std::string& why) {
  Call call;
  call.coll = coll;
  call.peer = peer;
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
  uint64_t tag = fp::pack(fingerprintOf(call));
  {
    std::lock_guard<std::mutex> lk(mu_);
    refusedTags_.push_back(tag);
    if (refusedTags_.size() > 256) refusedTags_.pop_front();
  }
  if (!hasHostTransport() || size_ == 1) return;
  Notice n;
  n.kind = Notice::kRefused;
  n.seq = call.seq;
  n.tag = tag;
  n.setText(describe(call) + " was refused there: " + why);
  int peer = call.peer;
  engines_[0]->transport().sendNotice(n, isP2p(call.coll) ? &peer : nullptr, isP2p(call.coll) ? 1 : 0);
}

void Communicator::onNotice(const Notice& n) {
  std::string from = "rank " + std::to_string(n.origin);
  if (n.kind == Notice::kRefused) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Every rank refused this call alike: nobody waits for it.
      if (std::find(refusedTags_.begin(), refusedTags_.end(), n.tag) != refusedTags_.end()) return;
    }
    throw MismatchError(from + " refused a call this rank made: " + n.text);
  }
  std::string msg = from + " aborted the communicator: " + n.text;
  if (n.kind == Notice::kAbortTimeout) throw TimeoutError(msg);
  if (n.kind == Notice::kAbortMismatch) throw MismatchError(msg);
  throw Error(msg);
}

void Communicator::onWait() {
  if (abandon_.load(std::memory_order_relaxed)) throw Error(abandonWhy_);
  if (opt_.interruptCheck) opt_.interruptCheck();
}

void Communicator::execute(const Item& item) {
  const Call& call = item.call;
  if (!item.refusal.empty()) {
    announceRefusal(call, item.refusal);
    return;
  }
  Work& work = *item.work;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (poisonKind_ != Poison::kNone) {
      const bool tell = !peersTold_;  // poisoned by the watchdog: tell the peers now
      Poison kind = poisonKind_;
      std::string msg = poisonMsg_;
      lk.unlock();
      if (tell) poison(kind, msg, true);
      work.markFailed(poisonError());
      return;
    }
  }
  bool moving = false;
  try {
    try {
      validateCall(call, rank_, size_);
    } catch (ArgumentError& bad) {
      announceRefusal(call, bad.what());  // peers must not wait for us
      throw;
    }
    Engine& engine = engineFor(call);
    const auto deadline = deadlineFromNow();
    const uint64_t tag = fp::pack(fingerprintOf(call));
    const Channel ch = isP2p(call.coll) ? Channel::kPointToPoint : Channel::kCollective;
    for (auto& e : engines_) {
      e->transport().setDeadline(deadline);
      e->transport().setTag(tag, ch);
    }
    moving = true;
    if (size_ > 1 && (opt_.check || opt_.nanCheck) && !isP2p(call.coll)) {
      std::exception_ptr verdict = preflight(call, engine);
      // Every rank reached the same verdict before any data moved, so the
      // communicator stays usable.
      moving = false;
      if (verdict) std::rethrow_exception(verdict);
      moving = true;
    }
    if (isP2p(call.coll)) {
      executeP2p(call, engine, item.work, deadline);
      return;
    }
    if (size_ > 1 && movesNothing(call)) {
      // Nothing to move, but the fingerprints still meet: a rank whose call
      // differs learns it here instead of at its peers' deadline.
      compareWithNeighbours();
      work.markDone(nullptr);
      return;
    }
    Choice choice;
    try {
      choice = selectAlgorithm(call, size_, engine.algorithms(), opt_.policy);
    } catch (ArgumentError&) {
      // A refusal depends only on the call's shape and the world, so every
      // rank refuses alike before moving data: nobody waits, nothing to abort.
      moving = false;
      throw;
    }
    // Where neither the transport's messages nor the algorithm's flags carry
    // the fingerprint (the ring over NCCL), the host transport compares it.
    if (engine.device() >= 0 && opt_.deviceFingerprint && size_ > 1 && hasHostTransport() &&
        !choice.algo->fingerprintInFlags() && !engine.transport().carriesTags())
      compareWithNeighbours();
    AlgoEnv env{engine.transport(), engine.reducer(), engine.workspace(), chunkFor(call, engine),
                opt_.depth};
    engine.begin(call.stream);
    choice.algo->run(call, env);
    auto completion = engine.end();
    work.setDeadline(deadline);
    if (completion) watch(completion, deadline, describe(call));
    work.markDone(std::move(completion));
  } catch (Error& e) {
    e.addContext(describe(call));
    auto ep = std::current_exception();
    if (moving) {
      Poison kind = dynamic_cast<TimeoutError*>(&e)    ? Poison::kTimeout
                    : dynamic_cast<MismatchError*>(&e) ? Poison::kMismatch
                                                       : Poison::kError;
      poison(kind, e.what(), true);
    }
    work.markFailed(ep);
  } catch (...) {
    if (moving) poison(Poison::kError, describe(call) + ": unexpected error", true);
    work.markFailed(std::current_exception());
  }
}

void Communicator::compareWithNeighbours() {
  Transport& t = engines_[0]->transport();
  Xfer s{(rank_ + 1) % size_, nullptr, 0}, r{(rank_ - 1 + size_) % size_, nullptr, 0};
  t.wait(t.start(&s, 1, &r, 1));
}

void Communicator::executeP2p(const Call& call, Engine& engine, const std::shared_ptr<Work>& work,
                              Clock::time_point deadline) {
  Transport& t = engine.transport();
  Xfer x{call.peer, call.coll == Coll::kSend ? const_cast<void*>(call.in) : call.out,
         static_cast<size_t>(bytesOf(call, call.count))};
  const bool send = call.coll == Coll::kSend;
  engine.begin(call.stream);
  Transport::ExchangeId id = t.start(send ? &x : nullptr, send ? 1 : 0, send ? nullptr : &x, send ? 0 : 1);
  if (engine.device() >= 0) {  // ordered on the device stream; the host does not wait
    t.wait(id);
    auto completion = engine.end();
    work->setDeadline(deadline);
    if (completion) watch(completion, deadline, describe(call));
    work->markDone(std::move(completion));
    return;
  }
  std::lock_guard<std::mutex> lk(mu_);
  inFlight_.push_back(InFlight{&t, id, work, deadline, describe(call)});
}

// Tests every point-to-point exchange once. Caller holds the busy token.
// Returns true when something completed.
bool Communicator::progressInFlight() {
  std::vector<InFlight> items;
  {
    std::lock_guard<std::mutex> lk(mu_);
    items.swap(inFlight_);
  }
  bool any = false;
  std::vector<InFlight> still;
  for (size_t i = 0; i < items.size(); ++i) {
    InFlight& f = items[i];
    try {
      f.transport->setDeadline(f.deadline);
      if (f.transport->test(f.id)) {
        f.work->markDone(nullptr);
        any = true;
      } else if (Clock::now() > f.deadline) {
        throw TimeoutError("timed out: the peer never matched this point-to-point transfer");
      } else {
        still.push_back(std::move(f));
      }
    } catch (Error& e) {
      e.addContext(f.what);
      f.work->markFailed(std::current_exception());
      poison(dynamic_cast<TimeoutError*>(&e) ? Poison::kTimeout
             : dynamic_cast<MismatchError*>(&e) ? Poison::kMismatch
                                                : Poison::kError,
             e.what(), true);
      for (size_t k = i + 1; k < items.size(); ++k) items[k].work->markFailed(poisonError());
      for (auto& s : still) s.work->markFailed(poisonError());
      return true;
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  for (auto& s : still) inFlight_.push_back(std::move(s));
  return any;
}

std::exception_ptr Communicator::preflight(const Call& call, Engine& engine) {
  if (!hasHostTransport()) return nullptr;
  Engine& host = *engines_[0];
  return agreeBeforeMoving(call, fingerprintOf(call), engine.reducer(), opt_.nanCheck, host,
                           rank_, size_);
}

std::vector<std::string> Communicator::allgatherBytes(const std::string& mine) {
  if (size_ == 1) return {mine};
  RR_CHECK_ARG(hasHostTransport(), "allgatherBytes needs a host transport");
  // Sizes first (fixed width), then the bytes; one call, one sequence number.
  Call call;
  call.coll = Coll::kBootstrap;
  call.dtype = DType::kUInt8;
  std::vector<int64_t> sizes(size_, 0);
  sizes[rank_] = static_cast<int64_t>(mine.size());
  std::string all;
  std::vector<std::string> out;
  std::exception_ptr err;
  auto work = std::make_shared<Work>();
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (closing_) RR_THROW(Error, "communicator is finalized");
    assignSequence(call);
    while (!(queue_.empty() && !busy_)) cv_.wait(lk);
    busy_ = true;
  }
  try {
    Transport& t = engines_[0]->transport();
    t.setDeadline(deadlineFromNow());
    t.setTag(fp::pack(fingerprintOf(call)), Channel::kCollective);
    RingOptions ro;
    ro.chunkBytes = opt_.chunkBytes;
    Ring ring(t, engines_[0]->reducer(), engines_[0]->workspace(), ro);
    ring.allgather(&sizes[rank_], sizes.data(), std::vector<int64_t>(size_, 8));
    std::vector<int64_t> offset(size_ + 1, 0);
    for (int q = 0; q < size_; ++q) {
      RR_CHECK_ARG(sizes[q] >= 0 && sizes[q] < (int64_t(1) << 30), "bad bootstrap size");
      offset[q + 1] = offset[q] + sizes[q];
    }
    all.assign(static_cast<size_t>(offset[size_]), '\0');
    if (!mine.empty()) std::memcpy(&all[offset[rank_]], mine.data(), mine.size());
    ring.allgather(all.data() + offset[rank_], all.data(), sizes);
    for (int q = 0; q < size_; ++q) out.push_back(all.substr(offset[q], sizes[q]));
  } catch (Error& e) {
    e.addContext(describe(call));
    err = std::current_exception();
    poison(Poison::kError, e.what(), true);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    busy_ = false;
  }
  cv_.notify_all();
  if (err) std::rethrow_exception(err);
  return out;
}

std::string Communicator::poisonMessage() const {
  std::lock_guard<std::mutex> lk(mu_);
  return poisonMsg_;
}

std::exception_ptr Communicator::poisonError() const {
  std::string msg = "communicator was aborted by an earlier failure: " + poisonMsg_;
  switch (poisonKind_) {
    case Poison::kTimeout: return std::make_exception_ptr(TimeoutError(msg));
    case Poison::kMismatch: return std::make_exception_ptr(MismatchError(msg));
    default: return std::make_exception_ptr(Error(msg));
  }
}

// Caller holds the busy token (or is the only thread left), so it may use
// the host transport to tell the peers.
void Communicator::poison(Poison kind, const std::string& msg, bool tellPeers) noexcept {
  bool tell = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (poisonKind_ == Poison::kNone) {
      poisonKind_ = kind;
      poisonMsg_ = msg;
    }
    tell = tellPeers && !peersTold_;
    peersTold_ = peersTold_ || tellPeers;
  }
  if (tell && size_ > 1 && hasHostTransport()) {
    Notice n;
    n.kind = noticeKind(static_cast<int>(kind));
    n.setText(msg);
    engines_[0]->transport().sendNotice(n, nullptr, 0);
  }
  for (auto& eng : engines_) eng->abort();
}

void Communicator::abort(const std::string& why) noexcept {
  abandonWhy_ = why;
  abandon_ = true;
  runExclusive([&] { poison(Poison::kError, why, true); });
}

// Runs `body` holding the busy token: no collective runs meanwhile.
void Communicator::runExclusive(const std::function<void()>& body) {
  std::unique_lock<std::mutex> lk(mu_);
  while (busy_) cv_.wait(lk);
  busy_ = true;
  lk.unlock();
  try {
    body();
  } catch (...) {
    lk.lock();
    busy_ = false;
    cv_.notify_all();
    throw;
  }
  lk.lock();
  busy_ = false;
  cv_.notify_all();
}

void Communicator::workerLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  auto idle = std::chrono::microseconds(20);
  for (;;) {
    if (!queue_.empty() && !busy_) {
      Item item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lk.unlock();
      execute(item);
      lk.lock();
      busy_ = false;
      cv_.notify_all();
      idle = std::chrono::microseconds(20);
      continue;
    }
    if (!inFlight_.empty() && !busy_) {
      busy_ = true;
      lk.unlock();
      bool progressed = progressInFlight();
      lk.lock();
      busy_ = false;
      cv_.notify_all();
      // Back off while transfers wait for peers, so an idle rank does not burn a core.
      idle = progressed ? std::chrono::microseconds(20)
                        : std::min<std::chrono::microseconds>(idle * 2, std::chrono::microseconds(1000));
      cv_.wait_for(lk, idle, [&] { return !queue_.empty() || stop_; });
      continue;
    }
    if (stop_ && queue_.empty()) return;
    cv_.wait_for(lk, std::chrono::milliseconds(50));
  }
}

void Communicator::watch(std::shared_ptr<Completion> c, Clock::time_point deadline,
                         std::string what) {
  std::lock_guard<std::mutex> lk(watchMu_);
  if (!watchdog_.joinable() && !watchStop_) watchdog_ = std::thread([this] { watchdogLoop(); });
  // Finished entries are dropped here too, so the list stays short.
  watched_.erase(std::remove_if(watched_.begin(), watched_.end(),
                                [](const Watched& w) { return w.completion->query(); }),
                 watched_.end());
  watched_.push_back(Watched{std::move(c), deadline, std::move(what)});
}

void Communicator::watchdogLoop() {
  std::unique_lock<std::mutex> lk(watchMu_);
  while (!watchStop_) {
    watchCv_.wait_for(lk, std::chrono::milliseconds(20));
    for (size_t i = 0; i < watched_.size();) {
      try {
        if (watched_[i].completion->poll(watched_[i].deadline)) {
          watched_.erase(watched_.begin() + i);
          continue;
        }
        ++i;
      } catch (Error& e) {
        e.addContext(watched_[i].what + " (watchdog)");
        Poison kind = dynamic_cast<TimeoutError*>(&e) ? Poison::kTimeout : Poison::kError;
        std::string msg = e.what();
        watched_.clear();
        lk.unlock();
        // Device engines abort from any thread; the host transport is told
        // by whoever runs next (its waits see abandon_).
        {
          std::lock_guard<std::mutex> g(mu_);
          if (poisonKind_ == Poison::kNone) {
            poisonKind_ = kind;
            poisonMsg_ = msg;
          }
        }
        for (size_t k = 1; k < engines_.size(); ++k) engines_[k]->abort();
        abandonWhy_ = msg;
        abandon_ = true;
        lk.lock();
      } catch (...) {
        watched_.erase(watched_.begin() + i);
      }
    }
  }
}

bool Communicator::finalized() const {
  std::lock_guard<std::mutex> lk(mu_);
  return closing_;
}

void Communicator::finalize() noexcept {
  std::thread worker;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (closing_) {
      // Another thread finalizes: wait until it is done.
      while (!finalized_) cv_.wait_for(lk, std::chrono::milliseconds(10));
      return;
    }
    closing_ = true;
    // In-flight work gets its timeout to finish; then waits give up.
    const auto until = deadlineFromNow();
    while (!(queue_.empty() && inFlight_.empty() && !busy_)) {
      if (!worker_.joinable() && !busy_) break;  // nobody would run the queue
      if (Clock::now() > until) {
        abandonWhy_ = "the communicator was finalized while this call was in flight";
        abandon_ = true;
        break;
      }
      cv_.wait_for(lk, std::chrono::milliseconds(10));
    }
    stop_ = true;
    cv_.notify_all();
    worker = std::move(worker_);
  }
  if (worker.joinable()) worker.join();
  {
    std::lock_guard<std::mutex> lk(watchMu_);
    watchStop_ = true;
  }
  watchCv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::unique_lock<std::mutex> lk(mu_);
  while (busy_) cv_.wait(lk);  // a blocking call on another thread, now abandoning
  for (auto& q : queue_)
    if (q.work) q.work->markFailed(std::make_exception_ptr(Error("communicator was finalized before this call ran")));
  queue_.clear();
  for (auto& f : inFlight_) f.work->markFailed(std::make_exception_ptr(Error("communicator was finalized while this transfer was in flight")));
  inFlight_.clear();
  lk.unlock();
  // Engines go in reverse order of creation: device engines may lean on the host one.
  while (!engines_.empty()) engines_.pop_back();
  lk.lock();
  finalized_ = true;
  cv_.notify_all();
}

}  // namespace rr
