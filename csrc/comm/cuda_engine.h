// Engines for device memory. Each owns its device ordinal, a reduction
// stream (the communicator's stream: reductions, and everything the caller
// waits on), a second stream for transfers or staging copies, a transport
// and a CudaReducer on the reduction stream.
//
//   caller stream --event--> reduction stream: reduce, reduce, ... --event--> Completion
//                              ^  |                ^
//                     finish() |  | start()        | join at end()
//                              |  v                |
//                            comm / copy stream: transfers
//
// Nothing here blocks the host except Completion::synchronize and the MPI
// paths' waits for the wire.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "comm/engine.h"
#include "common/dtypes.h"
#include "ipc/ipc_allreduce.h"
#include "reduce/reduce_cuda.h"
#include "transport/nccl_transport.h"

namespace rr {

// Which way device buffers travel over MPI: "direct" (CUDA-aware MPI takes
// device pointers) or "staged" (pinned host pipeline). `override` is the
// value of RINGREDUCE_MPI_DEVICE_PATH (null or empty: none); any value other
// than direct or staged is an ArgumentError.
const char* mpiDevicePath(bool cudaAware, const char* override);

// Owns the device ordinal and the two streams; the base of both engines.
class CudaEngineBase : public Engine {
 public:
  int device() const override { return device_; }
  cudaStream_t reductionStream() const { return reduce_; }
  void begin(uintptr_t callerStream) override;
  std::shared_ptr<Completion> end() override;

 protected:
  // Derived engines' members (transport, reducer) are destroyed before this
  // base's destructor releases the streams they use.
  explicit CudaEngineBase(int device);
  ~CudaEngineBase() override;
  // Orders the side stream's work before later reduction-stream work.
  virtual void joinSideStream() = 0;
  // What the Completion needs to watch and abort; null for MPI engines.
  virtual std::shared_ptr<NcclComm> ncclHandle() const { return nullptr; }
  int device_, rank_ = 0;
  cudaStream_t reduce_ = nullptr, side_ = nullptr;
  cudaEvent_t callerReady_ = nullptr, sideDone_ = nullptr;
};

class NcclEngine : public CudaEngineBase {
 public:
  // Collective over all `size` ranks: every rank passes the same id.
  // timeoutSec bounds how long an IPC kernel waits for a peer.
  NcclEngine(int device, int rank, int size, const ncclUniqueId& id, double timeoutSec);
  // Each grouped send/receive costs NCCL a fixed setup, so device chunks are
  // large: 64 MiB measured best on 2xH200 from 16 MiB to 1 GiB.
  int64_t preferredChunkBytes() const override { return 64 << 20; }
  Transport& transport() override { return *transport_; }
  Reducer& reducer() override { return *reducer_; }
  // Per-rank IPC buffer: holds the one-shot inputs and the two-shot rounds.
  static constexpr size_t kIpcBufferBytes = size_t(128) << 20;

  void abort() noexcept override;
  bool fastAllreduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op) override;
  std::string allreducePath(int64_t count, DType dtype, ReduceOp op) override;

  // The communicator, for callers that run NCCL's own collectives on it
  // (the benchmark baseline; later, a size-dependent fast path).
  ncclComm_t ncclComm() const { return comm_->get(); }
  // ncclAllReduce on `stream` (the caller's), ordered like any kernel there.
  void nativeAllreduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
                       uintptr_t stream);

 protected:
  void joinSideStream() override { transport_->join(); }
  std::shared_ptr<NcclComm> ncclHandle() const override { return comm_; }

 private:
  // All-gather of a few host bytes over NCCL, for setting up the IPC path.
  void exchangeBytes(const void* mine, size_t bytes, void* all);

  std::shared_ptr<NcclComm> comm_;
  std::unique_ptr<NcclTransport> transport_;
  std::unique_ptr<CudaReducer> reducer_;
  // Single-host fast path (CUDA IPC over NVLink); null when RINGREDUCE_ALGO=ring.
  std::unique_ptr<IpcAllreduce> ipc_;
  int size_ = 1;
};

#ifdef RR_HAVE_MPI
// Device buffers over MPI, direct or staged (see mpi_device_transport.h).
// Collective: duplicates MPI_COMM_WORLD.
class MpiDeviceEngine : public CudaEngineBase {
 public:
  MpiDeviceEngine(int device, bool staged);

  Transport& transport() override { return *transport_; }
  Reducer& reducer() override { return *reducer_; }

 protected:
  // Staging copies on the side stream always precede a host-side wait that
  // the reduction stream's later work follows; joining keeps end() uniform.
  void joinSideStream() override;

 private:
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<CudaReducer> reducer_;
};
#endif

}  // namespace rr
