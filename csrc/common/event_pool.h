// Reusable CUDA events (timing disabled) of one device. Creating an event
// costs more than recording one, and device work records a few per call.
// An event may go back to the pool while recorded work is still pending:
// whoever takes it next simply records it again. Thread-safe, because
// completions hand their events back from whichever thread drops them; hold
// it by shared_ptr where they may outlive its owner.
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <vector>

#include "common/cuda_check.h"

namespace rr {

class EventPool {
 public:
  explicit EventPool(int device) : device_(device) {}
  ~EventPool() {
    DeviceGuard::noThrow(device_, [&] {
      for (cudaEvent_t e : all_) cudaEventDestroy(e);
    });
  }
  EventPool(const EventPool&) = delete;
  EventPool& operator=(const EventPool&) = delete;

  // The caller's device must be this pool's (the engines hold a DeviceGuard).
  cudaEvent_t take() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!spare_.empty()) {
        cudaEvent_t e = spare_.back();
        spare_.pop_back();
        return e;
      }
    }
    cudaEvent_t e;
    RR_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    std::lock_guard<std::mutex> lk(mu_);
    all_.push_back(e);
    return e;
  }
  void give(cudaEvent_t e) noexcept {
    std::lock_guard<std::mutex> lk(mu_);
    spare_.push_back(e);
  }
  int device() const { return device_; }

 private:
  int device_;
  std::mutex mu_;
  std::vector<cudaEvent_t> spare_, all_;
};

}  // namespace rr
