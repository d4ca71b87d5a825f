// A world of N ranks inside one process, one thread per rank, as gloo's
// tests do it: the algorithms and the communicator run unchanged over it, so
// every host algorithm is tested for 1..16 ranks without a launcher.
//
// A send copies its bytes into the receiver's mailbox at once (so sends
// complete immediately, like eager messages); receives pair with messages
// from their source and channel in posting order, and check the tag and the
// size exactly as a wire transport does.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "transport/transport.h"

namespace rr {

class LoopbackWorld {
 public:
  explicit LoopbackWorld(int size);
  int size() const { return size_; }

  // Test hook: messages to and from `rank` vanish from now on, as if its
  // process had died (peers then time out, or learn it from a notice).
  void sever(int rank);

 private:
  friend class LoopbackTransport;
  struct Message {
    uint64_t tag;
    std::vector<char> bytes;
  };
  struct PendingRecv {
    void* data;
    size_t bytes;
    uint64_t expectTag;
    int state = 0;  // 0 waiting, 1 done, 2 wrong tag, 3 wrong size
    uint64_t gotTag = 0;
    size_t gotBytes = 0;
  };
  // Pairs queued messages with posted receives; world lock held.
  void match(int dst, int key);
  std::deque<Message>& box(int dst, int key) { return boxes_[dst][key]; }

  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  // [dst][src * kNumChannels + channel]
  std::vector<std::vector<std::deque<Message>>> boxes_;
  std::vector<std::vector<std::deque<std::shared_ptr<PendingRecv>>>> posted_;
  std::vector<std::deque<Notice>> notices_;
  std::vector<bool> severed_;
};

class LoopbackTransport : public Transport {
 public:
  LoopbackTransport(std::shared_ptr<LoopbackWorld> world, int rank);
  ~LoopbackTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return world_->size(); }
  std::string name() const override { return "loopback"; }

  ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) override;
  bool test(ExchangeId id) override;
  void wait(ExchangeId id) override;
  void sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept override;
  void abort() noexcept override;
  bool canProbe() const override { return true; }
  bool probe(int peer) override;

 protected:
  void deliverArrivedNotices() override;

 private:
  struct Exchange {
    ExchangeId id;
    std::vector<std::shared_ptr<LoopbackWorld::PendingRecv>> recvs;
    std::vector<int> from;
  };
  // World lock held by the caller. True when done; throws on a bad receive.
  bool check(const Exchange& x);
  void takeNotices(std::unique_lock<std::mutex>& lk);
  size_t indexOf(ExchangeId id) const;

  std::shared_ptr<LoopbackWorld> world_;
  int rank_;
  bool aborted_ = false;
  ExchangeId nextId_ = 1;
  std::vector<Exchange> live_;
};

}  // namespace rr
