#include "comm/cuda_engine.h"

#include <thread>

#include "algo/host_algorithms.h"
#include "algo/ipc_algorithms.h"
#include "common/cuda_check.h"
#include "common/errors.h"

namespace rr {
namespace {

// The end of one device collective: an event on the reduction stream.
class StreamCompletion : public Completion {
 public:
  StreamCompletion(int device, int rank, cudaEvent_t event, std::shared_ptr<NcclComm> nccl)
      : device_(device), rank_(rank), event_(event), nccl_(std::move(nccl)) {}
  ~StreamCompletion() override {
    // Released by the runtime once the recorded work completes.
    DeviceGuard::noThrow(device_, [&] { cudaEventDestroy(event_); });
  }

  bool query() override {
    DeviceGuard g(device_);
    cudaError_t q = cudaEventQuery(event_);
    if (q == cudaErrorNotReady) return false;
    RR_CUDA_CHECK(q);
    return true;
  }

  void streamWait(uintptr_t stream) override {
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
    cudaError_t q = cudaEventQuery(event_);
    if (q == cudaSuccess) return true;
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
  std::string who() const {
    return "rank " + std::to_string(rank_) + " (cuda:" + std::to_string(device_) + ")";
  }
  int device_, rank_;
  cudaEvent_t event_;
  std::shared_ptr<NcclComm> nccl_;
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
  } catch (...) {
    if (reduce_) cudaStreamDestroy(reduce_);
    if (side_) cudaStreamDestroy(side_);
    throw;
  }
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
    cudaStreamDestroy(side_);
    cudaStreamDestroy(reduce_);
  });
}

void CudaEngineBase::setUpIpc(int size, IpcAllreduce::Exchange exchange, double timeoutSec) {
  if (size < 2) return;
  ipc_ = std::make_unique<IpcAllreduce>(
      rank_, size, device_, kIpcBufferBytes, std::move(exchange),
      // Past the communicator's deadline, so the watchdog (which names the
      // collective and poisons the communicator) acts first.
      std::min(timeoutSec, 1e6) + 2.0);
  algorithms_.push_back(std::make_unique<IpcAlgorithm>(*ipc_, IpcTuning::kOneShot, reduce_));
  algorithms_.push_back(std::make_unique<IpcAlgorithm>(*ipc_, IpcTuning::kTwoShot, reduce_));
  offered_.clear();
  for (auto& a : algorithms_) offered_.push_back(a.get());
}

void CudaEngineBase::begin(uintptr_t callerStream) {
  DeviceGuard g(device_);
  // The collective reads what the caller's kernels produce, even those still
  // running: the reduction stream starts after them, the host does not wait.
  RR_CUDA_CHECK(cudaEventRecord(callerReady_, reinterpret_cast<cudaStream_t>(callerStream)));
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, callerReady_, 0));
}

std::shared_ptr<Completion> CudaEngineBase::end() {
  DeviceGuard g(device_);
  joinSideStream();
  cudaEvent_t done;
  RR_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  cudaError_t rc = cudaEventRecord(done, reduce_);
  if (rc != cudaSuccess) {
    cudaEventDestroy(done);
    RR_CUDA_CHECK(rc);
  }
  return std::make_shared<StreamCompletion>(device_, rank_, done, ncclHandle());
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

}  // namespace rr
