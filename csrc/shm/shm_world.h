// Host shared memory for the ranks of one machine: one POSIX segment that
// every rank maps, cut into one slot per rank. A slot holds that rank's
// published counters (how far its rounds have got), the fingerprint of each
// round, the call it is in (the board), and two parities of an input area and
// a result area. The host shared-memory algorithms (algo/shm.h) move data
// through it; the communicator publishes every collective on the board, so a
// rank waiting anywhere (here or in a transport) sees a peer that runs
// another call under the same sequence number and raises CollectiveMismatch.
//
// Made once per communicator (attach(), collective), and only when every rank
// can map the segment rank 0 made: ranks on other machines, or in containers
// that do not share /dev/shm, fail to open it, and then no rank uses it.
//
// Ordering: a rank writes its round's bytes, then stores its counter with
// release; readers load the counter with acquire, then read the bytes.
// std::atomic<uint64_t> is lock-free and address-free on the hosts we build
// for, so it works across processes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "transport/transport.h"

namespace rr {

class ShmWorld {
 public:
  // What a rank publishes, per round.
  enum Counter { kArrived = 0, kReduced = 1 };
  // One round moves at most roundBytes() per rank. The segment is
  // size * (4 * roundBytes + a few lines).
  //
  // Collective over `exchange` (an all-gather of a few bytes per rank, in
  // rank order): rank 0 makes the segment (with rounds of a quarter or a
  // sixteenth of `roundBytes` when /dev/shm cannot hold it), the others map
  // it. Null, with *why set the same on every rank, when some rank could not.
  using Exchange = std::function<std::vector<std::string>(const std::string&)>;
  static std::shared_ptr<ShmWorld> attach(int rank, int size, int64_t roundBytes,
                                          const Exchange& exchange, std::string* why);
  ~ShmWorld();
  ShmWorld(const ShmWorld&) = delete;
  ShmWorld& operator=(const ShmWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int64_t roundBytes() const { return roundBytes_; }

  // Areas of rank q for a round (parity = round & 1): what it put in, and
  // the slice it reduced.
  char* input(int q, uint64_t round) const;
  char* result(int q, uint64_t round) const;

  // This rank's next round number (rounds count from 1, every rank alike).
  uint64_t nextRound() { return ++round_; }
  // Publish this rank's `which` counter for `round` (after its bytes), with
  // the round's fingerprint when it is kArrived.
  void publish(Counter which, uint64_t round, uint64_t fingerprint);
  // Until every rank published `which` >= round, checking each peer's
  // fingerprint for the round when it is kArrived. Between looks: the
  // transport's notices, the board, the deadline and the wait hook (run
  // through `t`). TimeoutError at the deadline, MismatchError when a peer's
  // fingerprint differs.
  void waitAll(Counter which, uint64_t round, uint64_t fingerprint, Transport& t, const char* what);

  // This rank gave up (it timed out, was interrupted, aborted; `kind` is
  // its abort notice's): a peer that meets its part of a round of the call
  // it gave up in (or a later one) raises instead of finishing with it, with
  // the notice's error once it arrives. Earlier calls' rounds stay good.
  void abandon(int32_t kind) noexcept;

  // The board: this rank is in collective `seq` with fingerprint `tag`,
  // after collectives whose fingerprints hash to `history` (a rooted call
  // whose ranks disagreed on the root can end with no rank seeing a wrong
  // message; the history tells at the next meeting here).
  void enterCall(uint64_t seq, uint64_t tag, uint64_t history);
  // MismatchError when a peer is in the same collective number as this rank
  // but with another fingerprint or history. Cheap; called every few
  // milliseconds, and to name the difference when a round's tag differs
  // (a round carries fingerprint and history mixed, so it costs nothing).
  void checkBoard() const;

 private:
  struct Slot;
  ShmWorld(int rank, int size, int64_t roundBytes, void* base, size_t bytes);
  Slot& slot(int q) const;
  void checkPeer(int q) const;
  uint64_t roundTag(uint64_t fingerprint) const;  // what a round carries
  [[noreturn]] void peerGaveUp(int q, uint64_t round, Transport& t) const;

  int rank_, size_;
  int64_t roundBytes_;
  void* base_;
  size_t bytes_;
  size_t slotStride_;
  uint64_t round_ = 0;
  uint64_t callFirstRound_ = 0;  // the first round of the call entered last
  uint64_t mySeq_ = 0, myTag_ = 0, myHistory_ = 0;  // what this rank last put on the board
  bool inCall_ = false;
};

}  // namespace rr
