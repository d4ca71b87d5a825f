// Device work is only enqueued; this thread enforces its deadline. It polls
// the completion events (and NCCL's asynchronous errors) and, on a failure,
// reports it once through `onFailure`, which aborts the engines (an aborted
// NCCL communicator or IPC kernel frees a stuck stream).
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "comm/engine.h"

namespace rr {

class Watchdog {
 public:
  // onFailure(isTimeout, message) runs on the watchdog's thread.
  explicit Watchdog(std::function<void(bool, const std::string&)> onFailure)
      : onFailure_(std::move(onFailure)) {}
  ~Watchdog() { stop(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void watch(std::shared_ptr<Completion> c, Clock::time_point deadline, std::string what);
  void stop() noexcept;  // idempotent

 private:
  void loop();
  struct Watched {
    std::shared_ptr<Completion> completion;
    Clock::time_point deadline;
    std::string what;
  };
  std::function<void(bool, const std::string&)> onFailure_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Watched> watched_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace rr
