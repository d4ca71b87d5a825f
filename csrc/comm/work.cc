#include "comm/work.h"

#include <chrono>

namespace rr {

bool Work::wait(double timeoutSec, int64_t stream) {
  std::shared_ptr<Completion> completion;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (timeoutSec >= 0) {
      auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(timeoutSec));
      if (!cv_.wait_until(lk, until, [&] { return done_; })) return false;
    } else {
      cv_.wait(lk, [&] { return done_; });
    }
    if (error_) std::rethrow_exception(error_);
    completion = completion_;
  }
  if (completion) {
    if (stream >= 0) completion->streamWait(static_cast<uintptr_t>(stream));
    else completion->synchronize(deadline_);
  }
  return true;
}

bool Work::isCompleted() {
  std::shared_ptr<Completion> completion;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!done_) return false;
    if (error_) return true;
    completion = completion_;
  }
  return !completion || completion->query();
}

void Work::markDone(std::shared_ptr<Completion> completion) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    completion_ = std::move(completion);
    done_ = true;
  }
  cv_.notify_all();
}

void Work::markFailed(std::exception_ptr error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    error_ = error;
    done_ = true;
  }
  cv_.notify_all();
}

}  // namespace rr
