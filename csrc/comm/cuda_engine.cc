#include "comm/cuda_engine.h"

#include <cstdlib>

#include <cstring>
#include <thread>

#include "common/cuda_check.h"
#include "common/errors.h"
#ifdef RR_HAVE_MPI
#include "transport/mpi_device_transport.h"
#include "transport/mpi_transport.h"
#endif

namespace rr {
namespace {

// The end of one device collective: an event on the reduction stream.
class StreamCompletion : public Completion {
 public:
  StreamCompletion(int device, int rank, cudaEvent_t event, std::shared_ptr<NcclComm> nccl)
      : device_(device), rank_(rank), event_(event), nccl_(std::move(nccl)) {}
  ~StreamCompletion() override {
    int prev = -1;
    cudaGetDevice(&prev);
    cudaSetDevice(device_);
    cudaEventDestroy(event_);  // released by the runtime once the work completes
    if (prev >= 0 && prev != device_) cudaSetDevice(prev);
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
  }
  RR_THROW(ArgumentError, "unknown dtype code " + std::to_string(static_cast<int>(t)));
}

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kProd: return ncclProd;
    case ReduceOp::kMin: return ncclMin;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kAvg: return ncclAvg;
  }
  RR_THROW(ArgumentError, "unknown op code " + std::to_string(static_cast<int>(op)));
}

}  // namespace

const char* mpiDevicePath(bool cudaAware, const char* override) {
  if (override && *override) {
    if (std::strcmp(override, "direct") == 0) return "direct";
    if (std::strcmp(override, "staged") == 0) return "staged";
    RR_THROW(ArgumentError, std::string("RINGREDUCE_MPI_DEVICE_PATH must be 'direct' or "
                                        "'staged', got '") + override + "'");
  }
  return cudaAware ? "direct" : "staged";
}

CudaEngineBase::CudaEngineBase(int device) : device_(device) {
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
    RR_CUDA_CHECK(cudaEventCreateWithFlags(&sideDone_, cudaEventDisableTiming));
  } catch (...) {
    if (reduce_) cudaStreamDestroy(reduce_);
    if (side_) cudaStreamDestroy(side_);
    if (callerReady_) cudaEventDestroy(callerReady_);
    throw;
  }
}

CudaEngineBase::~CudaEngineBase() {
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  cudaStreamSynchronize(side_);
  cudaStreamSynchronize(reduce_);
  cudaEventDestroy(callerReady_);
  cudaEventDestroy(sideDone_);
  cudaStreamDestroy(side_);
  cudaStreamDestroy(reduce_);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
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

NcclEngine::NcclEngine(int device, int rank, int size, const ncclUniqueId& id, double timeoutSec)
    : CudaEngineBase(device) {
  rank_ = rank;
  DeviceGuard g(device_);
  ncclComm_t comm = nullptr;
  RR_NCCL_CHECK(ncclCommInitRank(&comm, size, id, rank));
  comm_ = std::make_shared<NcclComm>(comm, device_, rank);
  transport_ = std::make_unique<NcclTransport>(comm_, size, reduce_, side_);
  reducer_ = std::make_unique<CudaReducer>(device_, reduce_);
  size_ = size;
  // The IPC path is set up collectively here, where every rank is anyway.
  // It disables itself on every rank together when peers cannot map each
  // other's memory (no P2P, several hosts); then the ring serves all sizes.
  const char* algo = std::getenv("RINGREDUCE_ALGO");
  std::string a = algo ? algo : "auto";
  if (a != "auto" && a != "ring" && a != "ipc")
    RR_THROW(ArgumentError, "RINGREDUCE_ALGO must be auto, ring or ipc, got '" + a + "'");
  if (a != "ring" && size > 1)
    ipc_ = std::make_unique<IpcAllreduce>(
        rank, size, device_, kIpcBufferBytes,
        [this](const void* mine, size_t bytes, void* all) { exchangeBytes(mine, bytes, all); },
        // Past the communicator's deadline, so the watchdog (which names the
        // collective and poisons the communicator) acts first.
        timeoutSec + 2.0);
}

void NcclEngine::exchangeBytes(const void* mine, size_t bytes, void* all) {
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

void NcclEngine::abort() noexcept {
  if (ipc_) ipc_->abort();
  comm_->abort();
}

bool NcclEngine::fastAllreduce(const void* in, void* out, int64_t count, DType dtype,
                               ReduceOp op) {
  if (!ipc_ || !ipc_->enabled() || !ipc_->supports(count, dtype, op)) return false;
  DeviceGuard g(device_);
  ipc_->run(in, out, count, dtype, op, reduce_);
  return true;
}

std::string NcclEngine::allreducePath(int64_t count, DType dtype, ReduceOp op) {
  if (!ipc_ || !ipc_->enabled() || !ipc_->supports(count, dtype, op)) return "ring";
  return std::string("ipc-") + ipc_->algorithmFor(count, dtype);
}

void NcclEngine::nativeAllreduce(const void* in, void* out, int64_t count, DType dtype,
                                 ReduceOp op, uintptr_t stream) {
  RR_CHECK_ARG(count >= 0, "count must be >= 0, got " + std::to_string(count));
  if (count == 0) return;
  DeviceGuard g(device_);
  RR_NCCL_CHECK(ncclAllReduce(in, out, static_cast<size_t>(count), ncclType(dtype), ncclOp(op),
                              comm_->get(), reinterpret_cast<cudaStream_t>(stream)));
}

#ifdef RR_HAVE_MPI
MpiDeviceEngine::MpiDeviceEngine(int device, bool staged) : CudaEngineBase(device) {
  if (!staged && !MpiTransport::cudaAware())
    RR_THROW(ArgumentError, "the direct MPI device path needs a CUDA-aware MPI, and this one is "
                            "not; unset RINGREDUCE_MPI_DEVICE_PATH or set it to 'staged'");
  auto host = std::make_unique<MpiTransport>();
  rank_ = host->rank();
  transport_ = std::make_unique<MpiDeviceTransport>(std::move(host), device_, staged, reduce_, side_);
  reducer_ = std::make_unique<CudaReducer>(device_, reduce_);
}

void MpiDeviceEngine::joinSideStream() {
  RR_CUDA_CHECK(cudaEventRecord(sideDone_, side_));
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, sideDone_, 0));
}
#endif

}  // namespace rr
