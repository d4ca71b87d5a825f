// Point-to-point work: sends and receives (named, or from any source) run
// on the worker, and complete while later calls proceed. A receive from any
// source waits in a list of its own until a message arrives that no
// earlier receive is expecting; then it becomes a receive from that rank.
#include <string>

#include "comm/communicator.h"
#include "common/errors.h"

namespace rr {

void Communicator::executeP2p(const Call& call, Engine& engine, const std::shared_ptr<Work>& work,
                              Clock::time_point deadline) {
  if (call.coll == Coll::kRecv && call.peer == kAnySource) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      anyRecvs_.push_back(AnyRecv{call, work, &engine, deadline});
    }
    resolveAnySources();
    return;
  }
  Transport& t = engine.transport();
  const bool send = call.coll == Coll::kSend;
  if (!send) work->setSource(call.peer);
  Xfer x{call.peer, send ? const_cast<void*>(call.in) : call.out,
         static_cast<size_t>(bytesOf(call, call.count))};
  const Issue issue{call.stream, false, false};
  engine.begin(issue);
  Transport::ExchangeId id = t.start(send ? &x : nullptr, send ? 1 : 0, send ? nullptr : &x, send ? 0 : 1);
  if (engine.device() >= 0) {  // ordered on the device stream
    t.wait(id);
    if (!send) {
      std::lock_guard<std::mutex> lk(mu_);
      --recvOpen_.at(call.peer);
    }
    finishDevice(engine.end(issue), *work, deadline, call);
    return;
  }
  inFlight_.add(t, id, work, deadline, describe(call), send ? -1 : call.peer);
}

bool Communicator::resolveAnySources() {
  bool progressed = false;
  for (;;) {
    AnyRecv a;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (anyRecvs_.empty()) return progressed;
      a = anyRecvs_.front();
    }
    Transport& t = a.engine->transport();
    int found = -1;
    try {
      t.setDeadline(a.deadline);
      for (int i = 0; i < size_ && found < 0; ++i) {
        const int p = (anyNext_ + i) % size_;
        if (p == rank_) continue;
        {
          std::lock_guard<std::mutex> lk(mu_);
          if (recvOpen_[p] > 0) continue;  // its next message is an earlier receive's
        }
        if (t.probe(p)) found = p;
      }
      if (found < 0) {
        if (Clock::now() > a.deadline)
          RR_THROW(TimeoutError, "timed out: no rank sent this rank a message that no other "
                                 "receive was waiting for");
        return progressed;
      }
    } catch (Error& e) {
      e.addContext(describe(a.call));
      failPointToPoint(Verdicts::kindOf(e), e.what());
      return true;
    }
    anyNext_ = (found + 1) % size_;  // the next look starts past it: no rank starves the others
    {
      std::lock_guard<std::mutex> lk(mu_);
      anyRecvs_.pop_front();
      a.call.peer = found;
      a.call.seq = recvSeq_[found]++;
      ++recvOpen_[found];
    }
    try {
      t.setTag(tagOf(a.call), Channel::kPointToPoint);
      executeP2p(a.call, *a.engine, a.work, a.deadline);
    } catch (Error& e) {
      e.addContext(describe(a.call));
      a.work->markFailed(std::current_exception());
      failPointToPoint(Verdicts::kindOf(e), e.what());
      return true;
    }
    progressed = true;
  }
}

// A point-to-point failure outside a call: the communicator is poisoned, and
// every transfer still waiting (named or from any source) fails with it.
void Communicator::failPointToPoint(Verdicts::Kind kind, const std::string& msg) {
  poison(kind, msg);
  const std::exception_ptr err = verdicts_.error();
  std::deque<AnyRecv> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(anyRecvs_);
  }
  for (auto& a : left) a.work->markFailed(err);
  inFlight_.failAll(err);
}

// Tests every point-to-point exchange once. Caller holds the busy token.
bool Communicator::progressInFlight() {
  InFlightTransfers::Progress p = inFlight_.progress();
  if (!p.recvsDone.empty()) {
    std::lock_guard<std::mutex> lk(mu_);
    for (int q : p.recvsDone) --recvOpen_[q];
  }
  if (p.error) {
    try {
      std::rethrow_exception(p.error);
    } catch (Error& e) {
      failPointToPoint(Verdicts::kindOf(e), e.what());
    }
  }
  // After the receives that ended: a source they held may be free now.
  const bool resolved = resolveAnySources();
  return p.progressed || resolved;
}

}  // namespace rr
