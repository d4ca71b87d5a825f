#include "transport/staged_device_transport.h"

#include <algorithm>
#include <thread>

#include "common/cuda_check.h"
#include "common/errors.h"

namespace rr {
namespace {

// Slots are reused across chunks; sized so that default 1 MiB chunks never
// regrow them. A handful covers depth exchanges plus copies still draining.
constexpr size_t kMinSlotBytes = (size_t(2) << 20) + 512;
constexpr size_t kMaxSlots = 8;
constexpr auto kHookPeriod = std::chrono::milliseconds(5);

}  // namespace

StagedDeviceTransport::StagedDeviceTransport(Transport& host, int device, bool staged,
                                             cudaStream_t reduceStream, cudaStream_t copyStream)
    : host_(host),
      device_(device),
      staged_(staged),
      reduce_(reduceStream),
      copy_(copyStream),
      events_(device) {
  DeviceGuard g(device_);
  copyDone_ = events_.take();
}

StagedDeviceTransport::~StagedDeviceTransport() {
  DeviceGuard::noThrow(device_, [&] {
    // Pinned slots may still feed copies: let both streams drain first.
    cudaStreamSynchronize(copy_);
    cudaStreamSynchronize(reduce_);
    for (Slot& s : slots_)
      if (s.host) cudaFreeHost(s.host);
  });
}

int StagedDeviceTransport::acquireSlot(size_t bytes) {
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
    slots_[pick].drained = events_.take();
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

Transport::ExchangeId StagedDeviceTransport::start(const Xfer* sends, int numSends,
                                                   const Xfer* recvs, int numRecvs) {
  if (aborted_) RR_THROW(Error, "device transport was aborted by an earlier failure");
  DeviceGuard g(device_);
  Exchange x;
  x.id = nextId_++;
  x.sends.assign(sends, sends + numSends);
  x.recvs.assign(recvs, recvs + numRecvs);
  x.tag = tag_;
  x.channel = channel_;
  x.ready = events_.take();
  // What was issued on the reduction stream so far produces the bytes to
  // send and still reads the buffers the receives will fill.
  RR_CUDA_CHECK(cudaEventRecord(x.ready, reduce_));
  if (staged_) {
    size_t total = 0;
    for (auto& s : x.sends) total += area(s.bytes);
    for (auto& r : x.recvs) total += area(r.bytes);
    x.slot = acquireSlot(total);
    RR_CUDA_CHECK(cudaStreamWaitEvent(copy_, x.ready, 0));
    char* p = slots_[x.slot].host;
    for (auto& s : x.sends) {
      if (s.bytes) RR_CUDA_CHECK(cudaMemcpyAsync(p, s.data, s.bytes, cudaMemcpyDeviceToHost, copy_));
      p += area(s.bytes);
    }
    RR_CUDA_CHECK(cudaEventRecord(x.ready, copy_));
  }
  pending_.push_back(std::move(x));
  progress();
  return pending_.back().id;
}

void StagedDeviceTransport::progress() {
  host_.setDeadline(deadline_);
  for (Exchange& x : pending_) {
    if (x.posted) continue;
    cudaError_t q = cudaEventQuery(x.ready);
    if (q == cudaErrorNotReady) break;  // messages pair in posting order: post in start order only
    RR_CUDA_CHECK(q);
    std::vector<Xfer> s = x.sends, r = x.recvs;
    if (staged_) {
      char* p = slots_[x.slot].host;
      for (auto& e : s) {
        e.data = p;
        p += area(e.bytes);
      }
      for (auto& e : r) {
        e.data = p;
        p += area(e.bytes);
      }
    }
    host_.setTag(x.tag, x.channel);
    x.hostId = host_.start(s.data(), static_cast<int>(s.size()), r.data(), static_cast<int>(r.size()));
    x.posted = true;
  }
  host_.poll();
}

void StagedDeviceTransport::poll() {
  if (!aborted_ && !pending_.empty()) progress();
}

StagedDeviceTransport::Exchange& StagedDeviceTransport::find(ExchangeId id) {
  for (auto& x : pending_)
    if (x.id == id) return x;
  RR_THROW(Error, "unknown device exchange id " + std::to_string(id));
}

// The host side is through: hand the received bytes to the device.
void StagedDeviceTransport::complete(Exchange& x) {
  events_.give(x.ready);
  if (staged_) {
    Slot& s = slots_[x.slot];
    char* p = s.host;
    for (auto& e : x.sends) p += area(e.bytes);
    for (auto& e : x.recvs) {
      if (e.bytes) RR_CUDA_CHECK(cudaMemcpyAsync(e.data, p, e.bytes, cudaMemcpyHostToDevice, reduce_));
      p += area(e.bytes);
    }
    RR_CUDA_CHECK(cudaEventRecord(s.drained, reduce_));
    s.busy = false;
  }
  const ExchangeId id = x.id;
  pending_.erase(std::find_if(pending_.begin(), pending_.end(),
                              [id](const Exchange& e) { return e.id == id; }));
  // Start the next transfer before the caller goes off to reduce this one.
  progress();
}

bool StagedDeviceTransport::test(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "device transport was aborted by an earlier failure");
  DeviceGuard g(device_);
  progress();
  Exchange& x = find(id);
  if (!x.posted || !host_.test(x.hostId)) return false;
  complete(x);
  return true;
}

void StagedDeviceTransport::wait(ExchangeId id) {
  if (aborted_) RR_THROW(Error, "device transport was aborted by an earlier failure");
  DeviceGuard g(device_);
  auto nextLook = Clock::now() + kHookPeriod;
  for (uint64_t spins = 0; !find(id).posted; ++spins) {
    progress();
    if ((spins & 63) != 63) continue;
    auto now = Clock::now();
    if (now > deadline_)
      RR_THROW(TimeoutError, "timed out on rank " + std::to_string(rank()) + " (cuda:" +
                                 std::to_string(device_) +
                                 ") waiting for the device to produce the bytes to send");
    if (now > nextLook) {
      waitHook();
      nextLook = now + kHookPeriod;
    }
    std::this_thread::yield();
  }
  // Blocks until both sides are through, with the deadline and the
  // diagnostics of the host transport.
  Exchange& x = find(id);
  host_.wait(x.hostId);
  complete(find(id));
}

void StagedDeviceTransport::join() {
  DeviceGuard g(device_);
  RR_CUDA_CHECK(cudaEventRecord(copyDone_, copy_));
  RR_CUDA_CHECK(cudaStreamWaitEvent(reduce_, copyDone_, 0));
}

void StagedDeviceTransport::abort() noexcept {
  aborted_ = true;
  host_.abort();
  for (Exchange& x : pending_)
    if (x.slot >= 0) slots_[x.slot].busy = false;
  pending_.clear();
}

}  // namespace rr
