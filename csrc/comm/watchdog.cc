#include "comm/watchdog.h"

#include <algorithm>

#include "comm/identity.h"

namespace rr {

void Watchdog::watch(std::shared_ptr<Completion> c, Clock::time_point deadline, const Call& call,
                     int rank) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stop_) return;
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  // The loop drops finished entries every few milliseconds; a burst of calls
  // drops them here too, without querying every entry on every call.
  if (watched_.size() >= 32)
    watched_.erase(std::remove_if(watched_.begin(), watched_.end(),
                                  [](const Watched& w) { return w.completion->query(); }),
                   watched_.end());
  Call light;
  light.coll = call.coll;
  light.dtype = call.dtype;
  light.op = call.op;
  light.count = call.count;
  light.seq = call.seq;
  light.root = call.root;
  light.peer = call.peer;
  if (!call.counts.empty()) light.counts.assign(1, 0);
  watched_.push_back(Watched{std::move(c), deadline, std::move(light), rank});
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    cv_.wait_for(lk, std::chrono::milliseconds(20));
    for (size_t i = 0; i < watched_.size();) {
      try {
        if (watched_[i].completion->poll(watched_[i].deadline)) {
          watched_.erase(watched_.begin() + i);
          continue;
        }
        ++i;
      } catch (Error& e) {
        e.addContext(describeCall(watched_[i].call, watched_[i].rank) + " (watchdog)");
        const Verdicts::Kind kind = Verdicts::kindOf(e);
        const std::string msg = e.what();
        watched_.clear();
        lk.unlock();
        onFailure_(kind, msg);
        lk.lock();
      } catch (...) {
        watched_.erase(watched_.begin() + i);
      }
    }
  }
}

void Watchdog::stop() noexcept {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace rr
