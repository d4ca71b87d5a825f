// UcxTransport's data path: posting exchanges, progress, checking what
// arrived, waiting. Notices and abort are in ucx_control.cc, bootstrap and
// teardown in ucx_setup.cc.
#include "transport/ucx_transport.h"

#include <dlfcn.h>
#include <link.h>

#include <map>
#include <thread>

#include "common/errors.h"
#include "common/fingerprint.h"

namespace rr {
namespace {

// A wait takes the lock for this many progress rounds at a time (about 1 us
// when idle), then checks the clock; it calls the wait hook (Ctrl-C) at most
// every kHookEvery.
constexpr unsigned kRoundsPerStep = 16;
constexpr auto kHookEvery = std::chrono::milliseconds(2);
// Idle time after which a wait also sleeps a little per round (a stopped
// peer costs no CPU then). When it starts to yield is spinsBeforeYield_.
constexpr auto kIdleBeforeSleep = std::chrono::milliseconds(100);
constexpr auto kIdleSleep = std::chrono::microseconds(50);
// How often a stalled wait looks at its local peers' processes.
constexpr auto kLivenessEvery = std::chrono::milliseconds(500);
// cuPointerGetAttribute's codes (cuda.h is not needed to read them).
constexpr int kCuPointerAttributeMemoryType = 2, kCuPointerAttributeIsManaged = 8;
constexpr unsigned kCuMemoryTypeDevice = 2;
using CuPointerGetAttributeFn = int (*)(void*, int, unsigned long long);

int countLoaded(dl_phdr_info* info, size_t, void* out) {
  *static_cast<unsigned long long*>(out) = info->dlpi_adds;
  return 1;  // the counter is global: the first object tells it
}

std::string bytesText(size_t n) { return std::to_string(n) + (n == 1 ? " byte" : " bytes"); }

}  // namespace

// ---- callbacks (inside ucp_worker_progress, so under mu_) ----

void UcxTransport::onSendDone(void* request, ucs_status_t status, void* user) {
  Op* op = static_cast<Op*>(user);
  op->status = status;
  op->done = true;
  op->req = nullptr;
  --op->x->inFlight;
  op->x->dirty = true;
  ucp_request_free(request);
}

void UcxTransport::onRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                              void* user) {
  Op* op = static_cast<Op*>(user);
  if (info) op->info = *info;
  onSendDone(request, status, user);
}

// ---- posting ----

void UcxTransport::checkUsable() const {
  if (aborted_) RR_THROW(Error, "rank " + std::to_string(rank_) + ": UCX transport was aborted");
}

// Host-only UCX would read a device pointer as host memory and crash: refuse
// it while we still can name it. Device pointers exist only once libcuda is
// loaded, so until then a start() costs one look at the loader's counter.
void UcxTransport::probeCuda() {
  unsigned long long adds = 0;
  dl_iterate_phdr(countLoaded, &adds);
  if (adds == loadedObjects_) return;
  loadedObjects_ = adds;
  if (!libcuda_) libcuda_ = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (libcuda_) cuPointerGetAttribute_ = dlsym(libcuda_, "cuPointerGetAttribute");
}

void UcxTransport::checkBuffer(const Xfer& x, const char* what) {
  auto me = [&] { return "rank " + std::to_string(rank_) + " (ucx): "; };  // words only on failure
  RR_CHECK_ARG(x.peer >= 0 && x.peer < size_ && x.peer != rank_,
               me() + what + " peer " + std::to_string(x.peer) + " is not another rank of 0.." +
                   std::to_string(size_ - 1));
  RR_CHECK_ARG(x.data || x.bytes == 0, me() + what + " of " + bytesText(x.bytes) + " with rank " +
                                           std::to_string(x.peer) + " has no buffer");
  if (!cuPointerGetAttribute_ || x.bytes == 0) return;
  auto get = reinterpret_cast<CuPointerGetAttributeFn>(cuPointerGetAttribute_);
  unsigned type = 0;
  int managed = 0;
  auto ptr = reinterpret_cast<unsigned long long>(x.data);
  if (get(&type, kCuPointerAttributeMemoryType, ptr) == 0 && type == kCuMemoryTypeDevice &&
      !(get(&managed, kCuPointerAttributeIsManaged, ptr) == 0 && managed))
    RR_THROW(ArgumentError, me() + what + " of " + bytesText(x.bytes) + " with rank " +
                                std::to_string(x.peer) +
                                " is in device memory, and this UCX has no CUDA transports"
                                " (settings: " + settingsText_ + ")");
}

