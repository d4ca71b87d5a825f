#ifdef RR_HAVE_MPI
#include "transport/mpi_device_transport.h"

#include <algorithm>
#include <thread>

#include "common/cuda_check.h"
#include "common/errors.h"
#include "transport/mpi_transport.h"

namespace rr {
namespace {

// Slots are reused across chunks; sized so that default 1 MiB chunks never
// regrow them. A handful covers depth exchanges plus copies still draining.
constexpr size_t kMinSlotBytes = (size_t(2) << 20) + 512;
constexpr size_t kMaxSlots = 8;

}  // namespace

MpiDeviceTransport::MpiDeviceTransport(std::unique_ptr<MpiTransport> host, int device,
                                       bool staged, cudaStream_t reduceStream,
                                       cudaStream_t copyStream)
    : host_(std::move(host)), device_(device), staged_(staged), reduce_(reduceStream),
      copy_(copyStream) {}

MpiDeviceTransport::~MpiDeviceTransport() {
  if (!pending_.empty()) abort();
  int prev = -1;
  cudaGetDevice(&prev);
  cudaSetDevice(device_);
  // Pinned slots may still feed copies: let both streams drain first.
  cudaStreamSynchronize(copy_);
  cudaStreamSynchronize(reduce_);
  for (Slot& s : slots_) {
    if (s.host) cudaFreeHost(s.host);
    if (s.drained) cudaEventDestroy(s.drained);
  }
  for (cudaEvent_t e : allEvents_) cudaEventDestroy(e);
  if (prev >= 0 && prev != device_) cudaSetDevice(prev);
}

int MpiDeviceTransport::rank() const { return host_->rank(); }
int MpiDeviceTransport::size() const { return host_->size(); }

cudaEvent_t MpiDeviceTransport::takeEvent() {
  if (!spareEvents_.empty()) {
    cudaEvent_t e = spareEvents_.back();
    spareEvents_.pop_back();
    return e;
  }
  cudaEvent_t e;
  RR_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  allEvents_.push_back(e);
  return e;
}

int MpiDeviceTransport::acquireSlot(size_t bytes) {
  auto drained = [](const Slot& s) {
    cudaError_t q = cudaEventQuery(s.drained);
    if (q == cudaErrorNotReady) return false;
    RR_CUDA_CHECK(q);
    return true;
  };
  for (size_t i = 0; i < slots_.size(); ++i)
    if (!slots_[i].busy && slots_[i].bytes >= bytes && drained(slots_[i])) {
      slots_[i].busy = true;
      return static_cast<int>(i);
    }
  int pick = -1;
  if (slots_.size() >= kMaxSlots) {
    // Every slot is busy or still draining: wait for the first idle one
    // rather than pinning ever more memory.
    for (size_t i = 0; i < slots_.size() && pick < 0; ++i)
      if (!slots_[i].busy) pick = static_cast<int>(i);
  }
  if (pick < 0) {
    slots_.emplace_back();
    pick = static_cast<int>(slots_.size() - 1);
    RR_CUDA_CHECK(cudaEventCreateWithFlags(&slots_[pick].drained, cudaEventDisableTiming));
  }
  Slot& s = slots_[pick];
  RR_CUDA_CHECK(cudaEventSynchronize(s.drained));
  if (s.bytes < bytes) {
    if (s.host) RR_CUDA_CHECK(cudaFreeHost(s.host));
    s.host = nullptr;
    s.bytes = 0;
    size_t want = std::max(bytes, kMinSlotBytes);
    RR_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.host), want, cudaHostAllocDefault));
    s.bytes = want;
  }
  s.busy = true;
  return pick;
}

void MpiDeviceTransport::start(const void* send, size_t sendBytes, void* recv,
                               size_t recvBytes) {
  if (aborted_) RR_THROW(Error, "MPI device transport was aborted by an earlier failure");
  DeviceGuard g(device_);
  Exchange x{send, sendBytes, recv, recvBytes, takeEvent()};
  // What was issued on the reduction stream so far produces the bytes to
  // send and still reads the slot the receive will fill.
  RR_CUDA_CHECK(cudaEventRecord(x.ready, reduce_));
  if (staged_) {
    x.slot = acquireSlot(sendArea(sendBytes) + recvBytes);
    if (sendBytes > 0) {
      RR_CUDA_CHECK(cudaStreamWaitEvent(copy_, x.ready, 0));
      RR_CUDA_CHECK(cudaMemcpyAsync(slots_[x.slot].host, send, sendBytes, cudaMemcpyDeviceToHost,
                                    copy_));
      RR_CUDA_CHECK(cudaEventRecord(x.ready, copy_));
    }
  }
  pending_.push_back(x);
  progress();
}

void MpiDeviceTransport::progress() {
  host_->setDeadline(deadline_);
  for (Exchange& x : pending_) {
    if (x.posted) continue;
    cudaError_t q = cudaEventQuery(x.ready);
    if (q == cudaErrorNotReady) break;  // MPI matches in order: post in start order only
    RR_CUDA_CHECK(q);
    if (staged_) {
      char* base = slots_[x.slot].host;
      host_->start(base, x.sendBytes, base + sendArea(x.sendBytes), x.recvBytes);
    } else {
      host_->start(x.send, x.sendBytes, x.recv, x.recvBytes);
    }
    x.posted = true;
  }
  host_->poll();
}

void MpiDeviceTransport::poll() {
  if (!aborted_ && !pending_.empty()) progress();
}

void MpiDeviceTransport::finish() {
  if (aborted_) RR_THROW(Error, "MPI device transport was aborted by an earlier failure");
  if (pending_.empty()) RR_THROW(Error, "finish() without a started exchange");
  DeviceGuard g(device_);
  for (uint64_t spins = 0; !pending_.front().posted; ++spins) {
    progress();
    if ((spins & 63) == 63) {
      if (Clock::now() > deadline_)
        RR_THROW(TimeoutError, "timed out on rank " + std::to_string(rank()) + " (cuda:" +
                                   std::to_string(device_) +
                                   ") waiting for the device to produce the bytes to send");
      std::this_thread::yield();
    }
  }
  // Blocks until both sides are through, with the deadline and the
  // diagnostics of the host transport.
  host_->finish();
  Exchange x = pending_.front();
  pending_.pop_front();
  spareEvents_.push_back(x.ready);
  if (staged_) {
    Slot& s = slots_[x.slot];
    if (x.recvBytes > 0)
      RR_CUDA_CHECK(cudaMemcpyAsync(x.recv, s.host + sendArea(x.sendBytes), x.recvBytes,
                                    cudaMemcpyHostToDevice, reduce_));
    RR_CUDA_CHECK(cudaEventRecord(s.drained, reduce_));
    s.busy = false;
  }
  // Start the next transfer before the caller goes off to reduce this one.
  progress();
}

void MpiDeviceTransport::abort() noexcept {
  aborted_ = true;
  host_->abort();
  for (Exchange& x : pending_)
    if (x.slot >= 0) slots_[x.slot].busy = false;
  pending_.clear();
}

}  // namespace rr
#endif  // RR_HAVE_MPI
