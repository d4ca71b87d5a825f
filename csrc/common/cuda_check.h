// Checked CUDA and NCCL calls: a failure throws rr::Error naming the call,
// where it was made, and the library's own explanation.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "common/errors.h"

#define RR_CUDA_CHECK(call)                                                            \
  do {                                                                                 \
    cudaError_t rr_cuda_err_ = (call);                                                 \
    if (rr_cuda_err_ != cudaSuccess)                                                   \
      RR_THROW(::rr::Error, std::string(#call) + " failed at " __FILE__ ":" RR_STRINGIFY( \
                                __LINE__) ": " + cudaGetErrorString(rr_cuda_err_));    \
  } while (0)

#define RR_NCCL_CHECK(call)                                                              \
  do {                                                                                   \
    ncclResult_t rr_nccl_res_ = (call);                                                  \
    if (rr_nccl_res_ != ncclSuccess && rr_nccl_res_ != ncclInProgress) {                 \
      const char* rr_nccl_last_ = ncclGetLastError(nullptr);                             \
      RR_THROW(::rr::Error, std::string(#call) + " failed at " __FILE__ ":" RR_STRINGIFY( \
                                __LINE__) ": " + ncclGetErrorString(rr_nccl_res_) +      \
                                (rr_nccl_last_ && *rr_nccl_last_                         \
                                     ? std::string(" (") + rr_nccl_last_ + ")"           \
                                     : std::string()));                                  \
    }                                                                                    \
  } while (0)

namespace rr {

// Makes `device` current for a scope and restores the caller's device after:
// entry points run on the caller's thread (which torch or CuPy may have
// pointed at another GPU) or on the communicator's worker thread.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    if (prev_ != device) RR_CUDA_CHECK(cudaSetDevice(device));
    else prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  // For destructors and other no-throw paths: runs `body` with `device`
  // current, then restores the caller's device. Never throws.
  template <class F>
  static void noThrow(int device, F&& body) noexcept {
    int prev = -1;
    if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
    if (prev != device) cudaSetDevice(device);
    try {
      body();
    } catch (...) {
    }
    if (prev >= 0 && prev != device) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

}  // namespace rr