UcxTransport::Exchange* UcxTransport::newExchange() {
  Exchange* x;
  if (spare_.empty()) {
    pool_.push_back(std::make_unique<Exchange>());
    x = pool_.back().get();
  } else {
    x = spare_.back();
    spare_.pop_back();
    x->ops.clear();
    x->inFlight = 0;
    x->dirty = x->failed = false;
    x->error.clear();
  }
  live_.push_back(x);
  return x;
}

// Under mu_. A peer already known dead completes the op at once with its
// failure, so the exchange reports it instead of waiting.
void UcxTransport::postOp(Exchange& x, Op& op, void* data) {
  Peer& p = peers_[op.peer];
  ensureEp(p);  // a receive needs none, but with one keepalive watches the sender
  if (p.failure != UCS_OK || (!op.isRecv && !p.ep)) {
    op.done = true;
    op.status = p.failure != UCS_OK ? p.failure : UCS_ERR_UNREACHABLE;
    x.dirty = true;
    return;
  }
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.user_data = &op;
  // Zero-byte messages are real messages (they carry the tag); UCX wants an address.
  void* buf = data ? data : &zeroByte_;
  ucs_status_ptr_t r;
  if (op.isRecv) {
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_RECV_INFO;
    param.cb.recv = &UcxTransport::onRecvDone;
    param.recv_info.tag_info = &op.info;
    r = ucp_tag_recv_nbx(worker_, buf, op.bytes, ucxtag::data(op.peer, x.channel, 0),
                         ucxtag::kDataMask, &param);
  } else {
    param.cb.send = &UcxTransport::onSendDone;
    r = ucp_tag_send_nbx(p.ep, buf, op.bytes,
                         ucxtag::data(rank_, x.channel, fp::fold(x.tag, ucxtag::kFingerprintBits)),
                         &param);
  }
  if (UCS_PTR_IS_PTR(r)) {
    op.req = r;
    ++x.inFlight;
  } else {
    op.done = true;  // completed at once (op.info is filled for a receive) or failed at once
    op.status = UCS_PTR_STATUS(r);
    x.dirty = true;
  }
}

Transport::ExchangeId UcxTransport::start(const Xfer* sends, int numSends, const Xfer* recvs,
                                          int numRecvs) {
  std::lock_guard<std::mutex> lock(mu_);
  checkUsable();
  RR_CHECK_ARG(numSends >= 0 && numRecvs >= 0 && (sends || !numSends) && (recvs || !numRecvs),
               "rank " + std::to_string(rank_) + " (ucx): start() with " +
                   std::to_string(numSends) + " sends and " + std::to_string(numRecvs) +
                   " receives");
  if (!cudaSupported_ && !cuPointerGetAttribute_) probeCuda();
  for (int i = 0; i < numRecvs; ++i) checkBuffer(recvs[i], "a receive");
  for (int i = 0; i < numSends; ++i) checkBuffer(sends[i], "a send");
  const ExchangeId id = nextId_;
  if (numSends + numRecvs == 0) {
    ++nextId_;
    return id;  // nothing to wait for: complete already
  }
  Exchange& x = *newExchange();
  ++nextId_;
  x.id = id;
  x.tag = tag_;
  x.channel = channel_;
  x.ops.resize(static_cast<size_t>(numSends + numRecvs));
  // Receives first, so eager data from a fast peer lands in place rather than
  // in UCX's unexpected queue (one copy fewer).
  for (int i = 0; i < numRecvs + numSends; ++i) {
    const Xfer& xf = i < numRecvs ? recvs[i] : sends[i - numRecvs];
    Op& op = x.ops[i];
    op.x = &x;
    op.peer = xf.peer;
    op.bytes = xf.bytes;
    op.isRecv = i < numRecvs;
    postOp(x, op, xf.data);
  }
  return id;
}

// ---- progress and checks ----

// Under mu_. One round of UCX progress, then collect notices (queued for
// delivery outside the lock) and finished notice sends.
unsigned UcxTransport::progressLocked() {
  unsigned events = ucp_worker_progress(worker_);
  for (auto& s : noticeSlots_) {
    if (!s->done) continue;
    if (s->status == UCS_OK && s->info.length == sizeof(Notice)) noticesIn_.push_back(s->buf);
    // Anything else (a truncated stray) is dropped: notices are best effort.
    if (s->status != UCS_ERR_CANCELED && !aborted_) postNoticeSlot(*s);
  }
  while (!noticeSends_.empty() && noticeSends_.front()->done) noticeSends_.pop_front();
  return events;
}

std::string UcxTransport::where(const Exchange& x) const {
  return "in " + fp::describe(x.tag, 64) +
         (x.channel == Channel::kPointToPoint ? " (point-to-point)" : "") + ", exchange " +
         std::to_string(x.id);
}

