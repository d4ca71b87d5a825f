#include "comm/cuda_engine.h"

#include <cstring>
#include <thread>

#include "algo/host_algorithms.h"
#include "algo/ipc_algorithms.h"
#include "common/cuda_check.h"
#include "common/errors.h"

namespace rr {
namespace {

// Event queries are "unsafe" calls that a graph capture in global mode
// (torch's default) prohibits on every thread, and a prohibited call also
// invalidates the capture. Querying an event recorded before the capture is
// harmless, so the query runs in relaxed mode, and the thread's mode is put back.
class RelaxedCapture {
 public:
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

// The end of one device collective: a pooled event where its work ended.
// Kernels that gave up (a peer's fingerprint differed, a peer never came)
// say so in the IPC abort state, which is read once the event has passed.
class StreamCompletion : public Completion {
 public:
  StreamCompletion(int device, int rank, std::shared_ptr<EventPool> pool, cudaEvent_t event,
                   cudaStream_t recordedOn, std::shared_ptr<NcclComm> nccl,
                   std::shared_ptr<IpcAbortState> ipc)
      : device_(device),
        rank_(rank),
        pool_(std::move(pool)),
        event_(event),
        recordedOn_(recordedOn),
        nccl_(std::move(nccl)),
        ipc_(std::move(ipc)) {}
  ~StreamCompletion() override { pool_->give(event_); }

  bool query() override {
    DeviceGuard g(device_);
    RelaxedCapture relaxed;
    cudaError_t q = cudaEventQuery(event_);
    if (q == cudaErrorNotReady) return false;
    RR_CUDA_CHECK(q);
    return true;
  }

  void streamWait(uintptr_t stream) override {
    // A blocking call that ran on the caller's stream is already ordered there.
    if (reinterpret_cast<cudaStream_t>(stream) == recordedOn_) return;
    DeviceGuard g(device_);
    RR_CUDA_CHECK(cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(stream), event_, 0));
  }

  void synchronize(Clock::time_point deadline) override {
    for (uint64_t spins = 0; !poll(deadline); ++spins) {
      // Spin briefly for short collectives, then stop burning a core.
      if (spins < 1000) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  bool poll(Clock::time_point deadline) override {
    DeviceGuard g(device_);
    RelaxedCapture relaxed;
    cudaError_t q = cudaEventQuery(event_);
    if (q == cudaSuccess) {
      checkKernels();
      return true;
    }
    if (q != cudaErrorNotReady) RR_CUDA_CHECK(q);
    // A peer that died or a failed transfer shows up here, not in the
    // event: NCCL kernels would wait for it forever.
    if (nccl_) {
      ncclResult_t err = nccl_->asyncError();
      if (err != ncclSuccess && err != ncclInProgress)
        RR_THROW(Error, who() + ": NCCL reported an asynchronous error (" +
                            ncclGetErrorString(err) + "); the communicator is aborted");
    }
    // The communicator aborts its engines on this error, in an order that
    // frees stuck kernels first (IPC kernels spin on peers; ncclCommAbort
    // may wait for the device), so nothing is aborted from here.
    if (Clock::now() > deadline)
      RR_THROW(TimeoutError, who() + ": device work not finished by the deadline; the "
                                     "communicator is aborted");
    return false;
  }

 private:
  // A mismatch or a kernel's own timeout raises here, on every rank that
  // found it; an abort by the host is the communicator's own doing and
  // surfaces as its poisoned state instead.
  void checkKernels() const {
    if (!ipc_) return;
    const int code = ipc_->code();
    if (code == ipc::kAbortMismatch || code == ipc::kAbortTimeout) ipc_->raiseIfFailed(rank_);
  }
  std::string who() const {
    return "rank " + std::to_string(rank_) + " (cuda:" + std::to_string(device_) + ")";
  }
  int device_, rank_;
  std::shared_ptr<EventPool> pool_;
  cudaEvent_t event_;
  cudaStream_t recordedOn_;
  std::shared_ptr<NcclComm> nccl_;
  std::shared_ptr<IpcAbortState> ipc_;
};

ncclDataType_t ncclType(DType t) {
  switch (t) {
    case DType::kFloat16: return ncclFloat16;
    case DType::kBFloat16: return ncclBfloat16;
    case DType::kFloat32: return ncclFloat32;
    case DType::kFloat64: return ncclFloat64;
    case DType::kInt8: return ncclInt8;
    case DType::kUInt8: return ncclUint8;
    case DType::kInt32: return ncclInt32;
    case DType::kInt64: return ncclInt64;
    case DType::kUInt32: return ncclUint32;
    case DType::kUInt64: return ncclUint64;
    default: break;
  }
  RR_THROW(ArgumentError, std::string("native NCCL has no ") + dtypeName(t));
}

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kProd: return ncclProd;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kAvg: return ncclAvg;
    default: break;
  }
  RR_THROW(ArgumentError, std::string("native NCCL has no op ") + opName(op));
}

}  // namespace

const char* deviceHostPath(bool cudaAware, const std::string& setting) {
  if (setting == "direct") return "direct";
  if (setting == "staged") return "staged";
  if (!setting.empty() && setting != "auto")
    RR_THROW(ArgumentError, "RINGREDUCE_MPI_DEVICE_PATH must be auto, direct or staged, got '" +
                                setting + "'");
  return cudaAware ? "direct" : "staged";
}

CudaEngineBase::CudaEngineBase(int device, int rank) : device_(device), rank_(rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  if (device < 0 || device >= count)
    RR_THROW(ArgumentError, "cuda:" + std::to_string(device) + " does not exist: this process sees " +
                                std::to_string(count) + " GPU(s)");
  DeviceGuard g(device_);
  try {
    // Non-blocking: the legacy default stream must not serialise with ours;
    // ordering with the caller is explicit, through events.
    RR_CUDA_CHECK(cudaStreamCreateWithFlags(&reduce_, cudaStreamNonBlocking));
    RR_CUDA_CHECK(cudaStreamCreateWithFlags(&side_, cudaStreamNonBlocking));
    RR_CUDA_CHECK(cudaEventCreateWithFlags(&callerReady_, cudaEventDisableTiming));
    RR_CUDA_CHECK(cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming));
  } catch (...) {
    if (reduce_) cudaStreamDestroy(reduce_);
    if (side_) cudaStreamDestroy(side_);
    throw;
  }
  events_ = std::make_shared<EventPool>(device_);
  reducer_ = std::make_unique<CudaReducer>(device_, reduce_);
  workspace_ = std::make_unique<DeviceWorkspace>(device_, reduce_);
  algorithms_ = makeHostAlgorithms();
  for (auto& a : algorithms_) offered_.push_back(a.get());
}

