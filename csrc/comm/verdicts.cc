#include "comm/verdicts.h"

#include <algorithm>

#include "common/errors.h"

namespace rr {

Verdicts::Kind Verdicts::kindOf(const std::exception& e) {
  if (dynamic_cast<const TimeoutError*>(&e)) return Kind::kTimeout;
  if (dynamic_cast<const MismatchError*>(&e)) return Kind::kMismatch;
  return Kind::kError;
}

bool Verdicts::poison(Kind kind, const std::string& msg, bool tellPeers) {
  std::lock_guard<std::mutex> lk(mu_);
  if (kind_ == Kind::kNone) {
    kind_ = kind;
    msg_ = msg;
  }
  const bool tell = tellPeers && !told_;
  told_ = told_ || tellPeers;
  return tell;
}

bool Verdicts::poisoned() const {
  std::lock_guard<std::mutex> lk(mu_);
  return kind_ != Kind::kNone;
}

bool Verdicts::peersUntold() const {
  std::lock_guard<std::mutex> lk(mu_);
  return kind_ != Kind::kNone && !told_;
}

std::string Verdicts::message() const {
  std::lock_guard<std::mutex> lk(mu_);
  return msg_;
}

std::exception_ptr Verdicts::error() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::string msg = "communicator was aborted by an earlier failure: " + msg_;
  switch (kind_) {
    case Kind::kTimeout: return std::make_exception_ptr(TimeoutError(msg));
    case Kind::kMismatch: return std::make_exception_ptr(MismatchError(msg));
    default: return std::make_exception_ptr(Error(msg));
  }
}

Notice Verdicts::abortNotice() const {
  std::lock_guard<std::mutex> lk(mu_);
  Notice n;
  n.kind = kind_ == Kind::kTimeout    ? Notice::kAbortTimeout
           : kind_ == Kind::kMismatch ? Notice::kAbortMismatch
                                      : Notice::kAbortError;
  n.setText(msg_);
  return n;
}

void Verdicts::recordRefusal(uint64_t seq, uint64_t tag, bool p2p) {
  std::lock_guard<std::mutex> lk(mu_);
  refused_.push_back(tag);
  if (refused_.size() > 256) refused_.pop_front();
  if (p2p) return;
  current_ = seq;
  started_ = true;
  // Nobody moves data for a call this rank refused, whatever the peers did.
  early_.erase(std::remove_if(early_.begin(), early_.end(),
                              [seq](const Notice& n) { return n.seq <= seq; }),
               early_.end());
}

Notice Verdicts::refusalNotice(uint64_t seq, uint64_t tag, bool p2p, const std::string& text) {
  Notice n;
  n.kind = Notice::kRefused;
  n.seq = seq;
  n.tag = tag;
  n.p2p = p2p ? 1 : 0;
  n.setText(text);
  return n;
}

void Verdicts::raise(const Notice& n) {
  const std::string from = "rank " + std::to_string(n.origin);
  if (n.kind == Notice::kRefused) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      // Every rank refused this call alike: nobody waits for it.
      if (std::find(refused_.begin(), refused_.end(), n.tag) != refused_.end()) return;
      // A collective this rank has not started: judged when it does.
      if (!n.p2p && (!started_ || n.seq > current_)) {
        early_.push_back(n);
        if (early_.size() > 256) early_.pop_front();
        return;
      }
    }
    throw MismatchError(from + " refused a call this rank made: " + n.text);
  }
  const std::string msg = from + " aborted the communicator: " + n.text;
  if (n.kind == Notice::kAbortTimeout) throw TimeoutError(msg);
  if (n.kind == Notice::kAbortMismatch) throw MismatchError(msg);
  throw Error(msg);
}

void Verdicts::startCollective(uint64_t seq) {
  std::unique_lock<std::mutex> lk(mu_);
  current_ = seq;
  started_ = true;
  for (auto it = early_.begin(); it != early_.end();) {
    if (it->seq > seq) {
      ++it;
      continue;
    }
    const Notice n = *it;
    it = early_.erase(it);
    if (n.seq < seq) continue;  // about a call this rank refused (judged then)
    if (std::find(refused_.begin(), refused_.end(), n.tag) != refused_.end()) continue;
    lk.unlock();
    throw MismatchError("rank " + std::to_string(n.origin) +
                        " refused a call this rank made: " + n.text);
  }
}

}  // namespace rr
