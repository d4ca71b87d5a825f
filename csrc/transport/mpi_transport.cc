#include "transport/mpi_transport.h"

#include <algorithm>
#include <random>
#include <thread>

#include "common/errors.h"
#include "common/fingerprint.h"

#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>
#endif

namespace rr {
namespace {

constexpr int kNoticeTag = 7;
// How often a blocked wait looks at the clock, the notices and the wait hook.
constexpr auto kHookPeriod = std::chrono::milliseconds(5);

std::string mpiErrorString(int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, buf, &len);
  return std::string(buf, len);
}

// Duplicates without blocking past the deadline: MPI_Comm_dup would wait
// forever for a rank that never calls it.
MPI_Comm dupBy(MPI_Comm parent, Clock::time_point deadline) {
  MPI_Comm out = MPI_COMM_NULL;
  MPI_Request req;
  int rc = MPI_Comm_idup(parent, &out, &req);
  if (rc != MPI_SUCCESS) RR_THROW(Error, "MPI_Comm_idup failed: " + mpiErrorString(rc));
  for (int flag = 0;;) {
    rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) RR_THROW(Error, "MPI_Comm_idup failed: " + mpiErrorString(rc));
    if (flag) return out;
    if (Clock::now() > deadline)
      RR_THROW(TimeoutError, "creating the MPI communicator timed out: not every rank of the "
                             "launch joined (MPI_Comm_idup did not complete)");
    std::this_thread::yield();
  }
}

}  // namespace

bool MpiTransport::initialize() {
  int inited = 0;
  MPI_Initialized(&inited);
  if (inited) return false;
  int provided = 0;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) RR_THROW(Error, "MPI_Init_thread failed: " + mpiErrorString(rc));
  if (provided < MPI_THREAD_SERIALIZED)
    RR_THROW(Error, "MPI provides thread level " + std::to_string(provided) +
                        "; ringreduce needs MPI_THREAD_SERIALIZED or better");
  return true;
}

void MpiTransport::finalize() {
  int inited = 0, fin = 0;
  MPI_Initialized(&inited);
  MPI_Finalized(&fin);
  if (inited && !fin) MPI_Finalize();
}

bool MpiTransport::cudaAware() {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

MpiTransport::MpiTransport(MPI_Comm parent, Clock::time_point deadline) {
  for (auto& c : comms_) c = dupBy(parent, deadline);
  noticeComm_ = dupBy(parent, deadline);
  for (MPI_Comm c : {comms_[0], comms_[1], noticeComm_})
    // Errors come back as codes, so a dead peer becomes an exception, not an abort.
    MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comms_[0], &rank_);
  MPI_Comm_size(comms_[0], &size_);
  void* ub = nullptr;
  int found = 0;
  MPI_Comm_get_attr(comms_[0], MPI_TAG_UB, &ub, &found);
  int64_t tagUb = found ? *static_cast<int*>(ub) : 32767;
  tagBits_ = 0;
  while (tagBits_ < 62 && (int64_t(2) << tagBits_) - 1 <= tagUb) ++tagBits_;
  // A number for this communicator, the same on every rank (rank 0 draws
  // it): notices carry it, and one for an earlier communicator is dropped.
  std::random_device rd;
  worldId_ = static_cast<int32_t>(rd() & 0x7fffffff) | 1;
  MPI_Request req;
  check(MPI_Ibcast(&worldId_, 1, MPI_INT, 0, comms_[0], &req), "MPI_Ibcast(world id)");
  for (int flag = 0;;) {
    check(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), "MPI_Test(world id)");
    if (flag) break;
    if (Clock::now() > deadline)
      RR_THROW(TimeoutError, "creating the MPI communicator timed out: not every rank agreed on "
                             "its number");
    std::this_thread::yield();
  }
  check(MPI_Irecv(&inbox_, sizeof(Notice), MPI_BYTE, MPI_ANY_SOURCE, kNoticeTag, noticeComm_,
                  &inboxReq_),
        "MPI_Irecv(notice)");
}