CudaEngineBase::~CudaEngineBase() {
  offered_.clear();
  algorithms_.clear();
  ipc_.reset();
  workspace_.reset();
  reducer_.reset();
  DeviceGuard::noThrow(device_, [&] {
    cudaStreamSynchronize(side_);
    cudaStreamSynchronize(reduce_);
    cudaEventDestroy(callerReady_);
    cudaEventDestroy(joined_);
    cudaStreamDestroy(side_);
    cudaStreamDestroy(reduce_);
  });
}

void CudaEngineBase::setUpIpc(int size, IpcAllreduce::Exchange exchange, double timeoutSec) {
  // With one rank the IPC algorithms are a copy on the caller's stream: the
  // cheapest call there is.
  if (size == 1 && !exchange)
    exchange = [](const void* mine, size_t bytes, void* all) { std::memcpy(all, mine, bytes); };
  ipc_ = std::make_unique<IpcAllreduce>(
      rank_, size, device_, kIpcBufferBytes, std::move(exchange),
      // Past the communicator's deadline, so the watchdog (which names the
      // collective and poisons the communicator) acts first.
      std::min(timeoutSec, 1e6) + 2.0);
  algorithms_.push_back(std::make_unique<IpcAlgorithm>(*ipc_, IpcTuning::kOneShot));
  algorithms_.push_back(std::make_unique<IpcAlgorithm>(*ipc_, IpcTuning::kTwoShot));
  algorithms_.push_back(std::make_unique<GpuRingAlgorithm>(*ipc_));
  offered_.clear();
  for (auto& a : algorithms_) offered_.push_back(a.get());
}

void CudaEngineBase::begin(const Issue& is) {
  DeviceGuard g(device_);
  cudaStream_t caller = reinterpret_cast<cudaStream_t>(is.callerStream);
  cudaStream_t start = is.direct ? caller : reduce_;
  // Submission order: after the engine's previous call, wherever it ended.
  // (A captured call is ordered by its graph: its replays must be launched
  // after the calls before them, like any work on a stream.)
  // The previous call's completion event marks its end; the stream it ran
  // on is compared, never used (the caller may have destroyed it since).
  if (!is.capturing && lastEnd_ != nullptr && lastStream_ != start)
    RR_CUDA_CHECK(cudaStreamWaitEvent(start, lastEnd_, 0));
  if (is.direct) return;
  // The collective reads what the caller's kernels produce, even those still
  // running: the reduction stream starts after them, the host does not wait.
  RR_CUDA_CHECK(cudaEventRecord(callerReady_, caller));
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, callerReady_, 0));
}

