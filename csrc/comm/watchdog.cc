#include "comm/watchdog.h"

#include <algorithm>

namespace rr {

void Watchdog::watch(std::shared_ptr<Completion> c, Clock::time_point deadline, std::string what) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stop_) return;
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  // Finished entries are dropped here too, so the list stays short.
  watched_.erase(std::remove_if(watched_.begin(), watched_.end(),
                                [](const Watched& w) { return w.completion->query(); }),
                 watched_.end());
  watched_.push_back(Watched{std::move(c), deadline, std::move(what)});
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
        e.addContext(watched_[i].what + " (watchdog)");
        const bool timeout = dynamic_cast<TimeoutError*>(&e) != nullptr;
        const std::string msg = e.what();
        watched_.clear();
        lk.unlock();
        onFailure_(timeout, msg);
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
