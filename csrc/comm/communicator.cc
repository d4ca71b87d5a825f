#include "comm/communicator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "common/errors.h"
#include "ring/ring_allreduce.h"
#include "ring/schedule.h"

namespace rr {

Communicator::Communicator(int rank, int size, std::unique_ptr<Engine> host, Options options)
    : rank_(rank), size_(size), opt_(options) {
  RR_CHECK_ARG(host != nullptr, "a communicator needs a host engine");
  engines_.push_back(std::move(host));
}

Communicator::~Communicator() { finalize(); }

void Communicator::addEngine(std::unique_ptr<Engine> engine) {
  RR_CHECK_ARG(engine->transport().size() == size_,
               "engine " + engine->transport().name() + " spans " +
                   std::to_string(engine->transport().size()) + " ranks, communicator " +
                   std::to_string(size_));
  engines_.push_back(std::move(engine));
}

std::vector<std::string> Communicator::engineNames() const {
  std::vector<std::string> names;
  for (auto& e : engines_)
    if (e->transport().size() == size_) names.push_back(e->transport().name());
  return names;
}

std::string Communicator::describe(const Call& c, uint64_t seq) const {
  std::string s = "rank " + std::to_string(rank_) + ": " + collName(c.coll) + " #" +
                  std::to_string(seq);
  if (c.coll != Coll::kBarrier)
    s += " (" + std::to_string(c.count) + " x " + dtypeName(c.dtype) +
         (c.coll == Coll::kAllreduce || c.coll == Coll::kReduceScatter
              ? std::string(", ") + opName(c.op)
              : std::string()) +
         (c.coll == Coll::kBroadcast ? ", root " + std::to_string(c.root) : std::string()) + ")";
  return s;
}

std::string Communicator::poisonMessage() const {
  std::lock_guard<std::mutex> lk(mu_);
  return poisonMsg_;
}

std::exception_ptr Communicator::poisonError() const {
  std::string msg = "communicator was aborted by an earlier failure: " + poisonMsg_;
  switch (poisonKind_) {
    case 1: return std::make_exception_ptr(TimeoutError(msg));
    case 2: return std::make_exception_ptr(MismatchError(msg));
    default: return std::make_exception_ptr(Error(msg));
  }
}

void Communicator::poison(const std::exception_ptr& e, int kind, const std::string& msg) {
  (void)e;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (poisonKind_ < 0) {
      poisonKind_ = kind;
      poisonMsg_ = msg;
    }
  }
  for (auto& eng : engines_) eng->abort();
}

Engine& Communicator::engineFor(const Call& call) {
  if (call.device < 0) {
    Engine& host = *engines_[0];
    if (host.transport().size() != size_)
      RR_THROW(ArgumentError, "host buffer given to a communicator that moves device memory "
                              "only (backend " + engines_.back()->transport().name() +
                                  "); pass a CUDA buffer or init(backend='mpi')");
    return host;
  }
  for (size_t i = 1; i < engines_.size(); ++i)
    if (engines_[i]->device() == call.device) return *engines_[i];
  for (size_t i = 1; i < engines_.size(); ++i)
    if (engines_[i]->device() >= 0)
      RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                                  " but this rank's communicator uses cuda:" +
                                  std::to_string(engines_[i]->device()));
  RR_THROW(ArgumentError, "buffer is on cuda:" + std::to_string(call.device) +
                              " but this communicator has no device engine (built without "
                              "CUDA, or init() found no GPU)");
}

std::string Communicator::allreducePath(int device, int64_t count, DType dtype, ReduceOp op) {
  Call c;
  c.device = device;
  return engineFor(c).allreducePath(count, dtype, op);
}

std::shared_ptr<Work> Communicator::submit(Call call, bool async) {
  auto work = std::make_shared<Work>();
  std::unique_lock<std::mutex> lk(mu_);
  if (finalized_) RR_THROW(Error, "communicator is finalized; call ringreduce.init() again");
  // Device work only gets enqueued on streams, which never blocks the host
  // for long, so with nothing queued before it, it is enqueued right here:
  // a DDP hook then pays no thread hand-off per bucket.
  if (async && !(call.device >= 0 && queue_.empty() && !busy_)) {
    if (!worker_.joinable()) worker_ = std::thread([this] { workerLoop(); });
    queue_.push_back(Item{std::move(call), work});
    cv_.notify_all();
    return work;
  }
  // A blocking call runs on the caller's thread, after earlier async work:
  // no hand-off to the worker, so small messages pay no thread wake-up.
  // (Device work lands here too when async: see above.)
  cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
  busy_ = true;
  lk.unlock();
  execute(call, *work);
  lk.lock();
  busy_ = false;
  cv_.notify_all();
  return work;
}

