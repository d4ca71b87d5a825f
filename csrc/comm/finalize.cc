// Finalizing a communicator: in-flight work gets its timeout to finish, then
// waits give up; queued work fails with a clear error; engines go last.
#include <chrono>
#include <thread>

#include "comm/communicator.h"
#include "common/errors.h"

namespace rr {

bool Communicator::finalized() const {
  std::lock_guard<std::mutex> lk(mu_);
  return closing_;
}

void Communicator::finalize() noexcept {
  std::thread worker;
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (closing_) {
      // Another thread finalizes: wait until it is done.
      while (!finalized_) cv_.wait_for(lk, std::chrono::milliseconds(10));
      return;
    }
    closing_ = true;
    // In-flight work gets its timeout to finish; then waits give up.
    const auto until = deadlineFromNow();
    while (!(queue_.empty() && inFlight_.empty() && anyRecvs_.empty() && !busy_)) {
      if (!worker_.joinable() && !busy_) break;  // nobody would run the queue
      if (Clock::now() > until) {
        abandonWhy_ = "the communicator was finalized while this call was in flight";
        abandon_ = true;
        break;
      }
      cv_.wait_for(lk, std::chrono::milliseconds(10));
    }
    stop_ = true;
    cv_.notify_all();
    worker = std::move(worker_);
  }
  if (worker.joinable()) worker.join();
  watchdog_.stop();
  std::unique_lock<std::mutex> lk(mu_);
  while (busy_) cv_.wait(lk);  // a blocking call on another thread, now abandoning
  for (auto& q : queue_)
    if (q.work)
      q.work->markFailed(std::make_exception_ptr(Error("communicator was finalized before this call ran")));
  queue_.clear();
  const auto gone = std::make_exception_ptr(
      Error("communicator was finalized while this transfer was in flight"));
  for (auto& a : anyRecvs_) a.work->markFailed(gone);
  anyRecvs_.clear();
  inFlight_.failAll(gone);
  lk.unlock();
  engines_.clear();
  lk.lock();
  finalized_ = true;
  cv_.notify_all();
}

}  // namespace rr
