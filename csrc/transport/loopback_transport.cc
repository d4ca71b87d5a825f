#include "transport/loopback_transport.h"

#include <cstring>

#include "common/errors.h"
#include "common/fingerprint.h"

namespace rr {
namespace {
constexpr auto kHookPeriod = std::chrono::milliseconds(5);
}

LoopbackWorld::LoopbackWorld(int size) : size_(size) {
  RR_CHECK_ARG(size >= 1, "a loopback world needs >= 1 rank, got " + std::to_string(size));
  boxes_.assign(size, std::vector<std::deque<Message>>(size * kNumChannels));
  posted_.assign(size, std::vector<std::deque<std::shared_ptr<PendingRecv>>>(size * kNumChannels));
  notices_.assign(size, {});
  severed_.assign(size, false);
}

void LoopbackWorld::sever(int rank) {
  std::lock_guard<std::mutex> lk(mu_);
  RR_CHECK_ARG(rank >= 0 && rank < size_, "no rank " + std::to_string(rank));
  severed_[rank] = true;
  cv_.notify_all();
}

void LoopbackWorld::match(int dst, int key) {
  auto& msgs = boxes_[dst][key];
  auto& recvs = posted_[dst][key];
  while (!msgs.empty() && !recvs.empty()) {
    Message& m = msgs.front();
    PendingRecv& r = *recvs.front();
    r.gotTag = m.tag;
    r.gotBytes = m.bytes.size();
    if (m.tag != r.expectTag) r.state = 2;
    else if (m.bytes.size() != r.bytes) r.state = 3;
    else {
      if (r.bytes) std::memcpy(r.data, m.bytes.data(), r.bytes);
      r.state = 1;
    }
    msgs.pop_front();
    recvs.pop_front();
  }
}

LoopbackTransport::LoopbackTransport(std::shared_ptr<LoopbackWorld> world, int rank)
    : world_(std::move(world)), rank_(rank) {
  RR_CHECK_ARG(rank >= 0 && rank < world_->size(),
               "rank " + std::to_string(rank) + " is outside the loopback world of " +
                   std::to_string(world_->size()));
}

LoopbackTransport::~LoopbackTransport() { abort(); }

Transport::ExchangeId LoopbackTransport::start(const Xfer* sends, int numSends, const Xfer* recvs,
                                               int numRecvs) {
  if (aborted_) RR_THROW(Error, "loopback transport was aborted by an earlier failure");
  LoopbackWorld& w = *world_;
  const int ch = static_cast<int>(channel_);
  Exchange x{nextId_++, {}, {}};
  std::lock_guard<std::mutex> lk(w.mu_);
  for (int i = 0; i < numRecvs; ++i) {
    RR_CHECK_ARG(recvs[i].peer >= 0 && recvs[i].peer < w.size_ && recvs[i].peer != rank_,
                 "bad receive peer " + std::to_string(recvs[i].peer));
    auto r = std::make_shared<LoopbackWorld::PendingRecv>();
    r->data = recvs[i].data;
    r->bytes = recvs[i].bytes;
    r->expectTag = tag_;
    const int key = recvs[i].peer * kNumChannels + ch;
    w.posted_[rank_][key].push_back(r);
    x.recvs.push_back(r);
    x.from.push_back(recvs[i].peer);
    w.match(rank_, key);
  }
  for (int i = 0; i < numSends; ++i) {
    const Xfer& s = sends[i];
    RR_CHECK_ARG(s.peer >= 0 && s.peer < w.size_ && s.peer != rank_,
                 "bad send peer " + std::to_string(s.peer));
    if (w.severed_[rank_] || w.severed_[s.peer]) continue;
    const char* p = static_cast<const char*>(s.data);
    const int key = rank_ * kNumChannels + ch;
    w.box(s.peer, key).push_back(LoopbackWorld::Message{tag_, std::vector<char>(p, p + s.bytes)});
    w.match(s.peer, key);
  }
  w.cv_.notify_all();
  live_.push_back(std::move(x));
  return live_.back().id;
}

bool LoopbackTransport::check(const Exchange& x) {
  bool done = true;
  for (size_t i = 0; i < x.recvs.size(); ++i) {
    const auto& r = *x.recvs[i];
    if (r.state == 0) done = false;
    if (r.state == 2)
      RR_THROW(MismatchError, "rank " + std::to_string(x.from[i]) +
                                  " sent a message of another call: " +
                                  fp::difference(r.expectTag, r.gotTag, 64));
    if (r.state == 3)
      RR_THROW(MismatchError, "received " + std::to_string(r.gotBytes) + " bytes from rank " +
                                  std::to_string(x.from[i]) + " where " + std::to_string(r.bytes) +
                                  " were expected: ranks disagree on count or dtype");
  }
  return done;
}

size_t LoopbackTransport::indexOf(ExchangeId id) const {
  for (size_t i = 0; i < live_.size(); ++i)
    if (live_[i].id == id) return i;
  RR_THROW(Error, "unknown exchange id " + std::to_string(id));
}

void LoopbackTransport::takeNotices(std::unique_lock<std::mutex>& lk) {
  auto& q = world_->notices_[rank_];
  while (!q.empty()) {
    Notice n = q.front();
    q.pop_front();
    lk.unlock();
    deliverNotice(n);  // may throw; the lock is not held then
    lk.lock();
  }
}

void LoopbackTransport::deliverArrivedNotices() {
  std::unique_lock<std::mutex> lk(world_->mu_);
  takeNotices(lk);
}

bool LoopbackTransport::test(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "loopback transport was aborted by an earlier failure");
  size_t i = indexOf(id);
  std::unique_lock<std::mutex> lk(world_->mu_);
  if (!check(live_[i])) {
    takeNotices(lk);
    return false;
  }
  live_.erase(live_.begin() + i);
  return true;
}

