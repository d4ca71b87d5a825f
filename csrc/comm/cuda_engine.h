// Engines for device memory. Each owns its device ordinal, a reduction
// stream (the communicator's stream: reductions, and everything the caller
// waits on), a second stream for transfers or staging copies, a transport, a
// CudaReducer and a workspace on the reduction stream, and the algorithms it
// offers: the host algorithms over its transport, plus the CUDA-IPC ones
// when every rank's GPU can map every other's memory.
//
//   caller stream --event--> reduction stream: reduce, reduce, ... --event--> Completion
//                              ^  |                ^
//                       wait() |  | start()        | join at end()
//                              |  v                |
//                            comm / copy stream: transfers
//
// Algorithms that run on the caller's stream (the IPC kernels) skip the
// reduction stream: one launch there and a pooled event for the watchdog.
// Either way the engine keeps its calls in submission order: a call that
// starts on another stream than the previous one ended on waits for it.
// Under CUDA-graph capture there are no completions: the reduction stream
// forks from the caller's stream and joins back inside the capture.
//
// Nothing here blocks the host except Completion::synchronize and the
// staged paths' waits for the wire.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/engine.h"
#include "common/dtypes.h"
#include "common/event_pool.h"
#include "ipc/ipc_allreduce.h"
#include "reduce/reduce_cuda.h"
#include "reduce/workspace_cuda.h"
#include "transport/nccl_transport.h"
#include "transport/staged_device_transport.h"

namespace rr {

// Which way device buffers travel over a host transport: "direct"
// (CUDA-aware MPI takes device pointers) or "staged" (pinned host pipeline).
// `setting` is RINGREDUCE_MPI_DEVICE_PATH ("" or "auto": decide by
// cudaAware); anything else is an ArgumentError.
const char* deviceHostPath(bool cudaAware, const std::string& setting);

// Owns the device ordinal, the streams, reducer, workspace and algorithms.
class CudaEngineBase : public Engine {
 public:
  int device() const override { return device_; }
  Reducer& reducer() override { return *reducer_; }
  Workspace& workspace() override { return *workspace_; }
  const std::vector<Algorithm*>& algorithms() override { return offered_; }
  void begin(const Issue& issue) override;
  std::shared_ptr<Completion> end(const Issue& issue) override;
  std::string captureRefusal(const Algorithm& algo) const override;
  void abort() noexcept override;
  void interrupt() noexcept override;

  // Per-rank IPC buffer: holds the one-shot inputs and the two-shot rounds.
  static constexpr size_t kIpcBufferBytes = size_t(128) << 20;

 protected:
  // Derived engines' members (transport) are destroyed before this base's
  // destructor releases the streams they use.
  CudaEngineBase(int device, int rank);
  ~CudaEngineBase() override;
  // Collective: sets up the IPC algorithms over `exchange` (an all-gather of
  // a few bytes per rank). They disable themselves on every rank together
  // when peers cannot map each other's memory.
  void setUpIpc(int size, IpcAllreduce::Exchange exchange, double timeoutSec);
  // Orders the side stream's work before later reduction-stream work.
  virtual void joinSideStream() = 0;
  // What the Completion needs to watch and abort; null without NCCL.
  virtual std::shared_ptr<NcclComm> ncclHandle() const { return nullptr; }
  // Why the transport's algorithms cannot run under graph capture; empty if they can.
  virtual std::string transportCaptureRefusal() const = 0;

  int device_, rank_;
  cudaStream_t reduce_ = nullptr, side_ = nullptr;
  cudaEvent_t callerReady_ = nullptr, joined_ = nullptr;
  std::shared_ptr<EventPool> events_;
  cudaEvent_t lastEnd_ = nullptr;      // the previous call's completion event (from events_)
  cudaStream_t lastStream_ = nullptr;  // where it was recorded: compared, never used
  std::unique_ptr<CudaReducer> reducer_;
  std::unique_ptr<DeviceWorkspace> workspace_;
  std::unique_ptr<IpcAllreduce> ipc_;
  std::vector<std::unique_ptr<Algorithm>> algorithms_;
  std::vector<Algorithm*> offered_;  // algorithms_, as the selector reads them
};

class NcclEngine : public CudaEngineBase {
 public:
  // Collective over all `size` ranks: every rank passes the same id. The
  // IPC setup bytes travel over `exchange` (the host transport), or over
  // NCCL itself when it is null. timeoutSec bounds how long an IPC kernel
  // waits for a peer.
  NcclEngine(int device, int rank, int size, const ncclUniqueId& id, double timeoutSec,
             IpcAllreduce::Exchange exchange);
  // Each grouped send/receive costs NCCL a fixed setup, so device chunks are
  // large: 64 MiB measured best on 2xH200 from 16 MiB to 1 GiB.
  int64_t preferredChunkBytes() const override { return 64 << 20; }
  Transport& transport() override { return *transport_; }

  // ncclAllReduce on `stream` (the caller's), ordered like any kernel there:
  // the benchmark's baseline on the same communicator.
  void nativeAllreduce(const void* in, void* out, int64_t count, DType dtype, ReduceOp op,
                       uintptr_t stream);

 protected:
  void joinSideStream() override { transport_->join(); }
  std::shared_ptr<NcclComm> ncclHandle() const override { return comm_; }
  // NCCL's sends and receives are captured like kernels (after an eager
  // warm-up call has sized the workspace: growing it waits for the stream).
  std::string transportCaptureRefusal() const override { return std::string(); }

 private:
  // All-gather of a few host bytes over NCCL (when there is no host transport).
  void ncclExchange(const void* mine, size_t bytes, void* all);

  std::shared_ptr<NcclComm> comm_;
  std::unique_ptr<NcclTransport> transport_;
  int size_ = 1;
};

// Device buffers over the communicator's host transport (MPI, UCX, or the
// loopback), staged through pinned memory or direct, with the IPC
// algorithms beside it. This is the engine for backend "mpi", and for ranks
// that share one GPU (where NCCL refuses to run).
class HostPathEngine : public CudaEngineBase {
 public:
  // Collective. `host` (the host engine's transport) outlives the engine.
  HostPathEngine(int device, Transport& host, bool staged, double timeoutSec,
                 IpcAllreduce::Exchange exchange);
  // Collective. Over a transport of its own that takes device pointers (UCX
  // with its CUDA transports): the direct path.
  HostPathEngine(int device, std::unique_ptr<Transport> own, double timeoutSec,
                 IpcAllreduce::Exchange exchange);
  Transport& transport() override { return *transport_; }

 protected:
  void joinSideStream() override { transport_->join(); }
  std::string transportCaptureRefusal() const override {
    return "device buffers over " + transport_->name() +
           " wait on the host during the call, which a CUDA graph cannot replay; force "
           "algo='ipc_one_shot', 'ipc_two_shot' or 'gpu_ring' (peer memory), or use backend "
           "'nccl' with one GPU per rank";
  }

 private:
  std::unique_ptr<Transport> own_;  // declared first: destroyed after transport_
  std::unique_ptr<StagedDeviceTransport> transport_;
};

}  // namespace rr