MpiTransport::~MpiTransport() {
  failed_ = aborted_ || !live_.empty();
  abort();
  for (auto& n : outbox_)
    if (n.second != MPI_REQUEST_NULL) MPI_Request_free(&n.second);
  int fin = 0;
  MPI_Finalized(&fin);
  // After a failure the communicators are left to MPI_Finalize: freeing one
  // with messages of a dead peer pending could block.
  if (fin || failed_) return;
  for (MPI_Comm* c : {&comms_[0], &comms_[1], &noticeComm_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

void MpiTransport::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  RR_THROW(Error, std::string(call) + " failed on rank " + std::to_string(rank_) + ": " +
                      mpiErrorString(rc));
}

Transport::ExchangeId MpiTransport::start(const Xfer* sends, int numSends, const Xfer* recvs,
                                          int numRecvs) {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  MPI_Comm comm = comms_[static_cast<int>(channel_)];
  // Recycled exchanges keep their vectors' capacity: no allocation per call.
  Exchange x;
  if (!spare_.empty()) {
    x = std::move(spare_.back());
    spare_.pop_back();
    x.requests.clear();
    x.expected.clear();
    x.from.clear();
    x.into.clear();
    x.matched.clear();
    x.to.clear();
  }
  x.id = nextId_++;
  x.comm = comm;
  x.wireTag = static_cast<int>(fp::fold(tag_, tagBits_));
  auto pieces = [](size_t bytes) { return bytes == 0 ? size_t(1) : (bytes + kMaxMessageBytes - 1) / kMaxMessageBytes; };
  // Receive pieces wait for their messages (matchReceives); sends go now.
  for (int i = 0; i < numRecvs; ++i) {
    const Xfer& v = recvs[i];
    for (size_t p = 0, np = pieces(v.bytes); p < np; ++p) {
      size_t off = p * kMaxMessageBytes, n = std::min(kMaxMessageBytes, v.bytes - off);
      x.requests.push_back(MPI_REQUEST_NULL);
      x.expected.push_back(n);
      x.from.push_back(v.peer);
      x.into.push_back(static_cast<char*>(v.data) + off);
      x.matched.push_back(0);
    }
  }
  x.numRecvs = x.requests.size();
  x.unmatched = x.numRecvs;
  for (int i = 0; i < numSends; ++i) {
    const Xfer& s = sends[i];
    for (size_t p = 0, np = pieces(s.bytes); p < np; ++p) {
      size_t off = p * kMaxMessageBytes, n = std::min(kMaxMessageBytes, s.bytes - off);
      MPI_Request req;
      check(MPI_Isend(static_cast<const char*>(s.data) + off, static_cast<int>(n), MPI_BYTE,
                      s.peer, x.wireTag, comm, &req),
            "MPI_Isend");
      x.requests.push_back(req);
      x.to.push_back(s.peer);
    }
  }
  x.done = x.requests.empty();
  live_.push_back(std::move(x));
  return live_.back().id;
}

MpiTransport::Exchange* MpiTransport::find(ExchangeId id) {
  for (auto& x : live_)
    if (x.id == id) return &x;
  return nullptr;
}

// By id, not by pointer arithmetic: a deque is not contiguous, and
// exchanges are waited out of order (point-to-point, windows of pulls).
void MpiTransport::forget(ExchangeId id) {
  for (auto it = live_.begin(); it != live_.end(); ++it)
    if (it->id == id) {
      if (spare_.size() < 8) spare_.push_back(std::move(*it));
      live_.erase(it);
      return;
    }
}

void MpiTransport::matchReceives() {
  // In the order the exchanges started, and per peer in the order of its
  // pieces: MPI keeps one sender's messages in order, so the first message
  // waiting from a peer belongs to its earliest receive still unmatched.
  blocked_.assign(static_cast<size_t>(kNumChannels) * size_, 0);
  for (auto& x : live_) {
    if (x.unmatched == 0) continue;
    const int ch = x.comm == comms_[0] ? 0 : 1;
    for (size_t i = 0; i < x.numRecvs; ++i) {
      if (x.matched[i]) continue;
      uint8_t& b = blocked_[static_cast<size_t>(ch) * size_ + x.from[i]];
      if (b) continue;
      int flag = 0;
      MPI_Message msg;
      MPI_Status st;
      check(MPI_Improbe(x.from[i], MPI_ANY_TAG, x.comm, &flag, &msg, &st), "MPI_Improbe");
      if (!flag) {
        b = 1;
        continue;
      }
      int got = 0;
      MPI_Get_count(&st, MPI_BYTE, &got);
      // The message stays unreceived on a mismatch: the call fails before
      // any byte of it lands anywhere.
      if (st.MPI_TAG != x.wireTag)
        RR_THROW(MismatchError, "rank " + std::to_string(x.from[i]) +
                                    " sent a message of another call: " +
                                    fp::difference(static_cast<uint64_t>(x.wireTag),
                                                   static_cast<uint64_t>(st.MPI_TAG), tagBits_));
      if (static_cast<size_t>(got) != x.expected[i])
        RR_THROW(MismatchError, "rank " + std::to_string(x.from[i]) + " sent " +
                                    std::to_string(got) + " bytes where " +
                                    std::to_string(x.expected[i]) +
                                    " were expected: ranks disagree on count or dtype");
      check(MPI_Imrecv(x.into[i], got, MPI_BYTE, &msg, &x.requests[i]), "MPI_Imrecv");
      x.matched[i] = 1;
      --x.unmatched;
    }
  }
}

bool MpiTransport::testOne(Exchange& x) {
  if (x.done) return true;
  matchReceives();
  // Receives not yet posted are null requests, which Testall counts as
  // complete: test only once every one is posted.
  if (x.unmatched > 0) return false;
  int flag = 0;
  if (statuses_.size() < x.requests.size()) statuses_.resize(x.requests.size());
  std::vector<MPI_Status>& st = statuses_;
  int rc = MPI_Testall(static_cast<int>(x.requests.size()), x.requests.data(), &flag, st.data());
  if (rc != MPI_SUCCESS) {
    for (size_t i = 0; i < x.requests.size() && rc == MPI_ERR_IN_STATUS; ++i)
      if (st[i].MPI_ERROR != MPI_SUCCESS && st[i].MPI_ERROR != MPI_ERR_PENDING) rc = st[i].MPI_ERROR;
    RR_THROW(Error, "MPI_Testall failed on rank " + std::to_string(rank_) + ": " +
                        mpiErrorString(rc));
  }
  if (!flag) return false;
  // Tags and sizes were checked when the messages were probed
  // (matchReceives): a receive can neither be truncated nor take another
  // call's message.
  x.done = true;
  return true;
}

bool MpiTransport::test(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  Exchange* x = find(id);
  if (!x) RR_THROW(Error, "test() of an unknown exchange");
  if (!testOne(*x)) {
    checkNotices();
    return false;
  }
  forget(id);
  return true;
}

void MpiTransport::checkNotices() {
  if (inboxReq_ == MPI_REQUEST_NULL) return;
  int flag = 0;
  MPI_Status st;
  if (MPI_Test(&inboxReq_, &flag, &st) != MPI_SUCCESS || !flag) return;
  Notice n = inbox_;
  n.text[sizeof(n.text) - 1] = '\0';
  MPI_Irecv(&inbox_, sizeof(Notice), MPI_BYTE, MPI_ANY_SOURCE, kNoticeTag, noticeComm_,
            &inboxReq_);
  if (n.world != worldId_) return;  // sent to a freed communicator whose context this one reuses
  deliverNotice(n);
}

void MpiTransport::timedOut(const Exchange& x) {
  // Name the stuck side without completing anything.
  std::string who;
  for (size_t i = 0; i < x.requests.size(); ++i) {
    int flag = 1;
    MPI_Status s;
    if (i < x.numRecvs && !x.matched[i]) flag = 0;
    else if (x.requests[i] != MPI_REQUEST_NULL) MPI_Request_get_status(x.requests[i], &flag, &s);
    if (flag) continue;
    who += who.empty() ? "" : ", ";
    who += i < x.numRecvs ? "rank " + std::to_string(x.from[i]) + " never sent its " +
                                std::to_string(x.expected[i]) + " bytes"
                          : "rank " + std::to_string(x.to[i - x.numRecvs]) + " never took ours";
  }
  RR_THROW(TimeoutError, "timed out: " + (who.empty() ? std::string("no progress") : who));
}

void MpiTransport::wait(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  Exchange* x = find(id);
  if (!x) RR_THROW(Error, "wait() on an unknown exchange");
  checkNotices();
  auto nextLook = Clock::now() + kHookPeriod;
  for (uint64_t spins = 0; !testOne(*x); ++spins) {
    // MPI progresses only inside calls, so spin. Past a short spin, yield on
    // every turn: with more ranks than cores the peer we wait for may need
    // this very core (it costs nothing when the core has nothing else to run).
    if (spins > 32) std::this_thread::yield();
    if ((spins & 63) != 63) continue;
    checkNotices();
    auto now = Clock::now();
    if (now > deadline_) timedOut(*x);
    if (now > nextLook) {
      waitHook();
      nextLook = now + kHookPeriod;
    }
  }
  forget(id);
}

void MpiTransport::poll() {
  if (aborted_) return;
  for (auto& x : live_)
    if (!x.done) {
      testOne(x);
      return;
    }
}

bool MpiTransport::probe(int peer) {
  if (aborted_) RR_THROW(Error, "MPI transport was aborted by an earlier failure");
  checkNotices();
  // Receives are posted only once their message is probed (matchReceives),
  // so a message MPI still holds has no receive posted for it.
  int flag = 0;
  check(MPI_Iprobe(peer, MPI_ANY_TAG, comms_[static_cast<int>(Channel::kPointToPoint)], &flag,
                   MPI_STATUS_IGNORE),
        "MPI_Iprobe");
  return flag != 0;
}

void MpiTransport::sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept {
  if (noticeComm_ == MPI_COMM_NULL) return;
  // Finished sends are reaped here, so the outbox stays short.
  while (!outbox_.empty()) {
    int flag = 0;
    if (MPI_Test(&outbox_.front().second, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || !flag) break;
    outbox_.pop_front();
  }
  std::vector<int> all;
  if (numPeers == 0) {
    for (int p = 0; p < size_; ++p)
      if (p != rank_) all.push_back(p);
    peers = all.data();
    numPeers = static_cast<int>(all.size());
  }
  for (int i = 0; i < numPeers; ++i) {
    if (peers[i] == rank_) continue;
    outbox_.emplace_back(notice, MPI_REQUEST_NULL);
    auto& slot = outbox_.back();
    slot.first.origin = rank_;
    slot.first.world = worldId_;
    if (MPI_Isend(&slot.first, sizeof(Notice), MPI_BYTE, peers[i], kNoticeTag, noticeComm_,
                  &slot.second) != MPI_SUCCESS)
      outbox_.pop_back();
  }
}

void MpiTransport::abort() noexcept {
  aborted_ = true;
  // A cancelled request still has to complete before its buffer may be
  // reused. Receives are posted only for messages already probed, so one
  // that is live has its data on the way: wait a bounded time for those
  // (freeing one lets MPI write into memory freed under it). A send only
  // reads its buffer and may wait for a peer that never comes: one short
  // look, then it is left live (the workspace is then never freed).
  std::vector<MPI_Request> recvs, sends;
  for (auto& x : live_)
    for (size_t i = 0; i < x.requests.size(); ++i)
      if (x.requests[i] != MPI_REQUEST_NULL) {
        MPI_Cancel(&x.requests[i]);
        (i < x.numRecvs ? recvs : sends).push_back(x.requests[i]);
      }
  live_.clear();
  if (inboxReq_ != MPI_REQUEST_NULL) {
    MPI_Cancel(&inboxReq_);
    recvs.push_back(inboxReq_);
    inboxReq_ = MPI_REQUEST_NULL;
  }
  auto settle = [](std::vector<MPI_Request>& pending, int ms) {
    const auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (!pending.empty()) {
      for (size_t i = 0; i < pending.size();) {
        int flag = 0;
        if (MPI_Test(&pending[i], &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag) {
          pending[i] = pending.back();
          pending.pop_back();
        } else {
          ++i;
        }
      }
      if (pending.empty() || Clock::now() >= until) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  };
  settle(recvs, kCancelWaitMs);
  settle(sends, 20);
  // Still live: leave them to MPI (never freed, never reused) and say so.
  stuck_ += recvs.size() + sends.size();
}

}  // namespace rr
