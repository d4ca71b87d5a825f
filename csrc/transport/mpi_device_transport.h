// Device memory over MPI. Two paths, chosen by mpiDevicePath():
//  - direct: the MPI library is CUDA-aware and takes device pointers; an
//    exchange is posted once the reductions it depends on have finished.
//  - staged: chunks go through pinned host slots as a pipeline. While chunk
//    k is on the wire, chunk k+1 is copied device->host on the copy stream,
//    and chunk k-1 is copied host->device and reduced on the reduction stream.
// The host-buffer exchange itself is an MpiTransport's.
#pragma once

#include <cuda_runtime.h>

#include <deque>
#include <memory>
#include <vector>

#include "transport/transport.h"

namespace rr {

class MpiTransport;

class MpiDeviceTransport : public Transport {
 public:
  // Streams belong to `device` and outlive the transport; `copyStream` is
  // used by the staged path only.
  MpiDeviceTransport(std::unique_ptr<MpiTransport> host, int device, bool staged,
                     cudaStream_t reduceStream, cudaStream_t copyStream);
  ~MpiDeviceTransport() override;
  MpiDeviceTransport(const MpiDeviceTransport&) = delete;
  MpiDeviceTransport& operator=(const MpiDeviceTransport&) = delete;

  int rank() const override;
  int size() const override;
  std::string name() const override { return staged_ ? "mpi-staged" : "mpi-direct"; }
  bool onDevice() const override { return true; }

  void start(const void* send, size_t sendBytes, void* recv, size_t recvBytes) override;
  void finish() override;
  void poll() override;
  void abort() noexcept override;

 private:
  struct Slot {
    char* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t drained = nullptr;  // the host->device copy out of it has run
    bool busy = false;
  };
  struct Exchange {
    const void* send;
    size_t sendBytes;
    void* recv;
    size_t recvBytes;
    cudaEvent_t ready;  // the bytes to send are final (and staged, on the staged path)
    int slot = -1;
    bool posted = false;
  };
  // Posts, in start order, every exchange whose device side is ready.
  void progress();
  int acquireSlot(size_t bytes);
  cudaEvent_t takeEvent();
  static size_t sendArea(size_t sendBytes) { return (sendBytes + 255) / 256 * 256; }

  std::unique_ptr<MpiTransport> host_;
  int device_;
  bool staged_;
  cudaStream_t reduce_, copy_;
  bool aborted_ = false;
  std::deque<Exchange> pending_;
  std::vector<Slot> slots_;
  std::vector<cudaEvent_t> spareEvents_, allEvents_;
};

}  // namespace rr