void Communicator::workerLoop() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || (!queue_.empty() && !busy_); });
    if (queue_.empty()) return;  // stop_ and drained
    Item item = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lk.unlock();
    execute(item.call, *item.work);
    lk.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void Communicator::execute(const Call& call, Work& work) {
  uint64_t seq = seq_++;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (poisonKind_ >= 0) {
      work.markFailed(poisonError());
      return;
    }
  }
  bool moving = false;
  try {
    Engine& engine = engineFor(call);
    auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(opt_.timeoutSec));
    for (auto& e : engines_) e->transport().setDeadline(deadline);
    moving = true;
    if ((opt_.check || opt_.nanCheck) && size_ > 1) {
      std::exception_ptr verdict = preflight(call, seq, engine);
      // Every rank reached the same verdict before any data moved, so the
      // communicator stays usable.
      moving = false;
      if (verdict) std::rethrow_exception(verdict);
      moving = true;
    }
    auto completion = runRing(engine, call);
    work.setDeadline(deadline);
    if (completion) watch(completion, deadline, describe(call, seq));
    work.markDone(std::move(completion));
  } catch (Error& e) {
    e.addContext(describe(call, seq));
    auto ep = std::current_exception();
    // Argument errors are found before any exchange and leave peers untouched.
    if (moving) {
      int kind = dynamic_cast<TimeoutError*>(&e) ? 1 : dynamic_cast<MismatchError*>(&e) ? 2 : 0;
      poison(ep, kind, e.what());
    }
    work.markFailed(ep);
  } catch (...) {
    work.markFailed(std::current_exception());
  }
}

std::shared_ptr<Completion> Communicator::runRing(Engine& engine, const Call& call) {
  RingOptions ro;
  if (call.chunkBytes > 0) ro.chunkBytes = call.chunkBytes;
  else if (engine.device() < 0) ro.chunkBytes = opt_.chunkBytes;
  else if (opt_.deviceChunkBytes > 0) ro.chunkBytes = opt_.deviceChunkBytes;
  else if (engine.preferredChunkBytes() > 0) ro.chunkBytes = engine.preferredChunkBytes();
  else ro.chunkBytes = opt_.chunkBytes;
  ro.depth = opt_.depth;
  Ring ring(engine.transport(), engine.reducer(), ro);
  engine.begin(call.stream);
  if (call.coll == Coll::kAllreduce && call.chunkBytes <= 0 &&
      engine.fastAllreduce(call.in, call.out, call.count, call.dtype, call.op))
    return engine.end();
  switch (call.coll) {
    case Coll::kAllreduce:
      if (call.chunkBytes <= 0 &&
          call.count * static_cast<int64_t>(dtypeSize(call.dtype)) <= opt_.smallBytes)
        ring.allreduceSmall(call.in, call.out, call.count, call.dtype, call.op);
      else
        ring.allreduce(call.in, call.out, call.count, call.dtype, call.op);
      break;
    case Coll::kReduceScatter:
      ring.reduceScatter(call.in, call.out, call.count, call.dtype, call.op);
      break;
    case Coll::kAllgather: {
      std::vector<int64_t> bytes;
      for (int64_t c : call.blockCounts) bytes.push_back(c * static_cast<int64_t>(dtypeSize(call.dtype)));
      ring.allgather(call.in, call.out, bytes);
      break;
    }
    case Coll::kBroadcast:
      if (call.in != call.out && rank_ == call.root)
        engine.reducer().copy(call.out, call.in, call.count * dtypeSize(call.dtype));
      ring.broadcast(call.out, call.count * static_cast<int64_t>(dtypeSize(call.dtype)), call.root);
      break;
    case Coll::kBarrier:
      ring.barrier();
      break;
  }
  return engine.end();
}