void LoopbackTransport::wait(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "loopback transport was aborted by an earlier failure");
  size_t i = indexOf(id);
  std::unique_lock<std::mutex> lk(world_->mu_);
  takeNotices(lk);
  while (!check(live_[i])) {
    world_->cv_.wait_for(lk, kHookPeriod);
    takeNotices(lk);
    if (Clock::now() > deadline_) {
      std::string who;
      for (size_t k = 0; k < live_[i].recvs.size(); ++k)
        if (live_[i].recvs[k]->state == 0)
          who += (who.empty() ? "rank " : ", rank ") + std::to_string(live_[i].from[k]) +
                 " never sent its " + std::to_string(live_[i].recvs[k]->bytes) + " bytes";
      RR_THROW(TimeoutError, "timed out: " + who);
    }
    lk.unlock();
    waitHook();
    lk.lock();
  }
  live_.erase(live_.begin() + i);
}

bool LoopbackTransport::probe(int peer) {
  if (aborted_) RR_THROW(Error, "loopback transport was aborted by an earlier failure");
  LoopbackWorld& w = *world_;
  std::lock_guard<std::mutex> lk(w.mu_);
  // A message stays in the box only while no receive is posted for it (match()).
  return !w.box(rank_, peer * kNumChannels + static_cast<int>(Channel::kPointToPoint)).empty();
}

void LoopbackTransport::sendNotice(const Notice& notice, const int* peers, int numPeers) noexcept {
  try {
    std::lock_guard<std::mutex> lk(world_->mu_);
    if (world_->severed_[rank_]) return;
    Notice n = notice;
    n.origin = rank_;
    for (int p = 0; p < world_->size_; ++p) {
      bool wanted = numPeers == 0;
      for (int i = 0; i < numPeers; ++i) wanted |= peers[i] == p;
      if (wanted && p != rank_ && !world_->severed_[p]) world_->notices_[p].push_back(n);
    }
    world_->cv_.notify_all();
  } catch (...) {
  }
}

void LoopbackTransport::abort() noexcept {
  if (aborted_) return;
  aborted_ = true;
  try {
    std::lock_guard<std::mutex> lk(world_->mu_);
    // Receives this rank will never wait for must not swallow later messages.
    for (auto& perKey : world_->posted_[rank_]) perKey.clear();
  } catch (...) {
  }
  live_.clear();
}

}  // namespace rr