// Under mu_. Checks the ops that finished since the last look; the first
// problem fails the exchange. A receive's bytes count as data only if the
// sender's fingerprint is ours and the size is what we asked for. Words are
// built only for a failure: this runs after every completion.
void UcxTransport::check(Exchange& x) {
  x.dirty = false;
  const uint64_t mine = fp::fold(x.tag, ucxtag::kFingerprintBits);
  for (Op& op : x.ops) {
    if (x.failed) return;
    if (op.checked) continue;
    const Peer& p = peers_[op.peer];
    if (!op.done) {
      // Receives are posted on the worker, not on an endpoint, and a peer
      // found dead by checkLiveness() has a healthy endpoint: fail those here.
      if (p.failure != UCS_OK) {
        fail(x, op, kPeerFailed);
        if (op.req && op.isRecv) ucp_request_cancel(worker_, op.req);
      }
      continue;
    }
    const bool truncated = op.isRecv && op.status == UCS_ERR_MESSAGE_TRUNCATED;
    if (op.status != UCS_OK && !truncated) fail(x, op, kStatus);
    else if (op.isRecv && (op.info.sender_tag & ucxtag::kFingerprintMask) != mine) fail(x, op, kForeign);
    else if (truncated || (op.isRecv && op.info.length != op.bytes)) fail(x, op, kSize);
    op.checked = true;
  }
}

void UcxTransport::fail(Exchange& x, const Op& op, Problem problem) {
  const Peer& p = peers_[op.peer];
  const std::string me = "rank " + std::to_string(rank_) + " (ucx): ";
  const std::string peer = "rank " + std::to_string(op.peer);
  x.failed = true;
  x.errorKind = problem == kForeign || problem == kSize ? 1 : 0;
  if (problem == kPeerFailed) {
    x.error = me + peer + " failed (" + p.why + ") " +
              (op.isRecv ? "while we waited for its " : "before it took our ") +
              bytesText(op.bytes);
  } else if (problem == kForeign) {
    const uint64_t mine = fp::fold(x.tag, ucxtag::kFingerprintBits);
    const uint64_t theirs = op.info.sender_tag & ucxtag::kFingerprintMask;
    x.error = me + "the message from " + peer + " belongs to another call (" +
              fp::difference(mine, theirs, ucxtag::kFingerprintBits) + "); its bytes were not used";
  } else if (problem == kSize) {
    x.error = me + peer + " sent " +
              (op.status == UCS_ERR_MESSAGE_TRUNCATED ? std::string("more than")
                                                      : std::to_string(op.info.length) + " bytes, not") +
              " the " + bytesText(op.bytes) + " expected: ranks disagree on count or dtype";
  } else {
    std::string why = op.status == UCS_ERR_CANCELED ? "it was cancelled"
                                                    : std::string("UCX: ") + ucs_status_string(op.status);
    if (p.failure != UCS_OK) why += "; " + peer + " failed (" + p.why + ")";
    x.error = me + (op.isRecv ? "receiving " + bytesText(op.bytes) + " from " + peer
                              : "sending " + bytesText(op.bytes) + " to " + peer) +
              " failed (" + why + ")";
  }
  x.error += ", " + where(x);
}

void UcxTransport::throwFailed(const Exchange& x) const {
  if (x.errorKind == 1) throw MismatchError(x.error);
  if (x.errorKind == 2) throw TimeoutError(x.error);
  throw Error(x.error);
}

// Names every peer the exchange still waits on and its bytes, the way the MPI
// transport does ("rank 3 never sent its 4096 bytes").
void UcxTransport::throwTimeout(const Exchange& x) const {
  struct Stuck {
    int recvs = 0, sends = 0;
    size_t recvBytes = 0, sendBytes = 0;
  };
  std::map<int, Stuck> stuck;
  for (const Op& op : x.ops) {
    if (op.done) continue;
    Stuck& s = stuck[op.peer];
    if (op.isRecv) ++s.recvs, s.recvBytes += op.bytes;
    else ++s.sends, s.sendBytes += op.bytes;
  }
  std::string who;
  for (const auto& kv : stuck) {
    const std::string peer = "rank " + std::to_string(kv.first);
    if (kv.second.recvs)
      who += (who.empty() ? "" : "; ") + peer + " never sent its " + bytesText(kv.second.recvBytes);
    if (kv.second.sends)
      who += (who.empty() ? "" : "; ") + peer + " never took our " + bytesText(kv.second.sendBytes);
  }
  throw TimeoutError("rank " + std::to_string(rank_) + " (ucx): timed out " + where(x) + ": " +
                     (who.empty() ? "every message completed at the deadline" : who));
}

