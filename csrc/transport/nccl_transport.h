// Ring exchanges as grouped ncclSend/ncclRecv on a comm stream that runs
// beside the engine's reduction stream. The host only enqueues: start()
// orders the transfer after the reductions already issued (so a receive never
// overwrites a slot still being read), finish() orders later reductions after
// the transfer. Neither blocks the host.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "common/event_pool.h"
#include "transport/transport.h"

namespace rr {

// Shared ownership of one ncclComm_t: the engine, its transport and every
// Completion it handed out may outlive one another.
class NcclComm {
 public:
  NcclComm(ncclComm_t comm, int device, int rank);
  ~NcclComm();  // destroys, or aborts when an error is pending; never throws
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  // The live communicator; throws rr::Error once aborted.
  ncclComm_t get() const;
  // ncclCommAbort once; later calls do nothing. Never throws.
  void abort() noexcept;
  bool aborted() const;
  // ncclSuccess, or the error an asynchronous NCCL operation hit.
  ncclResult_t asyncError() const noexcept;
  int device() const { return device_; }
  int rank() const { return rank_; }

 private:
  mutable std::mutex mu_;
  ncclComm_t comm_;
  const int device_, rank_;
  bool aborted_ = false;
};

class NcclTransport : public Transport {
 public:
  // Both streams belong to comm's device and outlive the transport.
  NcclTransport(std::shared_ptr<NcclComm> comm, int size, cudaStream_t reduceStream,
                cudaStream_t commStream);
  ~NcclTransport() override;
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const override { return comm_->rank(); }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  bool onDevice() const override { return true; }
  // NCCL messages carry no tag: the communicator compares fingerprints over
  // the host transport for calls that use this one.
  bool carriesTags() const override { return false; }

  // One NCCL group of sends and receives on the comm stream, after the
  // reductions issued so far (a receive may land in a slot they still read).
  ExchangeId start(const Xfer* sends, int numSends, const Xfer* recvs, int numRecvs) override;
  // Complete once the exchange's event has passed; never blocks the host.
  bool test(ExchangeId id) override;
  // Orders later reduction-stream work after the exchange (host not blocked).
  void wait(ExchangeId id) override;
  void sendNotice(const Notice&, const int*, int) noexcept override {}
  void abort() noexcept override { comm_->abort(); }

  // Orders everything issued on the comm stream before later work on the
  // reduction stream; the engine calls it once a collective has been issued.
  void join();

 private:
  cudaEvent_t eventOf(ExchangeId id);

  std::shared_ptr<NcclComm> comm_;
  int size_;
  cudaStream_t reduce_, commStream_;
  cudaEvent_t reduceDone_ = nullptr;  // re-recorded by every start()
  ExchangeId nextId_ = 1;
  std::deque<std::pair<ExchangeId, cudaEvent_t>> inFlight_;  // started, not yet waited
  EventPool events_;
};

}  // namespace rr
