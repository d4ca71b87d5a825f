// What ends a communicator, and what ranks tell each other about it: the
// poisoned state after a failure (every later call raises the same type),
// the notices a rank sends when it aborts or refuses a call, and what a
// received notice means here.
#pragma once

#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>

#include "transport/transport.h"

namespace rr {

class Verdicts {
 public:
  enum class Kind : int { kNone = -1, kError = 0, kTimeout = 1, kMismatch = 2 };
  static Kind kindOf(const std::exception& e);

  // Records the first failure. Returns true when the caller should tell the
  // peers now (the first time telling is asked for).
  bool poison(Kind kind, const std::string& msg, bool tellPeers);
  bool poisoned() const;
  // True when poisoned by someone who could not tell the peers (the
  // watchdog's thread): the next caller should.
  bool peersUntold() const;
  std::string message() const;
  // The error every later call raises.
  std::exception_ptr error() const;
  Notice abortNotice() const;

  // This rank refused call `seq` (fingerprint `tag`); peers' refusals of it
  // mean nothing now.
  void recordRefusal(uint64_t seq, uint64_t tag, bool p2p);
  static Notice refusalNotice(uint64_t seq, uint64_t tag, bool p2p, const std::string& text);
  // Throws what notice `n` means for this rank; returns when it means
  // nothing (a refusal of a call this rank refused too), or not yet: a
  // peer's refusal of a collective this rank has not reached is kept until
  // it does (a fast rank may refuse call k while this one still runs k-1).
  void raise(const Notice& n);
  // This rank starts collective `seq` (fingerprint `tag`): throws
  // MismatchError when a peer refused that call and this rank did not.
  void startCollective(uint64_t seq);

 private:
  mutable std::mutex mu_;
  Kind kind_ = Kind::kNone;
  std::string msg_;
  bool told_ = false;
  std::deque<uint64_t> refused_;  // fingerprints of calls this rank refused
  uint64_t current_ = 0;          // the collective this rank runs (or last ran)
  bool started_ = false;
  std::deque<Notice> early_;      // peers' refusals of later collectives
};

}  // namespace rr