// Every rank shares a fingerprint of the call it is about to make, and every
// rank compares all of them, so all ranks raise the same error together.
std::exception_ptr Communicator::preflight(const Call& call, uint64_t seq, Engine& engine) {
  enum Field { kSeq, kColl, kOp, kDType, kCount, kRoot, kNonFinite, kNumFields };
  static const char* fieldNames[] = {"sequence number", "collective", "op", "dtype",
                                     "count", "root", "non-finite input"};
  int64_t mine[kNumFields] = {static_cast<int64_t>(seq), static_cast<int64_t>(call.coll),
                              static_cast<int64_t>(call.op), static_cast<int64_t>(call.dtype),
                              call.count, call.root, 0};
  bool reduces = call.coll == Coll::kAllreduce || call.coll == Coll::kReduceScatter;
  if (opt_.nanCheck && reduces && call.count > 0)
    mine[kNonFinite] = engine.reducer().anyNonFinite(call.in, call.count, call.dtype) ? 1 : 0;

  // Fingerprints travel on the host engine: device engines may not move host memory.
  Engine& host = *engines_[0];
  if (host.transport().size() != size_) return nullptr;
  const size_t fpBytes = sizeof(mine);
  std::vector<int64_t> all(kNumFields * size_);
  std::memcpy(all.data() + kNumFields * rank_, mine, fpBytes);
  RingOptions ro;
  ro.chunkBytes = 1 << 20;
  Ring ring(host.transport(), host.reducer(), ro);
  ring.allgather(all.data() + kNumFields * rank_, all.data(),
                 std::vector<int64_t>(size_, static_cast<int64_t>(fpBytes)));

  auto fieldMatters = [&](int f) {
    Coll c = call.coll;
    switch (f) {
      case kOp: return c == Coll::kAllreduce || c == Coll::kReduceScatter;
      case kDType: return c != Coll::kBarrier;
      case kCount: return c != Coll::kBarrier && c != Coll::kAllgather;
      case kRoot: return c == Coll::kBroadcast;
      case kNonFinite: return false;
      default: return true;
    }
  };
  auto fmt = [&](int f, int64_t v) -> std::string {
    if (f == kColl) return collName(static_cast<Coll>(v));
    if (f == kOp) return opName(static_cast<ReduceOp>(v));
    if (f == kDType) return dtypeName(static_cast<DType>(v));
    return std::to_string(v);
  };
  std::string diff;
  for (int f = 0; f < kNonFinite; ++f) {
    // Only compare a field once the ranks agree on which collective it is.
    if (f > kColl && !diff.empty()) break;
    if (!fieldMatters(f)) continue;
    std::map<int64_t, std::vector<int>> groups;
    for (int r = 0; r < size_; ++r) groups[all[r * kNumFields + f]].push_back(r);
    if (groups.size() == 1) continue;
    diff += std::string(diff.empty() ? "" : "; ") + fieldNames[f] + " differs:";
    for (auto& g : groups) {
      diff += " ranks";
      for (int r : g.second) diff += " " + std::to_string(r);
      diff += " have " + fmt(f, g.first) + ";";
    }
  }
  if (!diff.empty())
    return std::make_exception_ptr(MismatchError("ranks disagree before any data moved: " + diff));
  std::string bad;
  for (int r = 0; r < size_; ++r)
    if (all[r * kNumFields + kNonFinite]) bad += (bad.empty() ? "" : ", ") + std::to_string(r);
  if (!bad.empty())
    return std::make_exception_ptr(Error("NaN or Inf in the input of rank(s) " + bad +
                                         " (RINGREDUCE_NAN_CHECK is on); nothing was reduced"));
  return nullptr;
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
        int kind = dynamic_cast<TimeoutError*>(&e) ? 1 : 0;
        std::string msg = e.what();
        watched_.clear();
        lk.unlock();
        poison(std::current_exception(), kind, msg);
        lk.lock();
      } catch (...) {
        watched_.erase(watched_.begin() + i);
      }
    }
  }
}

void Communicator::finalize() noexcept {
  {
    std::lock_guard<std::mutex> lk(watchMu_);
    watchStop_ = true;
  }
  watchCv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  std::thread worker;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (finalized_) return;
    finalized_ = true;
    stop_ = true;
    cv_.notify_all();
    worker = std::move(worker_);
  }
  if (worker.joinable()) worker.join();
  // Engines go in reverse order of creation: device engines may lean on the host one.
  while (!engines_.empty()) engines_.pop_back();
}

}  // namespace rr