std::shared_ptr<Completion> CudaEngineBase::end(const Issue& is) {
  DeviceGuard g(device_);
  cudaStream_t caller = reinterpret_cast<cudaStream_t>(is.callerStream);
  if (!is.direct) joinSideStream();
  cudaStream_t endedOn = is.direct ? caller : reduce_;
  if (is.capturing) {
    // Join the forked reduction stream back into the caller's, inside the
    // capture; nothing to watch until the graph is replayed.
    if (!is.direct) {
      RR_CUDA_CHECK(cudaEventRecord(joined_, reduce_));
      RR_CUDA_CHECK(cudaStreamWaitEvent(caller, joined_, 0));
    }
    return nullptr;
  }
  cudaEvent_t done = events_->take();
  cudaError_t rc = cudaEventRecord(done, endedOn);
  if (rc != cudaSuccess) {
    events_->give(done);
    RR_CUDA_CHECK(rc);
  }
  // Only this engine's end() takes from its pool, after the next begin()
  // has used lastEnd_: the event still marks this call's end by then, even
  // if its completion has handed it back.
  lastEnd_ = done;
  lastStream_ = endedOn;
  return std::make_shared<StreamCompletion>(device_, rank_, events_, done, endedOn, ncclHandle(),
                                            ipc_ ? ipc_->abortState() : nullptr);
}

std::string CudaEngineBase::captureRefusal(const Algorithm& algo) const {
  if (algo.runsOnCallerStream()) return std::string();
  const std::string why = transportCaptureRefusal();
  return why.empty() ? why : std::string(algo.name()) + ": " + why;
}

void CudaEngineBase::abort() noexcept {
  interrupt();
  transport().abort();
}

void CudaEngineBase::interrupt() noexcept {
  // IPC kernels spin on peers: free them first.
  if (ipc_) ipc_->abort();
  if (auto nccl = ncclHandle()) nccl->abort();
}

NcclEngine::NcclEngine(int device, int rank, int size, const ncclUniqueId& id, double timeoutSec,
                       IpcAllreduce::Exchange exchange)
    : CudaEngineBase(device, rank), size_(size) {
  DeviceGuard g(device_);
  ncclComm_t comm = nullptr;
  RR_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  comm_ = std::make_shared<NcclComm>(comm, device_, rank);
  transport_ = std::make_unique<NcclTransport>(comm_, size, reduce_, side_);
  if (!exchange)
    exchange = [this](const void* mine, size_t bytes, void* all) { ncclExchange(mine, bytes, all); };
  setUpIpc(size, std::move(exchange), timeoutSec);
}

void NcclEngine::ncclExchange(const void* mine, size_t bytes, void* all) {
  DeviceGuard g(device_);
  char* d = nullptr;
  RR_CUDA_CHECK(cudaMalloc(&d, bytes * (size_ + 1)));
  try {
    RR_CUDA_CHECK(cudaMemcpy(d + bytes * size_, mine, bytes, cudaMemcpyHostToDevice));
    RR_NCCL_CHECK(ncclAllGather(d + bytes * size_, d, bytes, ncclUint8, comm_->get(), reduce_));
    RR_CUDA_CHECK(cudaStreamSynchronize(reduce_));
    RR_CUDA_CHECK(cudaMemcpy(all, d, bytes * size_, cudaMemcpyDeviceToHost));
  } catch (...) {
    cudaFree(d);
    throw;
  }
  RR_CUDA_CHECK(cudaFree(d));
}

void NcclEngine::nativeAllreduce(const void* in, void* out, int64_t count, DType dtype,
                                 ReduceOp op, uintptr_t stream) {
  RR_CHECK_ARG(count >= 0, "count must be >= 0, got " + std::to_string(count));
  if (count == 0) return;
  DeviceGuard g(device_);
  RR_NCCL_CHECK(ncclAllReduce(in, out, static_cast<size_t>(count), ncclType(dtype), ncclOp(op),
                              comm_->get(), reinterpret_cast<cudaStream_t>(stream)));
}

HostPathEngine::HostPathEngine(int device, Transport& host, bool staged, double timeoutSec,
                               IpcAllreduce::Exchange exchange)
    : CudaEngineBase(device, host.rank()) {
  transport_ = std::make_unique<StagedDeviceTransport>(host, device_, staged, reduce_, side_);
  setUpIpc(host.size(), std::move(exchange), timeoutSec);
}

HostPathEngine::HostPathEngine(int device, std::unique_ptr<Transport> own, double timeoutSec,
                               IpcAllreduce::Exchange exchange)
    : CudaEngineBase(device, own->rank()), own_(std::move(own)) {
  transport_ = std::make_unique<StagedDeviceTransport>(*own_, device_, false, reduce_, side_);
  setUpIpc(own_->size(), std::move(exchange), timeoutSec);
}

}  // namespace rr
