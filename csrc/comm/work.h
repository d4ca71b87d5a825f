// The handle of one submitted collective.
#pragma once

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>

#include "comm/engine.h"

namespace rr {

class Work {
 public:
  // Blocks until the host part is done, then rethrows its error. For device
  // work it then makes `stream` wait (host not blocked) when stream >= 0 (0 is
  // the legacy default stream), or synchronises the host when stream < 0.
  // Returns false when `timeoutSec` (>= 0) passes first.
  bool wait(double timeoutSec, int64_t stream);
  bool isCompleted();

  void markDone(std::shared_ptr<Completion> completion);
  void markFailed(std::exception_ptr error);
  void setDeadline(Clock::time_point d) { deadline_ = d; }
  // A receive: the rank it came from (-1 until known; a receive from any
  // source learns it when its message is matched).
  int source() const { return source_.load(std::memory_order_acquire); }
  void setSource(int rank) { source_.store(rank, std::memory_order_release); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::shared_ptr<Completion> completion_;
  Clock::time_point deadline_ = Clock::time_point::max();
  std::atomic<int> source_{-1};
};

}  // namespace rr
