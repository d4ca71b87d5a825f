#include "transport/nccl_transport.h"

#include "common/cuda_check.h"
#include "common/errors.h"

namespace rr {

NcclComm::NcclComm(ncclComm_t comm, int device, int rank)
    : comm_(comm), device_(device), rank_(rank) {}

NcclComm::~NcclComm() {
  std::lock_guard<std::mutex> lk(mu_);
  if (aborted_ || comm_ == nullptr) return;
  DeviceGuard::noThrow(device_, [&] {
    ncclResult_t err = ncclSuccess;
    ncclCommGetAsyncError(comm_, &err);
    // A communicator with a failed peer may never finish destroying: abort it.
    if (err != ncclSuccess && err != ncclInProgress) ncclCommAbort(comm_);
    else ncclCommDestroy(comm_);
  });
  comm_ = nullptr;
}

ncclComm_t NcclComm::get() const {
  std::lock_guard<std::mutex> lk(mu_);
  if (aborted_)
    RR_THROW(Error, "the NCCL communicator of rank " + std::to_string(rank_) + " on cuda:" +
                        std::to_string(device_) + " was aborted by an earlier failure");
  return comm_;
}

void NcclComm::abort() noexcept {
  std::lock_guard<std::mutex> lk(mu_);
  if (aborted_ || comm_ == nullptr) return;
  aborted_ = true;
  ncclCommAbort(comm_);
  comm_ = nullptr;
}

bool NcclComm::aborted() const {
  std::lock_guard<std::mutex> lk(mu_);
  return aborted_;
}

ncclResult_t NcclComm::asyncError() const noexcept {
  std::lock_guard<std::mutex> lk(mu_);
  if (aborted_ || comm_ == nullptr) return ncclSuccess;
  ncclResult_t err = ncclSuccess;
  ncclResult_t rc = ncclCommGetAsyncError(comm_, &err);
  return rc != ncclSuccess ? rc : err;
}

NcclTransport::NcclTransport(std::shared_ptr<NcclComm> comm, int size, cudaStream_t reduceStream,
                             cudaStream_t commStream)
    : comm_(std::move(comm)),
      size_(size),
      reduce_(reduceStream),
      commStream_(commStream),
      events_(comm_->device()) {
  DeviceGuard g(comm_->device());
  RR_CUDA_CHECK(cudaEventCreateWithFlags(&reduceDone_, cudaEventDisableTiming));
}

NcclTransport::~NcclTransport() {
  // Events may be destroyed while recorded work is pending: the runtime
  // releases them once it completes (the pool's go with it).
  DeviceGuard::noThrow(comm_->device(), [&] {
    if (reduceDone_) cudaEventDestroy(reduceDone_);
  });
}

Transport::ExchangeId NcclTransport::start(const Xfer* sends, int numSends, const Xfer* recvs,
                                           int numRecvs) {
  DeviceGuard g(comm_->device());
  ncclComm_t comm = comm_->get();
  // The sends may read what the last reduction wrote, and the receives may
  // land in slots an issued reduction still reads: wait for both.
  RR_CUDA_CHECK(cudaEventRecord(reduceDone_, reduce_));
  RR_CUDA_CHECK(cudaStreamWaitEvent(commStream_, reduceDone_, 0));
  if (numSends > 0 || numRecvs > 0) {
    RR_NCCL_CHECK(ncclGroupStart());
    try {
      // p2p transfers are byte streams inside NCCL: ncclUint8 loses nothing
      // to a wider type, and counts are size_t, so no splitting is needed.
      for (int i = 0; i < numSends; ++i)
        RR_NCCL_CHECK(ncclSend(sends[i].data, sends[i].bytes, ncclUint8, sends[i].peer, comm, commStream_));
      for (int i = 0; i < numRecvs; ++i)
        RR_NCCL_CHECK(ncclRecv(recvs[i].data, recvs[i].bytes, ncclUint8, recvs[i].peer, comm, commStream_));
    } catch (...) {
      ncclGroupEnd();  // close the group this thread opened before unwinding
      throw;
    }
    RR_NCCL_CHECK(ncclGroupEnd());
  }
  cudaEvent_t done = events_.take();
  RR_CUDA_CHECK(cudaEventRecord(done, commStream_));
  inFlight_.emplace_back(nextId_, done);
  return nextId_++;
}

cudaEvent_t NcclTransport::eventOf(ExchangeId id) {
  for (auto& e : inFlight_)
    if (e.first == id) return e.second;
  RR_THROW(Error, "unknown NCCL exchange id " + std::to_string(id));
}

bool NcclTransport::test(ExchangeId id) {
  DeviceGuard g(comm_->device());
  cudaError_t q = cudaEventQuery(eventOf(id));
  if (q == cudaErrorNotReady) return false;
  RR_CUDA_CHECK(q);
  wait(id);
  return true;
}

void NcclTransport::wait(ExchangeId id) {
  DeviceGuard g(comm_->device());
  cudaEvent_t done = eventOf(id);
  // The wait captures the event's current record, so the event may be
  // recorded again by a later start() right away.
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, done, 0));
  for (auto it = inFlight_.begin(); it != inFlight_.end(); ++it)
    if (it->first == id) {
      inFlight_.erase(it);
      break;
    }
  events_.give(done);
}

void NcclTransport::join() {
  DeviceGuard g(comm_->device());
  cudaEvent_t e = events_.take();
  RR_CUDA_CHECK(cudaEventRecord(e, commStream_));
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, e, 0));
  events_.give(e);
}

}  // namespace rr