// Up to `rounds` rounds of progress and checks of `x` under one hold of the
// lock (a lock per round would cost more than UCX's own tag path for small
// messages; another thread's abort() waits at most those rounds), stopping
// early once `x` finished or a notice came; then notices are delivered
// outside the lock (the handler may throw, abort or send notices itself).
// True once `x` is complete (then it is recycled; its id stays valid, and
// later waits return at once); throws when it failed.
bool UcxTransport::step(Exchange* x, unsigned rounds, unsigned* events) {
  std::vector<Notice> notices;  // empty: no allocation on the common path
  {
    std::lock_guard<std::mutex> lock(mu_);
    checkUsable();
    *events = 0;
    for (unsigned k = 0; k < rounds; ++k) {
      *events += progressLocked();
      if (x && (x->dirty || failedPeers_ > 0)) check(*x);
      if (!noticesIn_.empty() || (x && (x->failed || x->inFlight == 0))) break;
    }
    if (noticesIn_.empty()) return x ? settle(x) : true;
    notices.swap(noticesIn_);
  }
  // Notices first: a peer's reason (it aborted, it refused the call) says
  // more than what we would report for the same exchange.
  for (size_t i = 0; i < notices.size(); ++i) {
    try {
      deliverNotice(notices[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);  // keep the rest for the next call
      noticesIn_.insert(noticesIn_.begin(), notices.begin() + i + 1, notices.end());
      throw;
    }
  }
  if (!x) return true;
  std::lock_guard<std::mutex> lock(mu_);
  return settle(x);
}

// Under mu_: throws if `x` failed; recycles it and returns true if complete
// (every op without a UCX request is done).
bool UcxTransport::settle(Exchange* x) {
  if (x->failed) throwFailed(*x);
  if (x->inFlight > 0) return false;
  for (size_t i = 0; i < live_.size(); ++i)
    if (live_[i] == x) {
      live_[i] = live_.back();
      live_.pop_back();
      break;
    }
  spare_.push_back(x);
  return true;
}

UcxTransport::Exchange* UcxTransport::find(ExchangeId id) {
  std::lock_guard<std::mutex> lock(mu_);
  checkUsable();
  for (size_t i = live_.size(); i-- > 0;)  // the newest first: rings wait what they just started
    if (live_[i]->id == id) return live_[i];
  RR_CHECK_ARG(id > 0 && id < nextId_, "rank " + std::to_string(rank_) + " (ucx): exchange " +
                                           std::to_string(id) + " was never started");
  return nullptr;  // complete already
}

bool UcxTransport::test(ExchangeId id) {
  Exchange* x = find(id);
  unsigned events = 0;
  return step(x, 1, &events);
}

void UcxTransport::wait(ExchangeId id) {
  Exchange* x = find(id);
  unsigned events = 0;
  if (!x) {
    step(nullptr, 1, &events);  // still look at notices
    return;
  }
  const auto waitStart = Clock::now();
  auto lastHook = waitStart, lastEvent = waitStart;
  unsigned idle = 0;  // progress rounds without an event
  for (;;) {
    if (step(x, kRoundsPerStep, &events)) return;
    const auto now = Clock::now();
    if (events) {
      idle = 0;
      lastEvent = now;
    } else {
      idle += kRoundsPerStep;
    }
    if (now >= deadline_) {
      std::lock_guard<std::mutex> lock(mu_);
      throwTimeout(*x);
    }
    if (now >= nextLiveness_ && now - waitStart > kLivenessEvery) {
      std::lock_guard<std::mutex> lock(mu_);
      checkLiveness(*x);
      nextLiveness_ = now + kLivenessEvery;
    }
    if (now - lastHook >= kHookEvery) {
      waitHook();
      lastHook = now;
    }
    if (idle > spinsBeforeYield_) {
      if (now - lastEvent > kIdleBeforeSleep) std::this_thread::sleep_for(kIdleSleep);
      else std::this_thread::yield();
    }
  }
}

void UcxTransport::deliverArrivedNotices() {
  unsigned events = 0;
  step(nullptr, 1, &events);
}

bool UcxTransport::probe(int peer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_ || !worker_) RR_THROW(Error, "UCX transport was aborted by an earlier failure");
  progressLocked();
  // An unexpected message: no receive is posted for it (remove = 0 leaves it
  // for the receive that follows).
  ucp_tag_recv_info_t info{};
  return ucp_tag_probe_nb(worker_, ucxtag::data(peer, Channel::kPointToPoint, 0), ucxtag::kDataMask,
                          0, &info) != nullptr;
}

void UcxTransport::poll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!aborted_ && worker_) progressLocked();
}

}  // namespace rr
