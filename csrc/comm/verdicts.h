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

  void recordRefusal(uint64_t tag);
  static Notice refusalNotice(uint64_t seq, uint64_t tag, const std::string& text);
  // Throws what notice `n` means for this rank; returns when it means
  // nothing (a refusal of a call this rank refused too).
  void raise(const Notice& n) const;

 private:
  mutable std::mutex mu_;
  Kind kind_ = Kind::kNone;
  std::string msg_;
  bool told_ = false;
  std::deque<uint64_t> refused_;  // fingerprints of calls this rank refused
};

}  // namespace rr
