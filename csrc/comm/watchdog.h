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

#include "algo/call.h"
#include "comm/engine.h"
#include "comm/verdicts.h"

namespace rr {

class Watchdog {
 public:
  // onFailure(kind, message) runs on the watchdog's thread.
  explicit Watchdog(std::function<void(Verdicts::Kind, const std::string&)> onFailure)
      : onFailure_(std::move(onFailure)) {}
  ~Watchdog() { stop(); }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // `call` is described only if the watchdog has to name it: a string per
  // call would cost the latency path more than the watching does.
  void watch(std::shared_ptr<Completion> c, Clock::time_point deadline, const Call& call, int rank);
  void stop() noexcept;  // idempotent

 private:
  void loop();
  struct Watched {
    std::shared_ptr<Completion> completion;
    Clock::time_point deadline;
    Call call;  // without its size lists (only whether it had them)
    int rank;
  };
  std::function<void(Verdicts::Kind, const std::string&)> onFailure_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Watched> watched_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace rr
