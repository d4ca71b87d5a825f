// Device memory over a host transport (MPI, UCX, loopback). Two paths:
//  - direct: the host transport takes device pointers (CUDA-aware MPI); an
//    exchange is posted once the reductions it depends on have finished.
//  - staged: sends are copied device->host into pinned slots on the copy
//    stream and posted once there; received bytes are copied host->device on
//    the reduction stream after the wait. While chunk k is on the wire, chunk
//    k+1 is being staged and chunk k-1 reduced.
// The messages, their tags and the deadline diagnostics are the host
// transport's, which this one borrows (the host engine owns it).
#pragma once

#include <cuda_runtime.h>

#include <deque>
#include <vector>

#include "common/event_pool.h"
#include "transport/transport.h"

namespace rr {

class StagedDeviceTransport : public Transport {
 public:
  // Streams belong to `device` and outlive the transport; `copyStream` is
  // used by the staged path only. `host` outlives it too.
  StagedDeviceTransport(Transport& host, int device, bool staged, cudaStream_t reduceStream,
                        cudaStream_t copyStream);
  ~StagedDeviceTransport() override;
  StagedDeviceTransport(const StagedDeviceTransport&) = delete;
  StagedDeviceTransport& operator=(const StagedDeviceTransport&) = delete;

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  std::string name() const override { return host_.name() + (staged_ ? "-staged" : "-direct"); }
  bool onDevice() const override { return true; }
  int tagBits() const override { return host_.tagBits(); }

  ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) override;
  bool test(ExchangeId id) override;
  void wait(ExchangeId id) override;
  void poll() override;
  void sendNotice(const Notice& n, const int* peers, int numPeers) noexcept override {
    host_.sendNotice(n, peers, numPeers);
  }
  void abort() noexcept override;

  // Orders staging copies before later reduction-stream work.
  void join();

 private:
  struct Slot {
    char* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t drained = nullptr;  // the host->device copies out of it have run
    bool busy = false;
  };
  struct Exchange {
    ExchangeId id = 0;
    std::vector<Xfer> sends, recvs;  // device pointers
    uint64_t tag = 0;
    Channel channel = Channel::kCollective;
    cudaEvent_t ready = nullptr;  // the bytes to send are final (and staged, on the staged path)
    int slot = -1;
    bool posted = false;
    ExchangeId hostId = 0;
  };
  void progress();  // posts, in start order, every exchange whose device side is ready
  void complete(Exchange& x);
  Exchange& find(ExchangeId id);
  int acquireSlot(size_t bytes);
  static size_t area(size_t bytes) { return (bytes + 255) / 256 * 256; }

  Transport& host_;
  int device_;
  bool staged_;
  cudaStream_t reduce_, copy_;
  bool aborted_ = false;
  ExchangeId nextId_ = 1;
  std::deque<Exchange> pending_;
  std::vector<Slot> slots_;
  EventPool events_;  // slots' `drained` too: taken for good, destroyed with the pool
  cudaEvent_t copyDone_ = nullptr;
};

}  // namespace rr
