// The one interface the ring talks to. A transport moves bytes between ring
// neighbours and knows nothing of element types or reduction.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace rr {

using Clock = std::chrono::steady_clock;

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl", "self", ...
  virtual std::string name() const = 0;
  // True when the buffers it moves live in device memory.
  virtual bool onDevice() const { return false; }

  // Start one ring exchange: send `sendBytes` to rank+1 and receive
  // `recvBytes` from rank-1. Either side may be empty. Exchanges complete in
  // the order they were started, and the two neighbours start matching
  // exchanges in the same order.
  virtual void start(const void* send, size_t sendBytes, void* recv, size_t recvBytes) = 0;

  // Wait for the oldest started exchange. Afterwards its received bytes may
  // be consumed: on the host they are in memory; on a device transport they
  // are ordered before later work on the reduction stream.
  virtual void finish() = 0;

  // Let in-flight transfers move; host transports progress only inside calls.
  virtual void poll() {}

  // A collective must end by this time or raise TimeoutError.
  void setDeadline(Clock::time_point deadline) { deadline_ = deadline; }

  // Cancel everything in flight. Later calls fail. Never throws.
  virtual void abort() noexcept = 0;

 protected:
  Clock::time_point deadline_ = Clock::time_point::max();
};

}  // namespace rr
